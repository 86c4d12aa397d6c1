"""``LimitedTransport``: an ``httpx2`` transport that puts every request of an SDK through an
omnilimit limiter (``pip install "omnilimit[httpx2]"``; the openai 3.x and anthropic 2.x SDKs are
built on httpx2)::

    from openai import OpenAI, DefaultHttpxClient
    from omnilimit.transport.httpx2 import LimitedTransport

    client = OpenAI(http_client=DefaultHttpxClient(transport=LimitedTransport(limiter)))

For each request: its tokens are estimated (``transport.estimate``, or ``estimate(request)``), the
limiter is acquired (``LimiterTimeout`` when it refuses), the response's status and headers are
fed to it (``on_response``), and when the response is over (read, closed, or abandoned) the
reservation is settled by the provider's rule (``transport.settle``) and a slot is freed.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, ClassVar

import httpx2

from omnilimit import _async
from omnilimit._async import DEFAULT_TIMEOUT as DEFAULT
from omnilimit.transport.estimate import estimate_tokens
from omnilimit.transport.passage import Passage, limiter_of
from omnilimit.transport.reading import UsageReader
from omnilimit.transport.settle import RULES, SettleRule, provider_rule, rule_named

Estimate = Callable[[httpx2.Request], int]


class _Limiting:
    """What both transports are given, checked once: the limiter, the estimate, the settle rule,
    acquire()'s timeout; and the passage of each request."""

    _kind: ClassVar[type]  # the transports it may wrap
    _default: ClassVar[Callable[[], object]]  # the one it wraps when given none

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
        if transport is None:
            transport = type(self)._default()
        elif not isinstance(transport, self._kind):
            raise TypeError(
                f"transport must be an httpx2.{self._kind.__name__}, got {type(transport).__module__}."
                f"{type(transport).__qualname__} (for the httpx package, use omnilimit.transport.httpx)"
            )
        self._transport: Any = transport
        if timeout is not DEFAULT:
            _async.deadline(timeout)  # checks it now: ValueError for a bad one
        self._timeout = timeout
        self._estimate = estimate
        self._settle = None if settle is None else rule_named(settle)

    def _passage(self, request: httpx2.Request, stream_type: type) -> Passage:
        if not isinstance(request.stream, stream_type):
            raise TypeError(
                "omnilimit's httpx2 transport got a request it cannot send: the client is not an httpx2 "
                "client of its kind (sync or async; an httpx client needs omnilimit.transport.httpx)"
            )
        rule = self._settle or RULES[provider_rule(request.url.host, request.url.path, request.headers)]
        return Passage(self._limiter, self._tokens(request), rule, self._timeout)

    def _tokens(self, request: httpx2.Request) -> int:
        if self._estimate is not None:
            tokens = self._estimate(request)
            if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
                raise ValueError(f"estimate(request) must return a whole number of tokens >= 0, got {tokens!r}")
            return tokens
        if "json" not in request.headers.get("content-type", ""):
            return 0
        try:
            body = request.content  # the SDKs' JSON bodies are in memory
        except httpx2.RequestNotRead:  # a streamed upload: not read here, no tokens reserved for it
            return 0
        return estimate_tokens(body)


class LimitedTransport(_Limiting, httpx2.BaseTransport):
    """Every request through ``limiter`` (a ``ConcurrencyLimiter``, a ``RateLimiter`` or a
    ``(manager, role)`` pair), sent by ``transport`` (default: ``httpx2.HTTPTransport()``).
    ``estimate(request) -> int`` overrides the token estimate; ``settle`` (``"keep_charge"``,
    ``"refund_unused"`` or ``rule(estimate, used) -> int``) overrides the provider's rule;
    ``timeout`` is acquire()'s (default: the limiter's own, 120 s or 60 s)."""

    _kind = httpx2.BaseTransport
    _default = httpx2.HTTPTransport

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        raise TypeError(
            "LimitedTransport is for a sync client (httpx2.Client: OpenAI, Anthropic); an async client "
            "(AsyncOpenAI, AsyncAnthropic) needs AsyncLimitedTransport"
        )

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        passage = self._passage(request, httpx2.SyncByteStream)
        passage.take()
        try:
            response = self._transport.handle_request(request)
        except BaseException:
            passage.end(None)
            raise
        passage.heard(response.status_code, response.headers)
        return httpx2.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_Watched(response.stream, passage, UsageReader(response.headers)),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._transport.close()


class AsyncLimitedTransport(_Limiting, httpx2.AsyncBaseTransport):
    """``LimitedTransport`` for ``AsyncOpenAI`` / ``AsyncAnthropic`` (an ``httpx2.AsyncClient``):
    the limiter is awaited on the event loop; with a Redis store, what talks to Redis runs in the
    loop's default executor, never on the loop."""

    _kind = httpx2.AsyncBaseTransport
    _default = httpx2.AsyncHTTPTransport

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        raise TypeError(
            "AsyncLimitedTransport is for an async client (httpx2.AsyncClient: AsyncOpenAI, AsyncAnthropic); "
            "a sync client (OpenAI, Anthropic) needs LimitedTransport"
        )

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        passage = self._passage(request, httpx2.AsyncByteStream)
        await passage.take_async()
        try:
            response = await self._transport.handle_async_request(request)
        except BaseException:
            await _off_the_loop(passage, passage.end, None)
            raise
        await _off_the_loop(passage, passage.heard, response.status_code, response.headers)
        return httpx2.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_AsyncWatched(response.stream, passage, UsageReader(response.headers)),
            extensions=response.extensions,
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


class _Watched(httpx2.SyncByteStream):
    """The response's bytes, passed on untouched and counted; ``close()`` (or the stream's garbage
    collection, when the SDK abandons it) ends the passage."""

    def __init__(self, inner: object, passage: Passage, reader: UsageReader) -> None:
        self._inner = inner
        self._passage = passage
        self._reader = reader
        self._abandoned = weakref.finalize(self, passage.end, None)

    def __iter__(self) -> Iterator[bytes]:
        assert isinstance(self._inner, httpx2.SyncByteStream)
        for chunk in self._inner:
            self._reader.feed(chunk)
            yield chunk

    def close(self) -> None:
        try:
            inner = self._inner
            if isinstance(inner, httpx2.SyncByteStream):
                inner.close()
        finally:
            self._abandoned.detach()
            self._passage.end(self._reader.tokens())


class _AsyncWatched(httpx2.AsyncByteStream):
    """``_Watched`` for an async response."""

    def __init__(self, inner: object, passage: Passage, reader: UsageReader) -> None:
        self._inner = inner
        self._passage = passage
        self._reader = reader
        self._abandoned = weakref.finalize(self, passage.end, None)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        assert isinstance(self._inner, httpx2.AsyncByteStream)
        async for chunk in self._inner:
            self._reader.feed(chunk)
            yield chunk

    async def aclose(self) -> None:
        try:
            inner = self._inner
            if isinstance(inner, httpx2.AsyncByteStream):
                await inner.aclose()
        finally:
            self._abandoned.detach()
            await _off_the_loop(self._passage, self._passage.end, self._reader.tokens())
