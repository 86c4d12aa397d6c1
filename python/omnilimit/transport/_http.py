"""The transports of ``omnilimit.transport.httpx2`` and ``.httpx``, written once for both HTTP
packages (the two have the same transport interface): each module binds these classes to its
package (``_package``).

For each request: its tokens are estimated (``transport.estimate``, or ``estimate(request)``), the
limiter is acquired (``LimiterTimeout`` when it refuses, raised so that the SDK neither wraps nor
retries it: ``transport.refusal``), the response's status and headers are fed to it
(``on_response``), and when the response is over (read, closed, or abandoned) the reservation is
settled by the provider's rule (``transport.settle``) and a slot is freed (``passage.Passage``).
"""

from __future__ import annotations

import asyncio
import functools
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, ClassVar

from omnilimit import _async
from omnilimit._async import DEFAULT_TIMEOUT as DEFAULT
from omnilimit.errors import LimiterClosed, LimiterTimeout
from omnilimit.transport.estimate import estimate_tokens
from omnilimit.transport.passage import Passage, limiter_of
from omnilimit.transport.reading import UsageReader
from omnilimit.transport.refusal import through_sdk
from omnilimit.transport.settle import RULES, SettleRule, provider_rule, rule_named

Estimate = Callable[[Any], int]
OTHER = {"httpx2": "httpx", "httpx": "httpx2"}


class _Limiting:
    """What both transports are given, checked once: the limiter, the transport they wrap, the
    estimate, the settle rule, acquire()'s timeout; and the passage of each request."""

    _package: ClassVar[Any]  # the HTTP package: httpx2 or httpx
    _kind: ClassVar[str]  # the package's transport class it wraps
    _default: ClassVar[str]  # the one it wraps when given none
    _stream: ClassVar[str]  # the package's request stream class it can send

    def __init__(
        self,
        limiter: object,
        transport: object = None,
        *,
        estimate: Estimate | None = None,
        settle: str | SettleRule | None = None,
        timeout: float | object | None = DEFAULT,
    ) -> None:
        self._limiter = limiter_of(limiter)
        package = self._package
        kind = getattr(package, self._kind)
        if transport is None:
            transport = getattr(package, self._default)()
        elif not isinstance(transport, kind):
            raise TypeError(
                f"transport must be an {package.__name__}.{self._kind}, got {type(transport).__module__}."
                f"{type(transport).__qualname__} (for the {OTHER[package.__name__]} package, use "
                f"omnilimit.transport.{OTHER[package.__name__]})"
            )
        self._transport: Any = transport
        if timeout is not DEFAULT:
            _async.deadline(timeout)  # checks it now: ValueError for a bad one
        self._timeout = timeout
        self._estimate = estimate
        self._settle = None if settle is None else rule_named(settle)

    def _passage(self, request: Any) -> Passage:
        package = self._package
        if not isinstance(getattr(request, "stream", None), getattr(package, self._stream)):
            raise TypeError(
                f"omnilimit's {package.__name__} transport got a request it cannot send: the client is not an "
                f"{package.__name__} client (an {OTHER[package.__name__]} client needs "
                f"omnilimit.transport.{OTHER[package.__name__]})"
            )
        rule = self._settle or RULES[provider_rule(request.url.host, request.url.path, request.headers)]
        return Passage(self._limiter, self._tokens(request), rule, self._timeout)

    def _tokens(self, request: Any) -> int:
        if self._estimate is not None:
            tokens = self._estimate(request)
            if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
                raise ValueError(f"estimate(request) must return a whole number of tokens >= 0, got {tokens!r}")
            return tokens
        if "json" not in request.headers.get("content-type", ""):
            return 0
        try:
            body = request.content  # the SDKs' JSON bodies are in memory
        except self._package.RequestNotRead:  # a streamed upload: not read here, no tokens reserved for it
            return 0
        return estimate_tokens(body)

    def _watched(self, response: Any, passage: Passage, sync: bool) -> Any:
        """The response handed to the SDK: the same, its stream watched (``_streams``)."""
        watched, async_watched = _streams(self._package)
        stream_class = watched if sync else async_watched
        return self._package.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=stream_class(response.stream, passage, UsageReader(response.headers)),
            extensions=response.extensions,
        )


class SyncLimiting(_Limiting):
    """``LimitedTransport``: for a sync client (``OpenAI``, ``Anthropic``)."""

    _kind = "BaseTransport"
    _default = "HTTPTransport"
    _stream = "SyncByteStream"

    def handle_request(self, request: Any) -> Any:
        passage = self._passage(request)
        try:
            passage.take()
        except (LimiterTimeout, LimiterClosed) as refusal:
            raise through_sdk(refusal, request.headers) from None
        try:
            response = self._transport.handle_request(request)
        except BaseException:
            passage.end(None)
            raise
        passage.heard(response.status_code, response.headers)
        return self._watched(response, passage, sync=True)

    async def handle_async_request(self, request: Any) -> Any:
        raise TypeError(
            "LimitedTransport is for a sync client (OpenAI, Anthropic); an async client "
            "(AsyncOpenAI, AsyncAnthropic) needs AsyncLimitedTransport"
        )

    def close(self) -> None:
        self._transport.close()


class AsyncLimiting(_Limiting):
    """``AsyncLimitedTransport``: for an async client (``AsyncOpenAI``, ``AsyncAnthropic``). The
    limiter is awaited on the event loop; with a Redis store, what talks to Redis runs in the
    loop's default executor, never on the loop."""

    _kind = "AsyncBaseTransport"
    _default = "AsyncHTTPTransport"
    _stream = "AsyncByteStream"

    async def handle_async_request(self, request: Any) -> Any:
        passage = self._passage(request)
        try:
            await passage.take_async()
        except (LimiterTimeout, LimiterClosed) as refusal:
            raise through_sdk(refusal, request.headers) from None
        try:
            response = await self._transport.handle_async_request(request)
        except BaseException:
            await _off_the_loop(passage, passage.end, None)
            raise
        await _off_the_loop(passage, passage.heard, response.status_code, response.headers)
        return self._watched(response, passage, sync=False)

    def handle_request(self, request: Any) -> Any:
        raise TypeError(
            "AsyncLimitedTransport is for an async client (AsyncOpenAI, AsyncAnthropic); "
            "a sync client (OpenAI, Anthropic) needs LimitedTransport"
        )

    async def aclose(self) -> None:
        await self._transport.aclose()


async def _off_the_loop(passage: Passage, call: Callable[..., None], *args: Any) -> None:
    """``call(*args)``: at once for an in-process limiter, in the loop's default executor for one
    whose store is remote (each of its calls is a round trip)."""
    if getattr(passage.limiter, "store", None) is None:
        call(*args)
    else:
        await asyncio.get_running_loop().run_in_executor(None, call, *args)


class _Watching:
    """A response stream's state: the package's stream it wraps, the passage it ends, the usage
    it reads; abandoned (collected unclosed), it ends the passage with the estimate."""

    def __init__(self, inner: Any, passage: Passage, reader: UsageReader) -> None:
        self._inner = inner
        self._passage = passage
        self._reader = reader
        self._abandoned = weakref.finalize(self, passage.end, None)


@functools.cache
def _streams(package: Any) -> tuple[type, type]:
    """The response streams handed to the SDK, for ``package``: its bytes passed on untouched and
    counted; ``close()`` (or the stream's garbage collection, when the SDK abandons it) ends the
    passage."""

    class Watched(_Watching, package.SyncByteStream):  # type: ignore[misc]
        def __iter__(self) -> Iterator[bytes]:
            for chunk in self._inner:
                self._reader.feed(chunk)
                yield chunk

        def close(self) -> None:
            try:
                self._inner.close()
            finally:
                self._abandoned.detach()
                self._passage.end(self._reader.tokens())

    class AsyncWatched(_Watching, package.AsyncByteStream):  # type: ignore[misc]
        async def __aiter__(self) -> AsyncIterator[bytes]:
            async for chunk in self._inner:
                self._reader.feed(chunk)
                yield chunk

        async def aclose(self) -> None:
            try:
                await self._inner.aclose()
            finally:
                self._abandoned.detach()
                await _off_the_loop(self._passage, self._passage.end, self._reader.tokens())

    return Watched, AsyncWatched
