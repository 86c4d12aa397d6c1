"""A local stand-in for an OpenAI-compatible LLM provider, for end-to-end tests.

OmniGen's ``openai`` provider (``omnigen/providers/openai.py``) talks to its ``base_url`` through
the ``openai`` client: ``POST {base_url}/chat/completions`` with a JSON body, non-streaming by
default (``"stream": true`` when the provider config says ``use_streaming: true``). This server
answers that endpoint (with or without the ``/v1`` prefix, streaming or not) with a valid
completion, and ``GET /v1/models`` for good measure.

For every completion request it records, under a lock, when the request arrived
(``time.monotonic()``) and how many requests were in flight at that moment, this one included, so a
test can check a concurrency limit (``max_in_flight``) and a rate (``request_times``). A request
counts as in flight from its arrival until just before the last bytes of its answer are sent: a
client that gets its answer and at once sends the next request is never counted twice.

Standard library only; binds 127.0.0.1 on a free port::

    with StubProvider(latency_s=0.05) as provider:
        run_something(base_url=provider.base_url)
    assert provider.max_in_flight <= 2
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["RequestRecord", "StubProvider", "default_reply"]


@dataclass(frozen=True)
class RequestRecord:
    """One completion request as the stub saw it."""

    arrived: float  # time.monotonic() when the request line and body had been read
    in_flight: int  # completion requests being served at that moment, this one included
    path: str
    body: dict[str, Any]


def default_reply(body: dict[str, Any]) -> str:
    """A plausible "rewrite" of the passage the request asks to rewrite.

    The passage is what OmniGen's text enhancement prompt puts between ``<|PASSAGE START|>`` and
    ``<|PASSAGE END|>`` (else the whole last user message). The answer differs from it and stays
    within 70-130 % of its length, so it passes that pipeline's default validation rules
    (``not_empty``, ``not_identical``, ``length_ratio``) on the first attempt.
    """
    user_messages = [m for m in body.get("messages", []) if m.get("role") == "user"]
    text = str(user_messages[-1].get("content", "")) if user_messages else ""
    start, end = text.find(_PASSAGE_START), text.find(_PASSAGE_END)
    if start != -1 and end > start:
        text = text[start + len(_PASSAGE_START) : end]
    passage = " ".join(text.split())
    if not passage:
        return "Rewritten passage."
    rewritten = f"In other words, {passage[0].lower()}{passage[1:]}"
    if len(rewritten) <= 1.25 * len(passage):
        return rewritten
    return passage.swapcase()  # a short passage: same length, still a different text


_PASSAGE_START = "<|PASSAGE START|>"
_PASSAGE_END = "<|PASSAGE END|>"


class StubProvider:
    """OpenAI-compatible HTTP server on 127.0.0.1, recording arrivals and concurrency.

    ``latency_s`` is slept in every completion request before it answers, so that concurrent
    callers overlap. ``reply`` maps the request body to the assistant's text.
    """

    def __init__(
        self,
        latency_s: float = 0.0,
        reply: Callable[[dict[str, Any]], str] = default_reply,
    ) -> None:
        if latency_s < 0:
            raise ValueError("latency_s must be >= 0")
        self.latency_s = latency_s
        self.reply = reply
        self._lock = threading.Lock()
        self._records: list[RequestRecord] = []
        self._in_flight = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> StubProvider:
        if self._server is not None:
            raise RuntimeError("StubProvider already started")
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="stub-provider", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        assert self._thread is not None
        self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> StubProvider:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- what tests read
    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("StubProvider is not running")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """What an OpenAI client takes as ``base_url``."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def records(self) -> list[RequestRecord]:
        """Completion requests in arrival order (a copy)."""
        with self._lock:
            return list(self._records)

    @property
    def request_times(self) -> list[float]:
        """Arrival instants (``time.monotonic()``) of the completion requests, in order."""
        with self._lock:
            return [r.arrived for r in self._records]

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self._records)

    @property
    def max_in_flight(self) -> int:
        """The most completion requests ever served at once (0 before the first)."""
        with self._lock:
            return max((r.in_flight for r in self._records), default=0)

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    # ----------------------------------------------------------------- bookkeeping
    def _enter(self, path: str, body: dict[str, Any]) -> None:
        with self._lock:
            self._in_flight += 1
            self._records.append(RequestRecord(time.monotonic(), self._in_flight, path, body))

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1


def _completion(body: dict[str, Any], content: str) -> dict[str, Any]:
    prompt_words = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
    completion_words = len(content.split())
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "stub-model"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_words,
            "completion_tokens": completion_words,
            "total_tokens": prompt_words + completion_words,
        },
    }


def _chunks(body: dict[str, Any], content: str) -> list[dict[str, Any]]:
    """The server-sent events of a streamed completion: role, a few content pieces, stop."""
    base = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": body.get("model", "stub-model"),
    }
    words = content.split(" ")
    pieces = [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]
    deltas: list[tuple[dict[str, Any], str | None]] = [({"role": "assistant", "content": ""}, None)]
    deltas += [({"content": p}, None) for p in pieces]
    deltas.append(({}, "stop"))
    return [{**base, "choices": [{"index": 0, "delta": d, "logprobs": None, "finish_reason": f}]} for d, f in deltas]


def _make_handler(stub: StubProvider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real providers do; every answer has a length

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _send_json(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path.rstrip("/") in ("/v1/models", "/models"):
                self._send_json(200, {"object": "list", "data": [{"id": "stub-model", "object": "model"}]})
            else:
                self._send_json(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})

        def do_POST(self) -> None:
            path = self.path.split("?", 1)[0].rstrip("/")
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if path not in ("/v1/chat/completions", "/chat/completions"):
                self._send_json(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})
                return
            try:
                body = json.loads(raw or b"{}")
                if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
                    raise ValueError("'messages' must be a list")
            except ValueError as e:
                self._send_json(400, {"error": {"message": f"bad request: {e}", "type": "invalid_request_error"}})
                return

            # A request stops counting as in flight just BEFORE its last bytes go out: once the
            # client has its answer it may release its slot and send the next request at once, and
            # that one must not be counted together with this one.
            stub._enter(path, body)
            left = False

            def leave() -> None:
                nonlocal left
                if not left:
                    left = True
                    stub._leave()

            try:
                if stub.latency_s:
                    time.sleep(stub.latency_s)
                content = stub.reply(body)
                if body.get("stream"):
                    self._stream(body, content, leave)
                else:
                    payload = _completion(body, content)
                    leave()
                    self._send_json(200, payload)
            finally:
                leave()

        def _stream(self, body: dict[str, Any], content: str, leave: Callable[[], None]) -> None:
            # No length for an event stream: close the connection to end it.
            self.close_connection = True
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            for chunk in _chunks(body, content):
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            leave()
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()

    return Handler
