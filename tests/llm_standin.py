"""A stand-in LLM provider that enforces rate limits the way real ones do, for acceptance tests.

``LLMStandIn`` is a plain-HTTP, OpenAI-compatible server on 127.0.0.1 (an ephemeral port), standard
library only. It answers ``POST /v1/chat/completions`` (non-streaming) well enough for the real
``openai`` client, ``client.chat.completions.create(...)`` and ``.with_raw_response.create(...)``::

    with LLMStandIn(rpm=1200, tpm=240_000, max_concurrent=64) as provider:
        client = openai.OpenAI(base_url=provider.base_url, api_key="x", max_retries=0)
        ...
    provider.ok_count, provider.rejected_count, provider.served_per_second()

What it enforces, at the moment a request has been read (its *arrival*), under one lock:

- **Requests per minute ``rpm`` over 1-second slices**: a per-minute limit L admits at most
  ``ceil(L / 60)`` requests in any 1-s window. ``window="sliding"`` (the default) counts the
  admitted requests that arrived in the last second, ``(now - 1 s, now]``, so the cap holds for
  *every* 1-s interval: the stricter reading, and the closer one to providers. ``window="fixed"``
  counts the requests of the current whole second of the server's ``time.monotonic()`` clock
  (``[floor(now), floor(now) + 1)``), which lets up to twice the cap through across a boundary.
- **Tokens per minute ``tpm`` over the same slices** (at most ``ceil(tpm / 60)`` tokens in any 1-s
  window). A request costs ``prompt + max_tokens`` tokens, charged at its arrival (as OpenAI counts
  ``max_tokens`` up front): ``prompt`` is ``estimate_prompt_tokens(messages)``, ``len(text) // 4``
  of all message contents and at least 1, and ``max_tokens`` is the request's ``max_tokens`` (or
  ``max_completion_tokens``; ``default_max_tokens`` when absent). The answer reports ``usage``
  with ``completion_tokens = completion_tokens_for(max_tokens, completion_ratio)`` (deterministic:
  ``max(1, floor(max_tokens * completion_ratio))``). With ``settle_tokens=True`` (the default) the
  provider then settles like the client does: when the request completes, its entry in the window
  drops from ``prompt + max_tokens`` to ``prompt + completion``; with ``False`` it keeps counting
  ``max_tokens`` (a client must then not give the difference back).
- **At most ``max_concurrent`` requests in flight**. A request is in flight from its arrival until
  just BEFORE its answer is written: a client that gets its answer, releases its slot and sends the
  next request at once must never be counted twice.

``None`` for a limit means "no such limit". A rejected request is answered at once, with **429**
and an OpenAI-style error body, and does not count against any budget unless
``count_rejected=True`` (OpenAI says failed requests count too; off by default, so that a test's
429s measure the client alone). Every admitted request sleeps a simulated latency, uniform in
``latency_s = (low, high)`` from a seeded generator, while it holds its concurrency slot.

Headers, on every answer (2xx and 429), as OpenAI names them:

- ``x-ratelimit-limit-requests`` / ``-tokens``: the per-minute limits L, as configured (omitted when
  there is no such limit);
- ``x-ratelimit-remaining-requests`` / ``-tokens``: what the enforced budget, the current 1-s
  window, still admits, computed when the answer is sent (this request included);
- ``x-ratelimit-reset-requests`` / ``-tokens``: a Go-style duration (``"250ms"``, ``"1s"``,
  ``"1.25s"``; whole milliseconds, rounded up) until that budget is full again (OpenAI's "resets to
  its initial state"): for a sliding window, until the newest counted arrival leaves it; for a fixed
  one, until the window ends. ``reset_meaning="next"`` reports instead the time until the budget
  next grows (the oldest counted arrival leaves the window), which is what a client needs to know to
  send the next request (a client that pauses until the full reset whenever ``remaining`` is 0
  sends about half the limit through a sliding window).

A 429 also carries ``Retry-After`` (whole seconds, rounded up, at least 1) and ``retry-after-ms``
(the exact wait, rounded up to a millisecond): the time until this very request would have been
admitted (the binding budget's, or for the concurrency cap, the first in-flight request's end).

``set_limits(rpm=..., tpm=..., max_concurrent=...)`` changes limits at run time (a tier change);
arguments left out are kept. Counters: ``ok_count``, ``rejected_count``, ``rejected_by`` (per
reason), ``served_times`` / ``rejected_times`` (arrival instants, ``time.monotonic()``),
``served_per_second()`` (per whole second of the server's clock), ``max_in_flight``, and
``arrivals`` (every request: arrival, status, reason, and the client's ``x-stamp`` header when it
sends one, e.g. its ``time.monotonic()`` at admission, to tell a client's pacing from the delays on
the way).

``start()`` / ``stop()`` (or ``with``) run the server in a background thread and stop it cleanly:
``stop()`` stops accepting, shuts down every open keep-alive connection and joins every handler
thread, so no thread outlives it.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import socket
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "LLMStandIn",
    "completion_tokens_for",
    "estimate_prompt_tokens",
    "go_duration",
    "per_second",
]

_KEEP: Any = object()  # set_limits(): "leave this limit as it is"
_WINDOW_S = 1.0


def estimate_prompt_tokens(messages: Any) -> int:
    """The prompt's token estimate: ``len(text) // 4`` of all message contents, at least 1."""
    chars = 0
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):  # content parts: count their text
            chars += sum(len(str(part.get("text", ""))) for part in content if isinstance(part, dict))
    return max(1, chars // 4)


def completion_tokens_for(max_tokens: int, ratio: float) -> int:
    """The completion the stand-in "generates" for ``max_tokens``: ``max(1, floor(max_tokens * ratio))``."""
    return max(1, min(max_tokens, math.floor(max_tokens * ratio)))


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


def per_second(limit_per_minute: float | None) -> int | None:
    """The 1-s cap a per-minute limit stands for: ``ceil(limit / 60)``."""
    return None if limit_per_minute is None else max(1, math.ceil(limit_per_minute / 60.0))


@dataclass(frozen=True)
class Arrival:
    """One completion request as the stand-in saw it."""

    arrived: float  # time.monotonic() when it had been read
    status: int  # 200 or 429
    reason: str  # for a 429: "requests", "tokens" or "concurrency"; "" for a 200
    stamp: float | None  # the request's ``x-stamp`` header (a client's time.monotonic()), if any


class _Entry:
    """One admitted request in the windows."""

    __slots__ = ("arrived", "tokens")

    def __init__(self, arrived: float, tokens: int) -> None:
        self.arrived = arrived
        self.tokens = tokens


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # stop() joins every handler thread
    block_on_close = True
    allow_reuse_address = True
    request_queue_size = 256  # 64 clients connecting at once must not overflow the listen backlog

    def __init__(self, standin: LLMStandIn) -> None:
        self.standin = standin
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        self.closing = False  # set by stop(): a connection that opens from then on is cut at once
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a connection cut by stop() or by the client: nothing to report


class LLMStandIn:
    """An OpenAI-compatible provider on 127.0.0.1 that enforces RPM, TPM and a concurrency cap over
    1-s windows and answers 429 with OpenAI's headers (see the module docstring)."""

    def __init__(
        self,
        rpm: float | None = None,
        tpm: float | None = None,
        max_concurrent: int | None = None,
        *,
        latency_s: tuple[float, float] = (0.05, 0.10),
        window: str = "sliding",
        reset_meaning: str = "full",
        completion_ratio: float = 0.5,
        default_max_tokens: int = 16,
        settle_tokens: bool = True,
        count_rejected: bool = False,
        seed: int = 0,
    ) -> None:
        if window not in ("sliding", "fixed"):
            raise ValueError(f"window must be 'sliding' or 'fixed', got {window!r}")
        if reset_meaning not in ("full", "next"):
            raise ValueError(f"reset_meaning must be 'full' or 'next', got {reset_meaning!r}")
        low, high = latency_s
        if not 0 <= low <= high:
            raise ValueError(f"latency_s must be (low, high) with 0 <= low <= high, got {latency_s!r}")
        self.latency_s = (float(low), float(high))
        self.window = window
        self.reset_meaning = reset_meaning
        self.completion_ratio = completion_ratio
        self.default_max_tokens = default_max_tokens
        self.settle_tokens = settle_tokens
        self.count_rejected = count_rejected
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._rpm: float | None = None
        self._tpm: float | None = None
        self._max_concurrent: int | None = None
        self._set_limits_locked(rpm, tpm, max_concurrent)
        self._entries: deque[_Entry] = deque()  # admitted arrivals within the last window, oldest first
        self._in_flight_ends: list[float] = []  # expected end of each request in flight
        self._served: list[float] = []
        self._rejected: list[float] = []
        self._arrivals: list[Arrival] = []
        self._rejected_by = {"requests": 0, "tokens": 0, "concurrency": 0}
        self._max_in_flight = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------- lifecycle
    def start(self) -> LLMStandIn:
        if self._server is not None:
            raise RuntimeError("LLMStandIn already started")
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="llm-standin", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops accepting, cuts the open connections and joins every thread the server started."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.shutdown()  # serve_forever returns: no new connection is accepted
        thread.join(timeout=10)
        with server.connections_lock:
            server.closing = True
            open_connections = list(server.connections)
        for connection in open_connections:  # idle keep-alive connections: wake their threads
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        server.server_close()  # joins the handler threads (block_on_close)
        self._server = None
        self._thread = None

    def __enter__(self) -> LLMStandIn:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("LLMStandIn is not running")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """What ``openai.OpenAI(base_url=...)`` takes."""
        return f"http://127.0.0.1:{self.port}/v1"

    # ------------------------------------------------------------------------------- limits
    def set_limits(self, rpm: Any = _KEEP, tpm: Any = _KEEP, max_concurrent: Any = _KEEP) -> None:
        """Changes the limits now (a tier change); an argument left out keeps its limit, ``None``
        removes it. Requests already counted stay counted."""
        with self._lock:
            self._set_limits_locked(
                self._rpm if rpm is _KEEP else rpm,
                self._tpm if tpm is _KEEP else tpm,
                self._max_concurrent if max_concurrent is _KEEP else max_concurrent,
            )

    def _set_limits_locked(self, rpm: float | None, tpm: float | None, max_concurrent: int | None) -> None:
        for name, value in (("rpm", rpm), ("tpm", tpm), ("max_concurrent", max_concurrent)):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 or None, got {value!r}")
        self._rpm, self._tpm, self._max_concurrent = rpm, tpm, max_concurrent

    @property
    def limits(self) -> dict[str, Any]:
        with self._lock:
            return {"rpm": self._rpm, "tpm": self._tpm, "max_concurrent": self._max_concurrent}

    # ------------------------------------------------------------------------------- counters
    @property
    def ok_count(self) -> int:
        with self._lock:
            return len(self._served)

    @property
    def rejected_count(self) -> int:
        with self._lock:
            return len(self._rejected)

    @property
    def rejected_by(self) -> dict[str, int]:
        """429s by the budget that refused: ``requests``, ``tokens``, ``concurrency``."""
        with self._lock:
            return dict(self._rejected_by)

    @property
    def served_times(self) -> list[float]:
        """Arrival instants (``time.monotonic()``) of the admitted requests, in order."""
        with self._lock:
            return list(self._served)

    @property
    def rejected_times(self) -> list[float]:
        """Arrival instants of the requests answered 429, in order."""
        with self._lock:
            return list(self._rejected)

    @property
    def arrivals(self) -> list[Arrival]:
        """Every completion request (admitted or not), in arrival order."""
        with self._lock:
            return list(self._arrivals)

    @property
    def max_in_flight(self) -> int:
        with self._lock:
            return self._max_in_flight

    def served_per_second(self) -> list[int]:
        """Admitted requests per whole second of the server's ``time.monotonic()`` clock (the fixed
        windows), from the second of the first admission to that of the last."""
        times = self.served_times
        if not times:
            return []
        start = math.floor(times[0])
        counts = [0] * (math.floor(times[-1]) - start + 1)
        for t in times:
            counts[math.floor(t) - start] += 1
        return counts

    # ------------------------------------------------------------------------------- the rules
    def _counted(self, now: float) -> list[_Entry]:
        """Prunes the window and returns the entries that count at ``now``, oldest first."""
        while self._entries and self._entries[0].arrived <= now - _WINDOW_S:
            self._entries.popleft()
        if self.window == "sliding":
            return list(self._entries)
        start = math.floor(now)
        return [e for e in self._entries if e.arrived >= start]

    def _wait_for(self, counted: list[_Entry], now: float, tokens: int) -> tuple[float, str]:
        """How long until one more request costing ``tokens`` fits (0.0: now), and the budget that
        binds (``"requests"`` or ``"tokens"``; ``""`` when it fits)."""
        rps, tps = per_second(self._rpm), per_second(self._tpm)
        wait, reason = 0.0, ""
        if rps is not None and len(counted) + 1 > rps:
            if self.window == "fixed":
                wait = math.floor(now) + _WINDOW_S - now
            else:  # the (len - rps)-th oldest (0-based) must leave: then rps - 1 remain
                wait = counted[len(counted) - rps].arrived + _WINDOW_S - now
            reason = "requests"
        if tps is not None:
            excess = sum(e.tokens for e in counted) + tokens - tps
            token_wait = 0.0
            if excess > 0 and self.window == "fixed":
                token_wait = math.floor(now) + _WINDOW_S - now
            for entry in counted if self.window == "sliding" else ():
                if excess <= 0:
                    break
                excess -= entry.tokens
                token_wait = entry.arrived + _WINDOW_S - now
            if excess > 0:  # larger than the whole budget: never fits; say "a whole window"
                token_wait = max(token_wait, _WINDOW_S)
            if token_wait > wait:
                wait, reason = token_wait, "tokens"
        return max(0.0, wait), reason

    def _budget_headers(self, now: float) -> dict[str, str]:
        counted = self._counted(now)
        headers: dict[str, str] = {}
        for kind, limit, used in (
            ("requests", self._rpm, len(counted)),
            ("tokens", self._tpm, sum(e.tokens for e in counted)),
        ):
            cap = per_second(limit)
            if limit is None or cap is None:
                continue
            if not counted:
                reset = 0.0
            elif self.window == "fixed":
                reset = math.floor(now) + _WINDOW_S - now
            elif self.reset_meaning == "full":
                reset = counted[-1].arrived + _WINDOW_S - now
            else:
                reset = counted[0].arrived + _WINDOW_S - now
            headers[f"x-ratelimit-limit-{kind}"] = str(math.ceil(limit))
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, cap - used))
            headers[f"x-ratelimit-reset-{kind}"] = go_duration(reset)
        return headers

    def _admit(self, tokens: int, stamp: float | None) -> tuple[_Entry | None, float | None, dict[str, str], str]:
        """At arrival: the entry and latency of an admitted request, or (None, wait, headers, reason)."""
        with self._lock:
            now = time.monotonic()
            counted = self._counted(now)
            reason, wait = "", 0.0
            if self._max_concurrent is not None and len(self._in_flight_ends) >= self._max_concurrent:
                reason, wait = "concurrency", max(0.001, min(self._in_flight_ends) - now)
            else:
                wait, reason = self._wait_for(counted, now, tokens)
            if reason:
                self._rejected.append(now)
                self._arrivals.append(Arrival(now, 429, reason, stamp))
                self._rejected_by[reason] += 1
                if self.count_rejected and reason != "concurrency":
                    self._entries.append(_Entry(now, tokens))
                return None, wait, self._budget_headers(now), reason
            entry = _Entry(now, tokens)
            self._entries.append(entry)
            self._served.append(now)
            self._arrivals.append(Arrival(now, 200, "", stamp))
            low, high = self.latency_s
            latency = self._random.uniform(low, high)
            self._in_flight_ends.append(now + latency)
            self._max_in_flight = max(self._max_in_flight, len(self._in_flight_ends))
            return entry, latency, {}, ""

    def _complete(self, entry: _Entry, latency: float, settled_tokens: int) -> dict[str, str]:
        """At the end of an admitted request, BEFORE its answer is written."""
        with self._lock:
            now = time.monotonic()
            self._in_flight_ends.remove(entry.arrived + latency)
            if self.settle_tokens:
                entry.tokens = settled_tokens
            return self._budget_headers(now)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real providers do; every answer has a length
    server: _Server
    timeout = 30  # an idle keep-alive connection ends after this long (stop() cuts them anyway)

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no 40-ms delayed-ACK stalls
        with self.server.connections_lock:
            self.server.connections.add(self.connection)
            if self.server.closing:
                self.connection.shutdown(socket.SHUT_RDWR)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send_json(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-request-id", f"req_{uuid.uuid4().hex[:24]}")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self._headers_buffer.append(b"\r\n" + data)  # headers and body in one write
        self.flush_headers()

    def do_POST(self) -> None:
        standin = self.server.standin
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path.split("?", 1)[0].rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            self._send_json(404, _error(f"no route {self.path}", "invalid_request_error", "not_found"))
            return
        try:
            body = json.loads(raw or b"{}")
            if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
                raise ValueError("'messages' must be a list")
            if body.get("stream"):
                raise ValueError("streaming is not supported by this stand-in")
            max_tokens = body.get("max_tokens", body.get("max_completion_tokens")) or standin.default_max_tokens
            if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
                raise ValueError(f"max_tokens must be a whole number >= 1, got {max_tokens!r}")
        except ValueError as error:
            self._send_json(400, _error(f"bad request: {error}", "invalid_request_error", "invalid_value"))
            return
        prompt = estimate_prompt_tokens(body["messages"])
        try:
            stamp: float | None = float(self.headers["x-stamp"]) if "x-stamp" in self.headers else None
        except ValueError:
            stamp = None
        entry, latency, headers, reason = standin._admit(prompt + max_tokens, stamp)
        if entry is None:
            assert latency is not None
            headers["retry-after"] = str(max(1, math.ceil(latency)))
            headers["retry-after-ms"] = str(max(1, math.ceil(latency * 1000.0)))
            message = f"Rate limit reached ({reason}): please try again in {headers['retry-after-ms']}ms."
            self._send_json(429, _error(message, reason, "rate_limit_exceeded"), headers)
            return
        assert latency is not None
        time.sleep(latency)
        completion = completion_tokens_for(max_tokens, standin.completion_ratio)
        headers = standin._complete(entry, latency, prompt + completion)
        payload = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "stand-in"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "ok " * min(completion, 64)},
                    "logprobs": None,
                    "finish_reason": "length" if completion >= max_tokens else "stop",
                }
            ],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        }
        self._send_json(200, payload, headers)


def _error(message: str, kind: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}
