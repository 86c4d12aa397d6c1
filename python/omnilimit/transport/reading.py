"""What a transport reads of a response as its bytes pass to the SDK, to learn its usage: the
body decoded from its content encoding (``gzip`` and ``deflate``; the SDKs ask for them), then a
stream's events (``StreamUsage``) or a JSON body (kept up to ``MAX_BODY`` bytes). The bytes the SDK
gets are untouched: this is a copy for counting."""

from __future__ import annotations

import zlib
from collections.abc import Mapping

from omnilimit.transport.usage import StreamUsage, usage_of_body

MAX_BODY = 16 * 1024 * 1024
"""A JSON body longer than this (decoded) is not kept: its usage is unknown, the estimate stands."""


class UsageReader:
    """The usage of one response, from its headers and the raw bytes fed to it."""

    __slots__ = ("_body", "_decoder", "_stream", "_unreadable")

    def __init__(self, headers: Mapping[str, str]) -> None:
        encoding = headers.get("content-encoding", "").strip().lower()
        content_type = headers.get("content-type", "").lower()
        self._unreadable = encoding not in ("", "identity", "gzip", "x-gzip", "deflate")
        self._decoder = zlib.decompressobj(zlib.MAX_WBITS | 32) if encoding in ("gzip", "x-gzip", "deflate") else None
        self._stream = StreamUsage() if "text/event-stream" in content_type else None
        self._body: bytearray | None = None if self._stream is not None or self._unreadable else bytearray()

    def feed(self, raw: bytes) -> None:
        if self._unreadable or not raw:
            return
        try:
            data = self._decoder.decompress(raw) if self._decoder is not None else raw
        except zlib.error:
            self._unreadable = True
            return
        if self._stream is not None:
            self._stream.feed(data)
        elif self._body is not None:
            if len(self._body) + len(data) > MAX_BODY:
                self._body = None
            else:
                self._body += data

    def tokens(self) -> int | None:
        """The tokens the response said it used, once it is over (None: it did not say)."""
        if self._unreadable:
            return None
        if self._stream is not None:
            self._stream.close()
            return self._stream.tokens
        return None if self._body is None else usage_of_body(bytes(self._body))
