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

import weakref
from collections.abc import Callable, Iterator

import httpx2

from omnilimit import _async
from omnilimit._async import DEFAULT_TIMEOUT as DEFAULT
from omnilimit.transport.estimate import estimate_tokens
from omnilimit.transport.passage import Passage, limiter_of
from omnilimit.transport.reading import UsageReader
from omnilimit.transport.settle import RULES, SettleRule, provider_rule, rule_named

Estimate = Callable[[httpx2.Request], int]


class LimitedTransport(httpx2.BaseTransport):
    """Every request through ``limiter`` (a ``ConcurrencyLimiter``, a ``RateLimiter`` or a
    ``(manager, role)`` pair), sent by ``transport`` (default: ``httpx2.HTTPTransport()``).
    ``estimate(request) -> int`` overrides the token estimate; ``settle`` (``"keep_charge"``,
    ``"refund_unused"`` or ``rule(estimate, used) -> int``) overrides the provider's rule;
    ``timeout`` is acquire()'s (default: the limiter's own, 120 s or 60 s)."""

    def __init__(
        self,
        limiter: object,
        transport: httpx2.BaseTransport | None = None,
        *,
        estimate: Estimate | None = None,
        settle: str | SettleRule | None = None,
        timeout: float | object | None = DEFAULT,
    ) -> None:
        self._limiter = limiter_of(limiter)
        if timeout is not DEFAULT:
            _async.deadline(timeout)  # checks it now: ValueError for a bad one
        self._timeout = timeout
        if transport is None:
            transport = httpx2.HTTPTransport()
        elif not isinstance(transport, httpx2.BaseTransport):
            raise TypeError(
                f"transport must be a transport of the httpx2 package, got {type(transport).__module__}."
                f"{type(transport).__qualname__} (for the httpx package, use omnilimit.transport.httpx)"
            )
        self._transport = transport
        self._estimate = estimate
        self._settle = None if settle is None else rule_named(settle)

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        if not isinstance(request.stream, httpx2.SyncByteStream):
            raise TypeError(
                "omnilimit's httpx2 LimitedTransport got a request it cannot send: the client is not an "
                "httpx2.Client (an httpx.Client needs omnilimit.transport.httpx)"
            )
        rule = self._settle or RULES[provider_rule(request.url.host, request.url.path, request.headers)]
        passage = Passage(self._limiter, self._tokens(request), rule, self._timeout)
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

    def _tokens(self, request: httpx2.Request) -> int:
        if self._estimate is not None:
            tokens = self._estimate(request)
            if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
                raise ValueError(f"estimate(request) must return a whole number of tokens >= 0, got {tokens!r}")
            return tokens
        if "json" not in request.headers.get("content-type", ""):
            return 0
        return estimate_tokens(request.read())

    def close(self) -> None:
        self._transport.close()


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
