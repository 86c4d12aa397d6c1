"""The transports for the ``httpx2`` package, on which the openai 3.x and anthropic 2.x SDKs are
built (``pip install "omnilimit[httpx2]"``)::

    from openai import OpenAI, AsyncOpenAI, DefaultHttpxClient, DefaultAsyncHttpxClient
    from omnilimit.transport.httpx2 import LimitedTransport, AsyncLimitedTransport

    client = OpenAI(http_client=DefaultHttpxClient(transport=LimitedTransport(limiter)))
    aclient = AsyncOpenAI(http_client=DefaultAsyncHttpxClient(transport=AsyncLimitedTransport(limiter)))

What they do for each request: ``omnilimit.transport._http``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import httpx2

from omnilimit.transport._http import AsyncLimiting, SyncLimiting


class LimitedTransport(SyncLimiting, httpx2.BaseTransport):
    """Every request of a sync httpx2 client through ``limiter`` (a ``ConcurrencyLimiter``, a
    ``RateLimiter`` or a ``(manager, role)`` pair), sent by ``transport`` (default:
    ``httpx2.HTTPTransport()``). ``estimate(request) -> int`` overrides the token estimate;
    ``settle`` (``"keep_charge"``, ``"refund_unused"`` or ``rule(estimate, used) -> int``) the
    provider's rule; ``timeout`` is acquire()'s (default: the limiter's own, 120 s or 60 s)."""

    _package: ClassVar[Any] = httpx2


class AsyncLimitedTransport(AsyncLimiting, httpx2.AsyncBaseTransport):
    """``LimitedTransport`` for an ``httpx2.AsyncClient`` (``AsyncOpenAI``, ``AsyncAnthropic``):
    the same arguments; the limiter is awaited on the event loop."""

    _package: ClassVar[Any] = httpx2
