"""What a response says its request used, in tokens: what a limiter with a token budget settles
the request's reservation with (``omnilimit.transport``).

- A JSON response: its ``usage`` object. OpenAI's chat completions (``prompt_tokens`` +
  ``completion_tokens``), OpenAI's Responses API (``input_tokens`` + ``output_tokens``, also
  under ``response`` in its events) and Anthropic's messages (``input_tokens`` +
  ``cache_creation_input_tokens`` + ``output_tokens``); ``total_tokens`` when given.
- A streamed response (server-sent events): ``StreamUsage`` reads the events as they pass and
  keeps what they last said: OpenAI's final chunk (``stream_options.include_usage``), the
  Responses API's ``response.completed``, Anthropic's ``message_start`` (input) and
  ``message_delta`` (output so far, cumulative).

None when the response says nothing (an error body, a stream abandoned before its usage came).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def tokens_used(usage: object) -> int | None:
    """The tokens a ``usage`` object counts, or None when it is not one."""
    if not isinstance(usage, Mapping):
        return None
    total = _count(usage.get("total_tokens"))
    if total is not None:
        return total
    parts = [
        _count(usage.get(name))
        for name in (
            "prompt_tokens",
            "completion_tokens",
            "input_tokens",
            "output_tokens",
            "cache_creation_input_tokens",
        )
    ]
    known = [part for part in parts if part is not None]
    return sum(known) if known else None


def usage_of(payload: object) -> int | None:
    """The tokens a decoded JSON response (or one event of a stream) says were used."""
    if not isinstance(payload, Mapping):
        return None
    for holder in (payload, payload.get("response"), payload.get("message")):
        if isinstance(holder, Mapping) and "usage" in holder:
            found = tokens_used(holder["usage"])
            if found is not None:
                return found
    return None


def usage_of_body(body: bytes) -> int | None:
    """``usage_of`` for a response body (JSON, already decoded from its content encoding)."""
    try:
        return usage_of(json.loads(body))
    except (ValueError, UnicodeDecodeError):
        return None


class StreamUsage:
    """The usage a stream of server-sent events reports, read as its bytes pass (``feed``), in
    chunks cut anywhere. ``tokens`` is None until an event says it."""

    __slots__ = ("_anthropic_input", "_anthropic_output", "_pending", "_reported")

    def __init__(self) -> None:
        self._pending = b""
        self._reported: int | None = None  # OpenAI's usage (chat's last chunk, the Responses API)
        self._anthropic_input: int | None = None
        self._anthropic_output: int | None = None

    def feed(self, chunk: bytes) -> None:
        data = self._pending + chunk
        *lines, self._pending = data.split(b"\n")
        for line in lines:
            self._line(line.rstrip(b"\r"))

    def close(self) -> None:
        """The stream ended: a last line without its newline counts too."""
        if self._pending:
            self._line(self._pending.rstrip(b"\r"))
            self._pending = b""

    @property
    def tokens(self) -> int | None:
        if self._anthropic_input is not None or self._anthropic_output is not None:
            return (self._anthropic_input or 0) + (self._anthropic_output or 0)
        return self._reported

    def _line(self, line: bytes) -> None:
        if not line.startswith(b"data:"):
            return
        text = line[5:].strip()
        if not text or text == b"[DONE]":
            return
        try:
            event: Any = json.loads(text)
        except (ValueError, UnicodeDecodeError):
            return
        if not isinstance(event, dict):
            return
        kind = event.get("type")
        if kind == "message_start":  # Anthropic: the input, and the output so far
            usage = (event.get("message") or {}).get("usage") or {}
            self._anthropic_input = _sum(usage, "input_tokens", "cache_creation_input_tokens")
            self._anthropic_output = _count(usage.get("output_tokens"))
        elif kind == "message_delta":  # Anthropic: the output so far (cumulative)
            output = _count((event.get("usage") or {}).get("output_tokens"))
            if output is not None:
                self._anthropic_output = output
        else:
            found = usage_of(event)
            if found is not None:
                self._reported = found


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _sum(usage: Mapping[str, Any], *names: str) -> int | None:
    known = [count for name in names if (count := _count(usage.get(name))) is not None]
    return sum(known) if known else None
