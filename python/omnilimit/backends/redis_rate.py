"""RedisRateLimiter: a RateLimiter whose bucket lives in Redis, shared by every process and host
that names the same limiter on the same server.

``RateLimiter(..., backend="redis://host:6379/0")`` (or a redis-py client) builds one. Each
``acquire()`` is one round trip: the bucket (``redis_bucket.RedisBucket``, the store) books the
next instant on the server's clock and returns the wait, which the caller sleeps here, on its own
clock.
A booking whose wait exceeds the caller's timeout is not made: the caller stands by in the native
core's ``Standby`` until its deadline, woken by this process's changes and, through the
limiter's ``changed`` channel (``redis_changes``), by every host's; then it looks again. The
native core underneath is also the in-process limiter of the ``local`` outage policy (at
``local_fraction`` of the limit), and keeps this process's pause and counters for ``metrics()``.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from typing import Any

from omnilimit import _async, _core
from omnilimit._validate import flag, positive_rate, token_count, whole_number
from omnilimit.backends.redis_bucket import RedisBucket, interval_us, text
from omnilimit.backends.redis_changes import ChangeFeed
from omnilimit.backends.redis_link import (
    BackendDown,
    OneRead,
    RedisLink,
    WithBlock,
)
from omnilimit.backends.redis_outage import OutagePolicy
from omnilimit.backends.redis_waits import WaitRecorder
from omnilimit.pause import sleep_until
from omnilimit.rate import RateLimiter
from omnilimit.spec import DEFAULT_BURST, check_policy, name_for_key


class RedisRateLimiter(WithBlock, RateLimiter):
    """A ``RateLimiter`` whose budget lives in Redis: every host naming the same
    ``provider_name`` on the same server shares one GCRA bucket (the latest configuration
    written wins, as with shared memory). Made by ``RateLimiter(..., backend=URL or client)``.

    ``on_backend_error`` (``closed`` | ``open`` | ``local``) and ``local_fraction`` say what happens
    while Redis is unreachable (``redis_link``). ``get_stats()`` and the counters read the shared
    state: ``current_rpm`` counts the admissions of every host whose instant fell in the last 60 s
    (``record_request()`` adds nothing to it: admissions are counted where they are decided, in
    the same round trip). While Redis is unreachable, ``get_stats()`` shows this process's local
    view with a ``backend_error`` key. Not with a token budget. Every method is thread-safe.
    """

    __slots__ = (
        "_bucket",
        "_denied",
        "_feed",
        "_fraction",
        "_link",
        "_outage",
        "_reads",
        "_sleeping",
        "_state_lock",
        "_waits",
    )

    def __init__(
        self,
        requests_per_minute: int | float = 60,
        burst_size: int | None = None,
        provider_name: str = "default",
        *,
        tokens_per_minute: int | float | None = None,
        token_burst: int | None = None,
        backend: object = None,
        on_backend_error: str = "closed",
        local_fraction: float | None = None,
    ) -> None:
        if tokens_per_minute is not None or token_burst is not None:
            raise ValueError("a token budget cannot be shared through Redis yet: drop tokens_per_minute or the backend")
        rpm = positive_rate("requests_per_minute", requests_per_minute)
        burst = DEFAULT_BURST if burst_size is None else whole_number("burst_size", burst_size)
        policy, fraction = check_policy(on_backend_error, local_fraction)
        # The native core is the local fallback, at its fraction of the limit.
        super().__init__(rpm * (fraction or 1.0), burst, provider_name)
        self._fraction = fraction
        label = f"RateLimiter {self.provider_name!r}"
        self._link = RedisLink(backend, label)
        self._bucket = RedisBucket(self._link, name_for_key(self.provider_name), requests_per_minute, burst, label)
        self._outage = OutagePolicy(policy, fraction, self._link)
        self._reads = OneRead(self._bucket.snapshot)
        me = weakref.ref(self)
        self._feed = ChangeFeed(self._link, self._bucket.channel, lambda: _notify(me))
        weakref.finalize(self, self._feed.stop)
        self._state_lock = threading.Lock()
        self._sleeping = 0
        self._denied = 0
        self._waits = WaitRecorder()
        self._link.on_recovery.append(self._bucket.configure_pending)
        self._bucket.configure(announce=True)

    # ---- where the state lives -----------------------------------------------------------------

    @property
    def backend(self) -> str:
        """Where the state lives (the URL without its password)."""
        return self._link.where

    @property
    def on_backend_error(self) -> str:
        return self._outage.name

    @property
    def backend_available(self) -> bool:
        """False while an outage is open (the policy applies)."""
        return not self._link.down

    # ---- acquiring ------------------------------------------------------------------------------

    def acquire(self, timeout: float | None = 60, tokens: int = 0, fail_fast: bool = False) -> bool:
        """Takes a request from the shared bucket, waiting up to ``timeout`` seconds (``None``:
        forever, ``0``: no wait). One round trip books the instant. True as soon as the caller may
        go; False once ``timeout`` has passed: a turn beyond it books nothing, and the caller
        stands by until a change on any host brings it within reach, or until the timeout
        (``fail_fast=True``: False at once instead). While Redis is unreachable, the policy
        decides (``closed``: wait for it until the timeout, then False). Raises LimiterClosed."""
        timeout_ns, deadline = _async.deadline(timeout)
        token_count(tokens)
        fail_fast = flag("fail_fast", fail_fast)
        started = time.monotonic()
        while True:
            if self.closed:
                raise _core.LimiterClosed("the limiter is closed")
            seen = self._standby_generation()  # before the look: a change after it ends the stand-by
            last_look = fail_fast or _core.monotonic_ns() >= deadline
            try:
                booked, wait_s, go_at = self._bucket.book(deadline, last_look)
            except BackendDown:
                decided = self._outage.answer(self, deadline, timeout, self._take_local, _nothing_to_record)
                if decided is None:
                    continue
                return decided
            if booked:
                if wait_s > 0:
                    self._sleep(wait_s, go_at)
                self._waits.record(time.monotonic() - started)
                return True
            if last_look:
                return self._give_up(timeout, timeout_ns, fail_fast)
            if self._feed.listen(min(_async.seconds_left(deadline), 1.0)):
                continue  # subscribed just now: a change may have been published before, look again
            self._count_waiting(1)
            try:
                self._stand_by(seen, deadline)
            finally:
                self._count_waiting(-1)

    def _count_waiting(self, delta: int) -> None:
        with self._state_lock:
            self._sleeping += delta

    def _sleep(self, wait_s: float, go_at: str) -> None:
        """Sleeps until a booked instant; close() or Ctrl-C gives the booking back and raises."""
        self._count_waiting(1)
        try:
            sleep_until(self, _core.monotonic_ns() + int(wait_s * 1e9))
        except BaseException:  # interrupted or closed: give the booking back if its time has not come
            self._refund(go_at)
            raise
        finally:
            self._count_waiting(-1)

    def _refund(self, go_at: str) -> None:
        self._bucket.refund(go_at)
        self._notify_standing()  # this process's callers standing by look again at once

    def _give_up(self, timeout: object, timeout_ns: int, denied: bool = False) -> bool:
        if timeout_ns == 0 or denied:
            with self._state_lock:
                self._denied += 1
        else:
            self._on_timeout(timeout)
        return False

    def _take_local(self, timeout: float | None) -> bool:
        """The ``local`` policy's fallback: the native core, at its fraction of the limit."""
        return super().acquire(timeout)

    async def _take_local_async(self, timeout: float | None) -> bool:
        return await super().acquire_async(timeout)

    async def acquire_async(self, timeout: float | None = 60, tokens: int = 0, fail_fast: bool = False) -> bool:
        """``acquire()`` for a coroutine: the round trip runs in the loop's default executor and
        the waits are the loop's timer. The same contract; cancelled while waiting, the booking is
        given back."""
        timeout_ns, deadline = _async.deadline(timeout)
        token_count(tokens)
        fail_fast = flag("fail_fast", fail_fast)
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        waiter: _core.AsyncWait | None = None  # set while standing by
        try:
            while True:
                if self.closed:
                    raise _core.LimiterClosed("the limiter is closed")
                future = None
                if waiter is not None:
                    waiter.future = future = loop.create_future()  # before the look
                last_look = fail_fast or _core.monotonic_ns() >= deadline
                try:
                    booked, wait_s, go_at = await loop.run_in_executor(None, self._bucket.book, deadline, last_look)
                except BackendDown:
                    decided = await self._outage.answer_async(
                        self, deadline, timeout, self._take_local_async, _nothing_to_record
                    )
                    if decided is None:
                        continue
                    return decided
                if booked:
                    if wait_s > 0:
                        await self._sleep_async(loop, wait_s, go_at)
                    self._waits.record(time.monotonic() - started)
                    return True
                if last_look:
                    return self._give_up(timeout, timeout_ns, fail_fast)
                if not self._feed.listening.is_set():
                    await loop.run_in_executor(None, self._feed.listen, min(_async.seconds_left(deadline), 1.0))
                    continue
                if waiter is None or future is None:  # registered from now on: look again first
                    waiter = _core.AsyncWait(_async.notifier(loop))
                    self._async_stand_by(waiter)
                    continue
                self._count_waiting(1)
                try:
                    await _async.wake_or_timer(loop, future, deadline)
                finally:
                    self._count_waiting(-1)
        finally:
            if waiter is not None:
                self._async_stand_by_end(waiter)

    async def _sleep_async(self, loop: asyncio.AbstractEventLoop, wait_s: float, go_at: str) -> None:
        until = _core.monotonic_ns() + int(wait_s * 1e9)
        self._count_waiting(1)
        try:
            while _core.monotonic_ns() < until:
                await _async.stand_by(self, until)  # raises LimiterClosed
        except BaseException:  # cancelled or closed: give the booking back
            await asyncio.shield(loop.run_in_executor(None, self._refund, go_at))
            raise
        finally:
            self._count_waiting(-1)

    def close(self) -> None:
        """Wakes every caller of this process (asleep on a booking, standing by, or waiting out an
        outage) with LimiterClosed, giving their bookings back; later acquires raise it. Other
        processes and hosts sharing the limiter stay open."""
        super().close()
        self._feed.stop()

    # ---- changes every host follows ---------------------------------------------------------------

    def set_rate(self, requests_per_minute: int | float) -> None:
        """Changes the shared rate (every host follows; what is owed is converted to the new
        pace). While Redis is unreachable it is written when Redis returns."""
        rpm = positive_rate("requests_per_minute", requests_per_minute)
        RateLimiter.set_rate(self, rpm * (self._fraction or 1.0))  # the local fallback
        self._bucket.rpm = requests_per_minute
        self._bucket.configure()

    def set_burst(self, burst_size: int) -> None:
        """Changes the shared burst (every host follows)."""
        burst = whole_number("burst_size", burst_size)
        RateLimiter.set_burst(self, burst)
        self._bucket.burst = burst
        self._bucket.configure()

    def limit_available(self, requests: int) -> None:
        """Keeps at most ``requests`` available now, for every host (a provider's remaining budget)."""
        super().limit_available(requests)  # checks it; caps the local fallback
        self._bucket.cap(requests)  # unreachable: the local fallback is capped all the same

    def pause(self, seconds: float) -> float:
        """Nobody, on any host, goes for ``seconds`` (a provider's 429); then requests resume at the
        paced rate. Returns the seconds until this limiter may go again."""
        local = super().pause(seconds)
        shared = self._bucket.pause(seconds)
        return local if shared is None else max(local, shared)

    # ---- the shared state ------------------------------------------------------------------------

    def _shared(self) -> list[Any] | None:
        """RATE_STATS: one round trip (none inside ``metrics()``, which reads once for all)."""
        return self._reads.get()

    @property
    def rpm(self) -> int | float:
        return self._bucket.rpm

    @property
    def interval_ns(self) -> int:
        return int(interval_us(self._bucket.rpm) * 1000)

    @property
    def burst(self) -> int:
        return self._bucket.burst

    @property
    def total_requests(self) -> int:
        """Admissions by every host (while Redis is unreachable: this process's during the outage)."""
        shared = self._shared()
        return int(shared[3]) if shared is not None else self._outage.admitted

    @property
    def blocked_count(self) -> int:
        """Refusals by every host (while Redis is unreachable: this process's during the outage)."""
        shared = self._shared()
        return int(shared[4]) if shared is not None else self._outage.denied

    @property
    def denied_count(self) -> int:
        """This process's ``acquire(timeout=0)`` refusals."""
        return self._denied

    @property
    def waiting(self) -> int:
        """This process's callers asleep on a booking now."""
        return self._sleeping

    def wait_quantile(self, q: float) -> float:
        """The q-quantile of this process's latest admitted waits (seconds, exact)."""
        return self._waits.quantile(q)

    def wait_max(self) -> float:
        """The longest wait of this process's admitted callers (seconds, exact)."""
        return self._waits.maximum()

    def tokens_available(self, now_ns: int | None = None) -> int:
        """Requests that could go at once now, for any host (``now_ns`` is ignored: Redis's clock decides)."""
        shared = self._shared()
        return int(shared[0]) if shared is not None else super().tokens_available()

    def get_current_rpm(self) -> int:
        """Admissions by every host in the last 60 seconds."""
        shared = self._shared()
        return int(shared[5]) if shared is not None else super().get_current_rpm()

    def predicted_wait(self, tokens: int = 0) -> float:
        shared = self._shared()
        return int(shared[6]) / 1e6 if shared is not None else super().predicted_wait()

    def get_stats(self) -> dict[str, object]:
        """The guide's keys, read from Redis in one round trip (every host's numbers). While Redis
        is unreachable: this process's local view, plus ``backend_error``."""
        shared = self._shared()
        if shared is None:
            stats = super().get_stats()
            stats["backend_error"] = self._link.last_error
            return stats
        current = int(shared[5])
        interval = float(text(shared[1]))
        mine = interval_us(self._bucket.rpm)
        shown: int | float = self._bucket.rpm if abs(interval - mine) <= 1e-9 * mine else _plain(60e6 / interval)
        return {
            "provider": self.provider_name,
            "rpm_limit": shown,
            "current_rpm": current,
            "tokens_available": int(shared[0]),
            "total_requests": int(shared[3]),
            "blocked_count": int(shared[4]),
            "utilization": current / float(shown) * 100.0,
        }

    def metrics(self) -> dict[str, object]:
        """``RateLimiter.metrics()``, shared where Redis holds it, plus ``backend``,
        ``backend_available``, ``backend_outages`` and ``outage_admitted`` / ``outage_denied``
        (this process's decisions taken by the policy). Every shared number comes from one read
        of Redis."""
        with self._reads.held():
            merged = super().metrics()
        return {
            **merged,
            "backend": self._link.where,
            "backend_available": not self._link.down,
            "backend_outages": self._link.outages,
            "outage_admitted": self._outage.admitted,
            "outage_denied": self._outage.denied,
        }

    def __repr__(self) -> str:
        return (
            f"RateLimiter(requests_per_minute={self._bucket.rpm!r}, burst_size={self._bucket.burst}, "
            f"provider_name={self.provider_name!r}, backend={self._link.where!r}, "
            f"on_backend_error={self._outage.name!r})"
        )


def _plain(rpm: float) -> int | float:
    """Another host's rate as a user would write it: 1200, not 1200.0000000001."""
    rounded = float(f"{rpm:.9g}")
    return int(rounded) if rounded.is_integer() else rounded


def _nothing_to_record(how: str) -> None:
    """A rate limiter's admission by the outage policy holds nothing to give back."""


def _notify(limiter: weakref.ref[RedisRateLimiter]) -> None:
    """The feed heard of a change: the limiter's callers standing by look again."""
    found = limiter()
    if found is not None:
        found._notify_standing()
