"""A stand-in LLM provider that enforces rate limits the way real ones do, for acceptance tests.

``LLMStandIn`` is a plain-HTTP server on 127.0.0.1 (an ephemeral port), standard library only,
that speaks enough of two APIs for the real SDKs (``llm_wire`` shapes what it says):

- OpenAI's ``POST /v1/chat/completions``, for ``openai.OpenAI(base_url=provider.base_url)``;
- Anthropic's ``POST /v1/messages``, for ``anthropic.Anthropic(base_url=provider.anthropic_url)``;

each answered as JSON, or streamed as server-sent events with ``"stream": true``::

    with LLMStandIn(rpm=1200, tpm=240_000, max_concurrent=64) as provider:
        client = openai.OpenAI(base_url=provider.base_url, api_key="x", max_retries=0)
        ...
    provider.ok_count, provider.rejected_count, provider.served_per_second()

The rules are the same for both APIs; only the names of the headers and the shapes differ.

What it enforces, at the moment a request has been read (its *arrival*), under one lock:

- **Requests per minute ``rpm`` over 1-second slices**: a per-minute limit L admits at most
  ``ceil(L / 60)`` requests in any 1-s window. ``window="sliding"`` (the default) counts the
  admitted requests that arrived in the last second, ``(now - 1 s, now]``, so the cap holds for
  *every* 1-s interval: the stricter reading, and the closer one to providers. ``window="fixed"``
  counts the requests of the current whole second of the server's ``time.monotonic()`` clock
  (``[floor(now), floor(now) + 1)``), which lets up to twice the cap through across a boundary.
  ``window="bucket"`` is a token bucket per budget instead, as Anthropic documents its limits:
  it holds at most the cap, refills continuously at ``L / 60`` per second, and tokens given back
  at a request's end (``settle_tokens``) go back into it at once, up to full; a 2xx's
  ``remaining`` is what it holds, its ``reset`` the time until it is full.
- **Tokens per minute ``tpm`` over the same slices** (at most ``ceil(tpm / 60)`` tokens in any 1-s
  window). A request costs ``prompt + max_tokens`` tokens, charged at its arrival (as OpenAI counts
  ``max_tokens`` up front): ``prompt`` is ``llm_wire.prompt_tokens``, ``len(text) // 4`` of all
  message contents (and Anthropic's ``system``) and at least 1, and ``max_tokens`` is the request's
  ``max_tokens`` (or ``max_completion_tokens``; ``default_max_tokens`` when absent). The answer
  reports ``usage`` with ``completion_tokens = completion_tokens_for(max_tokens, completion_ratio)``
  (deterministic: ``max(1, floor(max_tokens * completion_ratio))``). With ``settle_tokens=True``
  (the default) the provider then settles like the client does: when the request completes, its
  entry in the window drops from ``prompt + max_tokens`` to ``prompt + completion``; with ``False``
  it keeps counting ``max_tokens`` (a client must then not give the difference back).
- **At most ``max_concurrent`` requests in flight**. A request is in flight from its arrival until
  just BEFORE its answer (a stream: its last events) is written: a client that gets its answer,
  releases its slot and sends the next request at once must never be counted twice.

``None`` for a limit means "no such limit". A rejected request is answered at once, with **429**
and the API's error body, and does not count against any budget unless
``count_rejected=True`` (OpenAI says failed requests count too; off by default, so that a test's
429s measure the client alone). Every admitted request sleeps a simulated latency, uniform in
``latency_s = (low, high)`` from a seeded generator, while it holds its concurrency slot.

Headers, on every answer (2xx and 429; a stream's are those of its admission), as OpenAI names
them (Anthropic's ``anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}`` say the same,
the reset as an RFC 3339 instant, and its 429 has ``retry-after`` alone):

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
``served_per_second()`` (per whole second of the server's clock), ``charges`` (each completed
request's final charge against the token budget), ``max_in_flight``, and
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

from llm_wire import DIALECTS, Budget, Dialect, Request

__all__ = ["LLMStandIn", "completion_tokens_for", "per_second"]

_KEEP: Any = object()  # set_limits(): "leave this limit as it is"
_WINDOW_S = 1.0


def completion_tokens_for(max_tokens: int, ratio: float) -> int:
    """The completion the stand-in "generates" for ``max_tokens``: ``max(1, floor(max_tokens * ratio))``."""
    return max(1, min(max_tokens, math.floor(max_tokens * ratio)))


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
        if window not in ("sliding", "fixed", "bucket"):
            raise ValueError(f"window must be 'sliding', 'fixed' or 'bucket', got {window!r}")
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
        self._levels: dict[str, float] = {}  # window="bucket": what each bucket holds, at _levels_at
        self._levels_at = time.monotonic()
        self._rpm: float | None = None
        self._tpm: float | None = None
        self._max_concurrent: int | None = None
        self._set_limits_locked(rpm, tpm, max_concurrent)
        self._entries: deque[_Entry] = deque()  # admitted arrivals within the last window, oldest first
        self._in_flight_ends: list[float] = []  # expected end of each request in flight
        self._served: list[float] = []
        self._charges: list[_Entry] = []  # completed requests: arrival and final charge
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

    @property
    def anthropic_url(self) -> str:
        """What ``anthropic.Anthropic(base_url=...)`` takes."""
        return f"http://127.0.0.1:{self.port}"

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
        self._refill(time.monotonic())
        self._rpm, self._tpm, self._max_concurrent = rpm, tpm, max_concurrent
        # A new budget starts full, a smaller one holds no more than it, a removed one is gone.
        self._levels = {kind: min(cap, self._levels.get(kind, cap)) for kind, cap in self._caps().items()}

    def _caps(self) -> dict[str, int]:
        """Each enforced budget's cap per 1-s window (window="bucket": what its bucket holds when full)."""
        caps = {"requests": per_second(self._rpm), "tokens": per_second(self._tpm)}
        return {kind: cap for kind, cap in caps.items() if cap is not None}

    def _refill(self, now: float) -> None:
        """window="bucket": each bucket refilled at its per-minute limit / 60 per second, up to its cap."""
        elapsed, self._levels_at = max(0.0, now - self._levels_at), now
        limits = {"requests": self._rpm, "tokens": self._tpm}
        for kind, cap in self._caps().items():
            limit = limits[kind]
            assert limit is not None
            self._levels[kind] = min(float(cap), self._levels[kind] + elapsed * limit / 60.0)

    def _bucket_wait(self, tokens: int) -> tuple[float, str]:
        """window="bucket": how long until one request and ``tokens`` are in the buckets (0.0: now)."""
        wait, reason = 0.0, ""
        limits = {"requests": self._rpm, "tokens": self._tpm}
        for kind, need in (("requests", 1), ("tokens", tokens)):
            limit = limits[kind]
            if limit is None:
                continue
            missing = need - self._levels[kind]
            kind_wait = _WINDOW_S if need > self._caps()[kind] else missing * 60.0 / limit
            if missing > 0 and kind_wait > wait:
                wait, reason = kind_wait, kind
        return wait, reason

    def _take(self, tokens: int) -> None:
        if self.window == "bucket":
            for kind, need in (("requests", 1), ("tokens", tokens)):
                if kind in self._levels:
                    self._levels[kind] -= need

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
    def charges(self) -> list[tuple[float, int]]:
        """The completed requests' arrival instants and what each finally counts against the token
        budget (``prompt + completion`` with ``settle_tokens``, else ``prompt + max_tokens``), in
        completion order."""
        with self._lock:
            return [(e.arrived, e.tokens) for e in self._charges]

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

    def _budgets(self, now: float) -> list[Budget]:
        """The enforced budgets as they stand at ``now`` (what an answer's headers report)."""
        counted = self._counted(now)
        budgets: list[Budget] = []
        for kind, limit, used in (
            ("requests", self._rpm, len(counted)),
            ("tokens", self._tpm, sum(e.tokens for e in counted)),
        ):
            cap = per_second(limit)
            if limit is None or cap is None:
                continue
            if self.window == "bucket":
                level = self._levels[kind]
                budgets.append(Budget(kind, limit, max(0, math.floor(level)), (cap - level) * 60.0 / limit))
                continue
            if not counted:
                reset = 0.0
            elif self.window == "fixed":
                reset = math.floor(now) + _WINDOW_S - now
            elif self.reset_meaning == "full":
                reset = counted[-1].arrived + _WINDOW_S - now
            else:
                reset = counted[0].arrived + _WINDOW_S - now
            budgets.append(Budget(kind, limit, max(0, cap - used), reset))
        return budgets

    def _admit(self, tokens: int, stamp: float | None) -> tuple[_Entry | None, float, list[Budget], str]:
        """At arrival: ``(entry, latency, budgets, "")`` for an admitted request, ``(None, wait,
        budgets, reason)`` for a refused one."""
        with self._lock:
            now = time.monotonic()
            counted = self._counted(now)
            self._refill(now)
            reason, wait = "", 0.0
            if self._max_concurrent is not None and len(self._in_flight_ends) >= self._max_concurrent:
                reason, wait = "concurrency", max(0.001, min(self._in_flight_ends) - now)
            elif self.window == "bucket":
                wait, reason = self._bucket_wait(tokens)
            else:
                wait, reason = self._wait_for(counted, now, tokens)
            if reason:
                self._rejected.append(now)
                self._arrivals.append(Arrival(now, 429, reason, stamp))
                self._rejected_by[reason] += 1
                if self.count_rejected and reason != "concurrency":
                    self._entries.append(_Entry(now, tokens))
                    self._take(tokens)
                return None, wait, self._budgets(now), reason
            self._take(tokens)
            entry = _Entry(now, tokens)
            self._entries.append(entry)
            self._served.append(now)
            self._arrivals.append(Arrival(now, 200, "", stamp))
            low, high = self.latency_s
            latency = self._random.uniform(low, high)
            self._in_flight_ends.append(now + latency)
            self._max_in_flight = max(self._max_in_flight, len(self._in_flight_ends))
            return entry, latency, self._budgets(now), ""

    def _complete(self, entry: _Entry, latency: float, settled_tokens: int) -> list[Budget]:
        """At the end of an admitted request, BEFORE the last of its answer is written."""
        with self._lock:
            now = time.monotonic()
            self._in_flight_ends.remove(entry.arrived + latency)
            self._refill(now)
            if self.settle_tokens:
                cap = self._caps().get("tokens")
                if self.window == "bucket" and cap is not None:  # the difference goes back in, up to full
                    self._levels["tokens"] = min(float(cap), self._levels["tokens"] + entry.tokens - settled_tokens)
                entry.tokens = settled_tokens
            self._charges.append(entry)
            return self._budgets(now)


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

    def _head(self, status: int, content_type: str, headers: dict[str, str], length: int | None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if length is None:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(length))
        self.send_header("x-request-id", f"req_{uuid.uuid4().hex[:24]}")
        for name, value in headers.items():
            self.send_header(name, value)

    def _send_json(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self._head(status, "application/json", headers or {}, len(data))
        self._headers_buffer.append(b"\r\n" + data)  # headers and body in one write
        self.flush_headers()

    def _send_chunks(self, events: list[bytes]) -> None:
        data = b"".join(events)
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if data else b"0\r\n\r\n")
        self.wfile.flush()

    def do_POST(self) -> None:
        standin = self.server.standin
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        path = self.path.split("?", 1)[0].rstrip("/")
        dialect = next((d for d in DIALECTS if path in d.paths), None)
        if dialect is None:
            self._send_json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
            return
        try:
            request = dialect.parse(json.loads(raw or b"{}"), standin.default_max_tokens)
        except ValueError as error:
            self._send_json(400, dialect.error(f"bad request: {error}", "invalid_request_error"))
            return
        try:
            stamp: float | None = float(self.headers["x-stamp"]) if "x-stamp" in self.headers else None
        except ValueError:
            stamp = None
        entry, latency, budgets, reason = standin._admit(request.prompt + request.max_tokens, stamp)
        if entry is None:
            headers = {**dialect.budget_headers(budgets), **dialect.retry_headers(latency)}
            message = f"Rate limit reached ({reason}): please try again in {math.ceil(latency * 1000)}ms."
            self._send_json(429, dialect.error(message, reason), headers)
            return
        completion = completion_tokens_for(request.max_tokens, standin.completion_ratio)
        if request.stream:
            self._stream(standin, dialect, request, entry, latency, budgets, completion)
            return
        time.sleep(latency)
        budgets = standin._complete(entry, latency, request.prompt + completion)
        self._send_json(200, dialect.answer(request, completion), dialect.budget_headers(budgets))

    def _stream(
        self,
        standin: LLMStandIn,
        dialect: Dialect,
        request: Request,
        entry: _Entry,
        latency: float,
        budgets: list[Budget],
        completion: int,
    ) -> None:
        """A streamed answer: the headers (the budgets at admission) and the first events at once,
        the rest after the latency; the request leaves the concurrency count before they are written."""
        first, last = dialect.events(request, completion)
        try:
            self._head(200, "text/event-stream", dialect.budget_headers(budgets), None)
            self.end_headers()
            self._send_chunks(first)
        finally:
            time.sleep(latency)
            standin._complete(entry, latency, request.prompt + completion)
        self._send_chunks(last)
        self._send_chunks([])
