"""What ``llm_standin.LLMStandIn`` says on the wire, in the two dialects the SDKs speak.

- ``OPENAI``: ``POST /v1/chat/completions``. A JSON answer, or with ``"stream": true`` server-sent
  events (``chat.completion.chunk`` events, then ``data: [DONE]``; with
  ``stream_options.include_usage`` a last chunk with empty ``choices`` carries the ``usage``, as
  OpenAI sends it). Budget headers ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``, the
  reset as a Go duration (``"250ms"``); a 429 has ``retry-after`` and ``retry-after-ms`` and an
  OpenAI error body.
- ``ANTHROPIC``: ``POST /v1/messages`` (``max_tokens`` required, ``system`` counted in the prompt).
  A JSON ``message``, or with ``"stream": true`` Anthropic's events (``message_start`` with the
  input tokens, the text, ``message_delta`` with the output tokens, ``message_stop``). Budget
  headers ``anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}``, the reset an RFC 3339
  timestamp of the wall clock to the millisecond; a 429 has ``retry-after`` (whole seconds) and an
  Anthropic error body.

A dialect only names and shapes things: every rule (what a request costs, what is admitted, what
remains) is ``LLMStandIn``'s.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

__all__ = ["ANTHROPIC", "DIALECTS", "OPENAI", "Budget", "Dialect", "Request", "go_duration", "prompt_tokens"]


def prompt_tokens(messages: Any, system: Any = None) -> int:
    """The prompt's token count as the stand-in charges it: ``len(text) // 4`` of every message's
    text (string contents, or the ``text`` of content parts) and of ``system``, at least 1."""
    chars = 0
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        chars += _text_length(content)
    chars += _text_length(system)
    return max(1, chars // 4)


def _text_length(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):  # content parts: count their text
        return sum(len(str(part.get("text", ""))) for part in content if isinstance(part, dict))
    return 0


def go_duration(seconds: float) -> str:
    """``seconds`` as Go's ``time.Duration.String`` prints it, in whole milliseconds rounded up:
    ``"0s"``, ``"250ms"``, ``"1s"``, ``"1.25s"``, ``"1m0.5s"``."""
    ms = max(0, math.ceil(seconds * 1000.0 - 1e-6))
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    minutes, rest_ms = divmod(ms, 60_000)
    secs = f"{rest_ms / 1000:.3f}".rstrip("0").rstrip(".")
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


@dataclass(frozen=True)
class Request:
    """A completion request as the stand-in reads it."""

    model: str
    prompt: int  # prompt_tokens()
    max_tokens: int
    stream: bool
    include_usage: bool  # a stream that ends with its usage (Anthropic's always does)


@dataclass(frozen=True)
class Budget:
    """One enforced budget at the moment an answer is sent."""

    kind: str  # "requests" or "tokens"
    limit: float  # per minute, as configured
    remaining: int  # what the current 1-s window still admits
    reset_s: float  # seconds until the budget is full again


class Dialect:
    """How one provider's API names and shapes what the stand-in says."""

    name: str
    paths: tuple[str, ...]

    def parse(self, body: Any, default_max_tokens: int) -> Request:
        """The request, or ValueError saying what is wrong with it."""
        raise NotImplementedError

    def budget_headers(self, budgets: list[Budget]) -> dict[str, str]:
        raise NotImplementedError

    def retry_headers(self, wait_s: float) -> dict[str, str]:
        raise NotImplementedError

    def error(self, message: str, kind: str) -> dict[str, Any]:
        raise NotImplementedError

    def answer(self, request: Request, completion: int) -> dict[str, Any]:
        """The JSON answer of an admitted request that "generated" ``completion`` tokens."""
        raise NotImplementedError

    def events(self, request: Request, completion: int) -> tuple[list[bytes], list[bytes]]:
        """The events of a streamed answer: those sent at once, and those sent at its end."""
        raise NotImplementedError


def _whole_number(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    return value


def _text(completion: int) -> str:
    return "ok " * min(completion, 64)


class _OpenAI(Dialect):
    name = "openai"
    paths = ("/v1/chat/completions", "/chat/completions")

    def parse(self, body: Any, default_max_tokens: int) -> Request:
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            raise ValueError("'messages' must be a list")
        max_tokens = body.get("max_tokens", body.get("max_completion_tokens")) or default_max_tokens
        options = body.get("stream_options") or {}
        return Request(
            model=str(body.get("model", "stand-in")),
            prompt=prompt_tokens(body["messages"]),
            max_tokens=_whole_number(max_tokens, "max_tokens"),
            stream=bool(body.get("stream")),
            include_usage=bool(isinstance(options, dict) and options.get("include_usage")),
        )

    def budget_headers(self, budgets: list[Budget]) -> dict[str, str]:
        headers: dict[str, str] = {}
        for budget in budgets:
            headers[f"x-ratelimit-limit-{budget.kind}"] = str(math.ceil(budget.limit))
            headers[f"x-ratelimit-remaining-{budget.kind}"] = str(budget.remaining)
            headers[f"x-ratelimit-reset-{budget.kind}"] = go_duration(budget.reset_s)
        return headers

    def retry_headers(self, wait_s: float) -> dict[str, str]:
        return {"retry-after": str(max(1, math.ceil(wait_s))), "retry-after-ms": str(max(1, math.ceil(wait_s * 1000)))}

    def error(self, message: str, kind: str) -> dict[str, Any]:
        code = "rate_limit_exceeded" if kind in ("requests", "tokens", "concurrency") else "invalid_value"
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}

    def _usage(self, request: Request, completion: int) -> dict[str, int]:
        total = request.prompt + completion
        return {"prompt_tokens": request.prompt, "completion_tokens": completion, "total_tokens": total}

    def _finish(self, request: Request, completion: int) -> str:
        return "length" if completion >= request.max_tokens else "stop"

    def answer(self, request: Request, completion: int) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": _text(completion)},
                    "logprobs": None,
                    "finish_reason": self._finish(request, completion),
                }
            ],
            "usage": self._usage(request, completion),
        }

    def events(self, request: Request, completion: int) -> tuple[list[bytes], list[bytes]]:
        ident, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            payload = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": request.model,
                "choices": choices,
            }
            if request.include_usage:
                payload["usage"] = None
            payload.update(extra)
            return b"data: " + json.dumps(payload).encode() + b"\n\n"

        first = [chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])]
        last = [
            chunk([{"index": 0, "delta": {"content": _text(completion)}, "finish_reason": None}]),
            chunk([{"index": 0, "delta": {}, "finish_reason": self._finish(request, completion)}]),
        ]
        if request.include_usage:
            last.append(chunk([], usage=self._usage(request, completion)))
        last.append(b"data: [DONE]\n\n")
        return first, last


class _Anthropic(Dialect):
    name = "anthropic"
    paths = ("/v1/messages",)

    def parse(self, body: Any, default_max_tokens: int) -> Request:
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            raise ValueError("messages: Field required")
        if "max_tokens" not in body:
            raise ValueError("max_tokens: Field required")
        return Request(
            model=str(body.get("model", "stand-in")),
            prompt=prompt_tokens(body["messages"], body.get("system")),
            max_tokens=_whole_number(body["max_tokens"], "max_tokens"),
            stream=bool(body.get("stream")),
            include_usage=True,
        )

    def budget_headers(self, budgets: list[Budget]) -> dict[str, str]:
        headers: dict[str, str] = {}
        now = time.time()
        for budget in budgets:
            reset = datetime.fromtimestamp(now + budget.reset_s, timezone.utc)
            stamp = reset.isoformat(timespec="milliseconds").replace("+00:00", "Z")
            headers[f"anthropic-ratelimit-{budget.kind}-limit"] = str(math.ceil(budget.limit))
            headers[f"anthropic-ratelimit-{budget.kind}-remaining"] = str(budget.remaining)
            headers[f"anthropic-ratelimit-{budget.kind}-reset"] = stamp
        return headers

    def retry_headers(self, wait_s: float) -> dict[str, str]:
        return {"retry-after": str(max(1, math.ceil(wait_s)))}

    def error(self, message: str, kind: str) -> dict[str, Any]:
        known = kind in ("requests", "tokens", "concurrency")
        return {"type": "error", "error": {"type": "rate_limit_error" if known else kind, "message": message}}

    def _message(self, request: Request, content: list[dict[str, Any]], output: int, stop: Any) -> dict[str, Any]:
        return {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": request.model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": request.prompt, "output_tokens": output},
        }

    def _stop(self, request: Request, completion: int) -> str:
        return "max_tokens" if completion >= request.max_tokens else "end_turn"

    def answer(self, request: Request, completion: int) -> dict[str, Any]:
        content = [{"type": "text", "text": _text(completion)}]
        return self._message(request, content, completion, self._stop(request, completion))

    def events(self, request: Request, completion: int) -> tuple[list[bytes], list[bytes]]:
        def event(kind: str, **payload: Any) -> bytes:
            return f"event: {kind}\ndata: ".encode() + json.dumps({"type": kind, **payload}).encode() + b"\n\n"

        first = [
            event("message_start", message=self._message(request, [], 1, None)),
            event("content_block_start", index=0, content_block={"type": "text", "text": ""}),
        ]
        last = [
            event("content_block_delta", index=0, delta={"type": "text_delta", "text": _text(completion)}),
            event("content_block_stop", index=0),
            event(
                "message_delta",
                delta={"stop_reason": self._stop(request, completion), "stop_sequence": None},
                usage={"output_tokens": completion},
            ),
            event("message_stop"),
        ]
        return first, last


OPENAI: Dialect = _OpenAI()
ANTHROPIC: Dialect = _Anthropic()
DIALECTS: tuple[Dialect, ...] = (OPENAI, ANTHROPIC)
