"""The transports for the ``httpx`` package, on which older openai and anthropic SDKs and many
programs are built (``pip install "omnilimit[httpx]"``)::

    import httpx
    from omnilimit.transport.httpx import LimitedTransport

    client = OpenAI(http_client=httpx.Client(transport=LimitedTransport(limiter)))

The same transports as ``omnilimit.transport.httpx2`` (``omnilimit.transport._http``). Note that
anthropic 2.x accepts only httpx2 clients.
"""

from __future__ import annotations

from typing import Any, ClassVar

import httpx

from omnilimit.transport._http import AsyncLimiting, SyncLimiting


class LimitedTransport(SyncLimiting, httpx.BaseTransport):
    """Every request of a sync httpx client through ``limiter``: see
    ``omnilimit.transport.httpx2.LimitedTransport``, the same arguments."""

    _package: ClassVar[Any] = httpx


class AsyncLimitedTransport(AsyncLimiting, httpx.AsyncBaseTransport):
    """``LimitedTransport`` for an ``httpx.AsyncClient``."""

    _package: ClassVar[Any] = httpx
