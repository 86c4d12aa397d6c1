"""CombinedLimiter: concurrency, requests per minute and tokens per minute enforced together.

The guide's precedence (concurrency wins, the RPM is ignored) stays the default; a role opts in
with ``rate_limit_mode: combined``. ``acquire()`` is all-or-nothing: it takes a concurrency slot
first (waiting in FIFO order), then books its request (and tokens) on the rate limiter if that
turn comes within what is left of the timeout. If it does not, the slot is passed on at once (a
slot is never held for a rate turn out of reach) and the caller stands by on the rate limiter,
holding nothing, until a change brings its turn within reach (then it queues for a slot again)
or its timeout passes.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

from omnilimit import _async, _core
from omnilimit._log import logger, shown_timeout
from omnilimit._validate import flag, token_count
from omnilimit.concurrency import ConcurrencyLimiter
from omnilimit.feedback import Headers
from omnilimit.rate import RateLimiter
from omnilimit.spec import is_redis, shared_name


class CombinedLimiter(_async.AsyncLimiting):
    """At most ``max_concurrent`` calls in flight, ``requests_per_minute`` requests per minute
    and, with ``tokens_per_minute``, that many tokens per minute, all at once.

    ``acquire(timeout=120, tokens=0, fail_fast=False) -> bool`` (True as soon as every part is
    had, False only once ``timeout`` has passed; ``fail_fast=True`` answers False at once when the
    rate turn lies beyond the timeout) and ``release(tokens=None)`` (which records the request,
    settles its tokens when given, and frees the slot); ``with limiter:`` raises
    ``LimiterTimeout`` when nothing came in time. ``close()`` closes both parts.
    ``on_rate_limited`` / ``on_response`` pause both parts. ``get_stats()`` merges the two guide
    dictionaries (so code that looks for ``max_concurrent`` treats it as a concurrency limiter).
    Coroutines: ``await acquire_async(timeout=120, tokens=0)``, ``async with limiter:``,
    ``@limiter.limit``.

    ``backend="shm"`` (or ``"shm://NAME"``; NAME defaults to ``name``) shares both parts between
    the processes of the host: the slots in the segment ``NAME.slots``, the requests (and token
    budget) in ``NAME.rate``. Coroutines cannot wait on it yet (the slots' futexes cannot wake an
    event loop: a clear error). A Redis backend (a URL or a client) shares both parts between
    hosts; the Redis options (``on_backend_error``, ``local_fraction``, ``lease_seconds``,
    ``coordination``) go to the parts that take them (``coordination="lease"``: the requests and
    tokens are decided in the process on a leased share; the slots stay in Redis).
    """

    __slots__ = ("_lock", "_over_releases", "_rule", "concurrency", "name", "rate")

    def __init__(
        self,
        max_concurrent: int,
        requests_per_minute: int | float,
        name: str = "default",
        *,
        burst_size: int | None = None,
        tokens_per_minute: int | float | None = None,
        token_burst: int | None = None,
        backend: object = None,
        **options: Any,
    ) -> None:
        slots, requests = self._part_backends(backend, name)
        rate_options = {key: value for key, value in options.items() if key != "lease_seconds"}
        slot_options = {key: value for key, value in options.items() if key != "coordination"}
        self.concurrency = ConcurrencyLimiter(max_concurrent, name=name, backend=slots, **slot_options)
        self.rate = RateLimiter(
            requests_per_minute,
            burst_size,
            provider_name=name,
            tokens_per_minute=tokens_per_minute,
            token_burst=token_burst,
            backend=requests,
            **rate_options,
        )
        self.name = name
        # Each thread's account of its slots here and of its last failed acquire: the native
        # core's over-release rule (thread_account.hpp), the same as ConcurrencyLimiter's.
        self._rule = _core.ReleaseRule()
        self._lock = threading.Lock()
        self._over_releases = 0  # releases ignored here (the concurrency part counts its own)

    @staticmethod
    def _part_backends(backend: object, name: str) -> tuple[Any, Any]:
        """The parts' backends: both in-process, the segments NAME.slots and NAME.rate, or the
        same Redis server (whose keys tell the kinds apart). Raises ValueError for a bad one."""
        if is_redis(backend):
            return backend, backend
        base = shared_name(backend, default=name)
        if base is None:
            return None, None
        return f"shm://{base}.slots", f"shm://{base}.rate"

    @property
    def backend(self) -> str | None:
        """``shm://NAME`` for a limiter shared between the processes of a host (its parts:
        NAME.slots and NAME.rate), the Redis URL (without its password), or None in-process."""
        slots = self.concurrency.backend
        if slots is None or not str(slots).startswith("shm://"):
            return slots
        return str(slots)[: -len(".slots")]

    def acquire(self, timeout: float | None = 120, tokens: int = 0, fail_fast: bool = False) -> bool:
        """Takes a slot, then the request and its tokens, within `timeout` seconds in all (None:
        forever; 0: try once). False once the timeout has passed without every part; then nothing
        is held. Raises LimiterClosed, ValueError for a bad timeout, token count or flag."""
        _, deadline = _async.deadline(timeout)
        token_count(tokens)
        fail_fast = flag("fail_fast", fail_fast)
        while True:
            if not self.concurrency.acquire(timeout=_async.timeout_left(deadline)):
                return self._failed()  # counted and logged by the concurrency part
            try:
                if self.rate._turn_within(tokens, deadline) and self.rate.acquire(
                    timeout=_async.timeout_left(deadline), tokens=tokens, fail_fast=True
                ):
                    return self._took()
            except BaseException:  # KeyboardInterrupt or LimiterClosed during the rate wait
                self.concurrency._give_back()
                raise
            self.concurrency._give_back()  # never hold a slot for a rate turn out of reach
            if not fail_fast and self.rate.store is not None:  # other hosts' changes wake the stand-by
                self.rate.store.listen_for_changes(min(_async.seconds_left(deadline), 1.0))
            if fail_fast or not self.rate._wait_for_turn_within(tokens, deadline):
                self.rate._refused(timeout, fail_fast)
                return self._failed()

    async def acquire_async(self, timeout: float | None = 120, tokens: int = 0, fail_fast: bool = False) -> bool:
        """``acquire()`` for a coroutine, on the same slots and budget: a slot, then the request
        and its tokens, within `timeout` in all; nothing is held when any part fails or the
        coroutine is cancelled."""
        _, deadline = _async.deadline(timeout)
        token_count(tokens)
        fail_fast = flag("fail_fast", fail_fast)
        while True:
            if not await self.concurrency.acquire_async(timeout=_async.timeout_left(deadline)):
                return self._failed()
            try:
                if await self._turn_within_now(tokens, deadline) and await self.rate.acquire_async(
                    timeout=_async.timeout_left(deadline), tokens=tokens, fail_fast=True
                ):
                    return self._took()
            except BaseException:  # cancelled or closed during the rate wait: give the slot back
                self.concurrency._give_back()
                raise
            self.concurrency._give_back()
            if not fail_fast and self.rate.store is not None:  # other hosts' changes wake the stand-by
                wait_s = min(_async.seconds_left(deadline), 1.0)
                await asyncio.get_running_loop().run_in_executor(None, self.rate.store.listen_for_changes, wait_s)
            if fail_fast or not await self._turn_within_async(tokens, deadline):
                self.rate._refused(timeout, fail_fast)
                return self._failed()

    async def _turn_within_now(self, tokens: int, deadline: int) -> bool:
        """``rate._turn_within`` from a coroutine: a Redis store is asked in the loop's default
        executor (a round trip), never on the loop itself."""
        if self.rate.store is None:
            return bool(self.rate._turn_within(tokens, deadline))
        loop = asyncio.get_running_loop()
        return bool(await loop.run_in_executor(None, self.rate._turn_within, tokens, deadline))

    async def _turn_within_async(self, tokens: int, deadline: int) -> bool:
        """Stands by on the rate part until a caller for `tokens` would have its turn by
        `deadline` (True) or the deadline passes (False)."""
        loop = asyncio.get_running_loop()
        waiter = _core.AsyncWait(_async.notifier(loop))
        self.rate._async_stand_by(waiter)
        try:
            while True:
                waiter.future = future = loop.create_future()
                if await self._turn_within_now(tokens, deadline):
                    return True
                if _core.monotonic_ns() >= deadline:
                    return False
                await _async.wake_or_timer(loop, future, deadline)
        finally:
            self.rate._async_stand_by_end(waiter)

    def _took(self) -> bool:
        """Both parts are had: the slot is this thread's to release."""
        self._rule.after_acquire(True)
        return True

    def _failed(self) -> bool:
        """An acquire failed, holding nothing: if this thread holds no slot, its next release() is
        that acquire's ``finally`` (as omnigen writes it), to be ignored."""
        self._rule.after_acquire(False)
        return False

    def close(self) -> None:
        """Closes both parts: every waiter (thread or coroutine) is woken with LimiterClosed, and
        later acquires raise it. Holders may still release."""
        self.concurrency.close()
        self.rate.close()

    @property
    def closed(self) -> bool:
        return bool(self.concurrency.closed or self.rate.closed)

    def _async_release(self) -> None:
        self.release()

    def _timeout_error(self, timeout: object = 120) -> BaseException:
        """What ``with limiter:`` (or a ``limit`` decorator with this timeout) raises after it."""
        return _core.LimiterTimeout(f"Combined limit timeout after {shown_timeout(timeout)}s for {self.name}")

    def release(self, tokens: int | None = None) -> None:
        """Records the request (settling its tokens when given) and frees the slot.

        The concurrency limiter's rule: a release by a thread that holds no slot of this limiter,
        right after its own failed acquire (omnigen releases in a ``finally`` even then), is
        ignored and counted in ``over_release_count`` (logged the first time). Any other release
        frees a slot, even one another thread acquired."""
        held = self._rule.held()
        if self._rule.release_answers_failure():  # (which also counts this release off `held`)
            with self._lock:
                self._over_releases += 1
                first = self._over_releases == 1
            if first:
                logger.warning(
                    "CombinedLimiter %r: release() after a failed acquire, holding no slot, was ignored; "
                    "further ones are counted in over_release_count without being logged",
                    self.name,
                )
            return
        if held == 0 and self.concurrency.active_calls == 0:
            self.concurrency.release()  # no slot anywhere: ignored and counted there, no request recorded
            return
        try:
            self.rate.record_request(tokens=tokens)
        finally:
            self.concurrency.release()

    def record_request(self) -> None:
        """Does nothing: ``release()`` records the request (kept so code written for RateLimiter
        runs unchanged)."""

    def __enter__(self) -> CombinedLimiter:
        if not self.acquire():
            raise _core.LimiterTimeout(f"Combined limit timeout after 120s for {self.name}")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def on_rate_limited(self, retry_after: float | str | None = None, headers: Headers = None) -> float:
        """A 429: pauses both parts once (see ``RateLimiter.on_rate_limited``)."""
        seconds = self.rate.on_rate_limited(retry_after=retry_after, headers=headers)
        self.concurrency.pause(seconds)
        return seconds

    def on_response(self, status: int, headers: Headers = None) -> float:
        """After every response (see ``RateLimiter.on_response``); a pause covers both parts."""
        seconds = self.rate.on_response(status, headers)
        if seconds > 0:
            self.concurrency.pause(seconds)
        return seconds

    def set_max_concurrent(self, max_concurrent: int) -> int:
        return self.concurrency.set_max_concurrent(max_concurrent)

    def set_rate(self, requests_per_minute: int | float) -> None:
        self.rate.set_rate(requests_per_minute)

    def set_burst(self, burst_size: int) -> None:
        self.rate.set_burst(burst_size)

    def set_token_burst(self, token_burst: int) -> None:
        self.rate.set_token_burst(token_burst)

    def set_tokens_per_minute(self, tokens_per_minute: int | float) -> None:
        self.rate.set_tokens_per_minute(tokens_per_minute)

    @property
    def max_concurrent(self) -> int:
        return self.concurrency.max_concurrent

    @property
    def rpm(self) -> int | float:
        return self.rate.rpm

    @property
    def tpm(self) -> int | float | None:
        return self.rate.tpm

    @property
    def active_calls(self) -> int:
        return self.concurrency.active_calls

    @property
    def waiting(self) -> int:
        """Callers waiting now: queued for a slot, or waiting on the rate part (asleep on their
        instant, queued for tokens, or standing by)."""
        return int(self.concurrency.waiting + self.rate.waiting)

    @property
    def over_release_count(self) -> int:
        return self.concurrency.over_release_count + self._over_releases

    def get_current_rpm(self) -> int:
        return self.rate.get_current_rpm()

    def watch_waits(self, hook: Callable[[float], object] | None, threshold_s: float = 0.0) -> None:
        """``watch_waits`` on both parts: ``hook(seconds)`` after a wait for a slot, and after a
        wait for a rate turn, each at least ``threshold_s`` long (see ``RateLimiter.watch_waits``)."""
        self.concurrency.watch_waits(hook, threshold_s)
        self.rate.watch_waits(hook, threshold_s)

    def get_stats(self) -> dict[str, object]:
        """The concurrency keys (``max_concurrent``, ``active_calls``, ``total_requests``,
        ``available_slots``) and the rate keys (``provider``, ``rpm_limit``, ... and, with a token
        budget, ``tpm_limit``, ``current_tpm``); ``total_requests`` counts complete acquires."""
        return {**self.rate.get_stats(), **self.concurrency.get_stats(), "total_requests": self.rate.total_requests}

    def metrics(self) -> dict[str, object]:
        """Both parts' ``metrics()``, prefixed ``concurrency_`` and ``rate_``, plus ``get_stats()``."""
        merged: dict[str, object] = dict(self.get_stats())
        for prefix, part in (("concurrency_", self.concurrency.metrics()), ("rate_", self.rate.metrics())):
            merged.update({prefix + key: value for key, value in part.items()})
        return merged

    def __repr__(self) -> str:
        budget = f", tokens_per_minute={self.rate.tpm!r}" if self.rate.tpm is not None else ""
        return (
            f"CombinedLimiter(max_concurrent={self.max_concurrent}, requests_per_minute={self.rate.rpm!r}"
            f"{budget}, name={self.name!r})"
        )
