"""RedisRateStore: the store of a RateLimiter whose bucket lives in Redis, shared by every process
and host that names the same limiter on the same server.

``RateLimiter(..., backend="redis://host:6379/0")`` (or a redis-py client) composes one
(``omnilimit.store`` says what a store is). Each ``acquire()`` is one round trip: the bucket
(``redis_bucket.RedisBucket``) books the next instant on the server's clock and returns the wait,
which the caller sleeps here, on its own clock. A booking whose wait exceeds the caller's timeout
is not made: the caller stands by in the native core's ``Standby`` until its deadline, woken by
this process's changes and, through the limiter's ``changed`` channel (``redis_changes``), by
every host's; then it looks again. The limiter's native core is also the in-process limiter of
the ``local`` outage policy (at ``local_fraction`` of the limit), and keeps this process's pause
and counters for ``metrics()``.

A booked instant is not final. A new rate, set here or on another host, moves every instant still
to come to the new pace (the script converts what is owed; each sleeper follows the same move, in
order: ``redis_bucket.Booking``). A pause (a provider's 429) declared on any host voids the instants
that fall inside it: a caller that wakes at its instant while the pause is in effect books again
(after the pause, at the pace), as the in-process limiter's callers do. Other hosts' pauses and
rates reach this process through the ``changed`` channel.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable
from typing import Any

from omnilimit import _async, _core
from omnilimit.backends.redis_bucket import Booking, Move, RedisBucket, interval_us, text
from omnilimit.backends.redis_changes import ChangeFeed
from omnilimit.backends.redis_link import BackendDown, OneRead, RedisLink
from omnilimit.backends.redis_outage import OutagePolicy
from omnilimit.backends.redis_waits import ProcessWaits
from omnilimit.spec import check_policy, name_for_key


class RedisRateStore:
    """The budget of a ``RateLimiter`` shared through Redis: every host naming the same
    ``provider_name`` on the same server shares one GCRA bucket (the latest configuration
    written wins, as with shared memory).

    ``on_backend_error`` (``closed`` | ``open`` | ``local``) and ``local_fraction`` say what happens
    while Redis is unreachable (``redis_outage``). The figures are the shared state's:
    ``current_rpm`` counts the admissions of every host whose instant fell in the last 60 s
    (``record_request()`` adds nothing to it: admissions are counted where they are decided, in
    the same round trip). While Redis is unreachable, ``get_stats()`` shows this process's local
    view with a ``backend_error`` key. Not with a token budget. Every method is thread-safe.
    """

    __slots__ = (
        "__weakref__",
        "_bucket",
        "_changes",
        "_feed",
        "_limiter",
        "_link",
        "_mine",
        "_moves",
        "_outage",
        "_reads",
        "local_fraction",
        "name",
    )

    def __init__(
        self,
        backend: object,
        name: str,
        rpm: int | float,
        burst: int,
        *,
        on_backend_error: str = "closed",
        local_fraction: float | None = None,
    ) -> None:
        policy, self.local_fraction = check_policy(on_backend_error, local_fraction)
        self.name = name
        label = f"RateLimiter {name!r}"
        self._link = RedisLink(backend, label)
        self._bucket = RedisBucket(self._link, name_for_key(name), rpm, burst, label)
        self._outage = OutagePolicy(policy, self.local_fraction, self._link)
        self._reads = OneRead(self._bucket.snapshot)
        self._limiter: weakref.ref[Any] | None = None
        me = weakref.ref(self)
        self._moves: dict[float, Move] = {}  # the latest moves of the instants by new rates, by their cfg
        self._changes = 0  # bumped with each new move: the sleepers look at their instants again
        self._feed = ChangeFeed(self._link, self._bucket.channel, lambda message: _notify(me, message))
        weakref.finalize(self, self._feed.stop)
        self._mine = ProcessWaits()  # this process's callers asleep or standing by, and waits
        self._link.on_recovery.append(self._bucket.configure_pending)
        self._moved(self._bucket.configure(announce=True))

    def bind(self, limiter: Any) -> None:
        self._limiter = weakref.ref(limiter)

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

    @property
    def rpm(self) -> int | float:
        """The rate this process configured (another host may have written another since)."""
        return self._bucket.rpm

    # ---- acquiring ------------------------------------------------------------------------------

    def acquire(self, limiter: Any, timeout: float | None = 60, tokens: int = 0, fail_fast: bool = False) -> bool:
        """Takes a request from the shared bucket, waiting up to ``timeout`` seconds (``None``:
        forever, ``0``: no wait). One round trip books the instant. True as soon as the caller may
        go; False once ``timeout`` has passed: a turn beyond it books nothing, and the caller
        stands by until a change on any host brings it within reach, or until the timeout
        (``fail_fast=True``: False at once instead). While Redis is unreachable, the policy
        decides (``closed``: wait for it until the timeout, then False). Raises LimiterClosed."""
        _, deadline = _async.deadline(timeout)
        started = time.monotonic()
        while True:
            seen = limiter._standby_generation()  # before the look: a change (or close()) after it ends the stand-by
            if limiter.closed:
                raise _core.LimiterClosed("the limiter is closed")
            last_look = fail_fast or _core.monotonic_ns() >= deadline
            try:
                wait_s, booking = self._bucket.book(deadline, last_look)
            except BackendDown:
                decided = self._outage.answer(limiter, deadline, limiter._acquire_here, _nothing_to_record)
                if decided is None:
                    continue
                return decided
            if booking is not None:
                if wait_s > 0:
                    if self._feed.listen(min(wait_s, 1.0)):  # other hosts' pauses and rates reach the sleepers
                        self._catch_up(limiter)
                    if not self._sleep(limiter, booking):
                        continue  # the instant fell inside a pause: book again
                self._mine.admitted(started)
                return True
            if last_look:
                return False
            if self._feed.listen(min(_async.seconds_left(deadline), 1.0)):
                continue  # subscribed just now: a change may have been published before, look again
            with self._mine.waiting():
                limiter._stand_by(seen, deadline)

    def _sleep(self, limiter: Any, booking: Booking) -> bool:
        """Sleeps until a booked instant, following the moves of new rates meanwhile: True when the
        caller may go; False when a pause is in effect at the instant (the provider wants nothing
        before its end; the instant is uncounted and the caller books again). close() or Ctrl-C
        gives the booking back and raises."""
        changes = -1
        instant = booking.go_at_us
        until = 0
        with self._mine.waiting():
            try:
                while True:
                    seen = limiter._standby_generation()  # before the looks: a change (or close()) after them wakes it
                    if limiter.closed:
                        raise _core.LimiterClosed("the limiter is closed")
                    if changes != self._changes:
                        changes, instant, until = self._followed(booking)
                    if _core.monotonic_ns() >= until:
                        break
                    limiter._stand_by(seen, until)
            except BaseException:  # interrupted or closed: give the booking back if its time has not come
                self._refund(limiter, instant)
                raise
        return self._not_paused(limiter, instant)

    def _catch_up(self, limiter: Any) -> None:
        """Just subscribed: follows what was published before (the latest pause and move of a new
        rate), which this process's sleepers would otherwise miss."""
        self._follow_latest(limiter, self._bucket.latest())

    def _follow_latest(self, limiter: Any, latest: tuple[float, Move | None]) -> None:
        left_s, move = latest
        if left_s > 0:
            _core.RateCore.pause(limiter, left_s)
        self._moved(move)

    def _followed(self, booking: Booking) -> tuple[int, float, int]:
        """A sleeper's booking after every move heard so far: (the changes seen, its instant on the
        server's clock, when it may go on this process's)."""
        changes = self._changes  # read first: a move heard after it is followed at the next look
        instant = booking.instant_us(self._moves)
        return changes, instant, booking.until_ns(instant)

    def _not_paused(self, limiter: Any, instant: float) -> bool:
        """After the sleep: True when no pause is in effect; else uncounts the instant, False."""
        if limiter._pause_go_in() <= 0:
            return True
        self._bucket.void(instant)
        return False

    def _refund(self, limiter: Any, instant: float) -> None:
        self._bucket.refund(instant)
        limiter._notify_standing()  # this process's callers standing by look again at once

    def _moved(self, move: Move | None) -> None:
        """A new rate moved the instants still to come (here, or heard from another host): this
        process's sleepers follow it."""
        if move is None or move.cfg in self._moves:
            return
        moves = {**self._moves, move.cfg: move}  # a new dict: sleepers read the old one meanwhile
        while len(moves) > _MOVES_KEPT:
            del moves[min(moves)]
        self._moves = moves
        self._changes += 1
        limiter = None if self._limiter is None else self._limiter()
        if limiter is not None:
            limiter._notify_standing()

    async def acquire_async(
        self, limiter: Any, timeout: float | None = 60, tokens: int = 0, fail_fast: bool = False
    ) -> bool:
        """``acquire()`` for a coroutine: the round trip is awaited on the loop with a
        ``redis.asyncio`` client, else runs in the loop's default executor; the waits are the
        loop's timer. The same contract; cancelled while waiting, the booking is given back."""
        _, deadline = _async.deadline(timeout)
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        waiter: _core.AsyncWait | None = None  # set while standing by
        try:
            while True:
                future = None
                if waiter is not None:
                    waiter.future = future = loop.create_future()  # before the look (and the look at closed)
                if limiter.closed:
                    raise _core.LimiterClosed("the limiter is closed")
                last_look = fail_fast or _core.monotonic_ns() >= deadline
                try:
                    wait_s, booking = await self._link.submit(loop, self._bucket.book_op(deadline, last_look))
                except BackendDown:
                    decided = await self._outage.answer_async(
                        limiter, deadline, limiter._acquire_async_here, _nothing_to_record
                    )
                    if decided is None:
                        continue
                    return decided
                if booking is not None:
                    if wait_s > 0:
                        if await self._feed.listen_async(min(wait_s, 1.0)):  # other hosts' pauses and rates
                            self._follow_latest(limiter, await self._link.submit(loop, self._bucket.latest_op()))
                        if not await self._sleep_async(limiter, loop, booking):
                            continue  # the instant fell inside a pause: book again
                    self._mine.admitted(started)
                    return True
                if last_look:
                    return False
                if await self._feed.listen_async(min(_async.seconds_left(deadline), 1.0)):
                    continue  # subscribed just now: a change may have been published before, look again
                if waiter is None or future is None:  # registered from now on: look again first
                    waiter = _core.AsyncWait(_async.notifier(loop))
                    limiter._async_stand_by(waiter)
                    continue
                with self._mine.waiting():
                    await _async.wake_or_timer(loop, future, deadline)
        finally:
            if waiter is not None:
                limiter._async_stand_by_end(waiter)

    async def _sleep_async(self, limiter: Any, loop: asyncio.AbstractEventLoop, booking: Booking) -> bool:
        """``_sleep`` on the loop's timer, woken by the same changes."""
        changes = -1
        instant = booking.go_at_us
        until = 0
        waiter = _core.AsyncWait(_async.notifier(loop))
        with self._mine.waiting():
            try:
                limiter._async_stand_by(waiter)  # raises LimiterClosed
                try:
                    while True:
                        waiter.future = future = loop.create_future()  # before the looks
                        if changes != self._changes:
                            changes, instant, until = self._followed(booking)
                        if _core.monotonic_ns() >= until:
                            break
                        await _async.wake_or_timer(loop, future, until)
                        if limiter.closed:
                            raise _core.LimiterClosed("the limiter is closed")
                finally:
                    limiter._async_stand_by_end(waiter)
            except BaseException:  # cancelled or closed: give the booking back
                await asyncio.shield(self._link.submit(loop, self._bucket.refund_op(instant)))
                limiter._notify_standing()  # this process's callers standing by look again at once
                raise
        if limiter._pause_go_in() <= 0:
            return True  # no round trip on the common path
        await self._link.submit(loop, self._bucket.refund_op(instant, "void"))
        return False

    def listen_for_changes(self, wait_s: float) -> None:
        """Subscribes (once) to the changes every host publishes: each wakes this process's
        callers standing by (a CombinedLimiter's, whose rate turn was out of reach)."""
        self._feed.listen(wait_s)

    def close(self) -> None:
        """Stops listening for other hosts' changes."""
        self._feed.stop()

    # ---- changes every host follows ---------------------------------------------------------------

    def set_rate(self, requests_per_minute: int | float) -> None:
        """Changes the shared rate (every host follows; what is owed is converted to the new
        pace, and the callers asleep on an instant, on every host, move with it). While Redis is
        unreachable it is written when Redis returns."""
        self._bucket.rpm = requests_per_minute
        self._moved(self._bucket.configure())

    def set_burst(self, burst_size: int) -> None:
        """Changes the shared burst (every host follows; instants already booked stay)."""
        self._bucket.burst = burst_size
        self._bucket.configure()

    def limit_available(self, requests: int) -> None:
        """Keeps at most ``requests`` available now, for every host (a provider's remaining budget)."""
        self._bucket.cap(requests)

    def pause(self, seconds: float) -> float | None:
        """Nobody, on any host, goes for ``seconds`` (a provider's 429); then requests resume at the
        paced rate. The other hosts hear of it and pause their cores too (their callers asleep on an
        instant inside the pause book again). Returns the seconds until going, None while Redis is
        unreachable."""
        return self._bucket.pause(seconds)

    # ---- the shared state ------------------------------------------------------------------------

    def held_read(self) -> Any:
        return self._reads.held()

    def figure(self, name: str, local: Any, *args: Any) -> Any:
        """Shared where Redis holds it (while unreachable: this process's view): ``total_requests``
        and ``blocked_count`` (every host's; during an outage, this process's decisions),
        ``tokens_available``, ``get_current_rpm`` (admissions by every host in the last minute),
        ``predicted_wait``. ``interval_ns`` is the configured rate's. This process's: ``waiting``
        (callers asleep on a booking), ``wait_quantile`` and ``wait_max`` (exact, over its latest
        admitted waits). Any other figure is the core's."""
        if name in ProcessWaits.FIGURES:
            return self._mine.figure(name, *args)
        if name == "interval_ns":
            return int(interval_us(self._bucket.rpm) * 1000)
        if name not in _SHARED:
            return local
        shared = self._reads.get()
        if shared is None:
            if name == "total_requests":
                return self._outage.admitted
            if name == "blocked_count":
                return self._outage.denied
            return local
        if name == "predicted_wait":
            return int(shared[6]) / 1e6
        return int(shared[_SHARED[name]])

    def get_stats(self, local: dict[str, Any]) -> dict[str, Any]:
        """The guide's keys, read from Redis (every host's numbers). While Redis is unreachable:
        ``local`` (this process's view), plus ``backend_error``."""
        shared = self._reads.get()
        if shared is None:
            return {**local, "backend_error": self._link.last_error}
        current = int(shared[5])
        interval = float(text(shared[1]))
        mine = interval_us(self._bucket.rpm)
        shown: int | float = self._bucket.rpm if abs(interval - mine) <= 1e-9 * mine else _plain(60e6 / interval)
        return {
            "provider": self.name,
            "rpm_limit": shown,
            "current_rpm": current,
            "tokens_available": int(shared[0]),
            "total_requests": int(shared[3]),
            "blocked_count": int(shared[4]),
            "utilization": current / float(shown) * 100.0,
        }

    def metrics(self) -> dict[str, object]:
        return {
            "backend": self._link.where,
            "backend_available": not self._link.down,
            "backend_outages": self._link.outages,
            "outage_admitted": self._outage.admitted,
            "outage_denied": self._outage.denied,
        }

    def watch_waits(self, hook: Callable[[float], object] | None, threshold_s: float) -> None:
        self._mine.watch(hook, threshold_s)

    def described(self) -> str:
        return (
            f"requests_per_minute={self._bucket.rpm!r}, burst_size={self._bucket.burst}, "
            f"provider_name={self.name!r}, backend={self._link.where!r}, "
            f"on_backend_error={self._outage.name!r}"
        )


_MOVES_KEPT = 256
"""The moves by new rates a store remembers: a caller asleep across more of them follows the latest 256."""

_SHARED = {"tokens_available": 0, "total_requests": 3, "blocked_count": 4, "get_current_rpm": 5, "predicted_wait": 6}
"""Where RATE_STATS answers each shared figure."""


def _plain(rpm: float) -> int | float:
    """Another host's rate as a user would write it: 1200, not 1200.0000000001."""
    rounded = float(f"{rpm:.9g}")
    return int(rounded) if rounded.is_integer() else rounded


def _nothing_to_record(how: str) -> None:
    """A rate limiter's admission by the outage policy holds nothing to give back."""


def _notify(store: weakref.ref[RedisRateStore], message: str) -> None:
    """The feed heard of a change (``message``: what a script published; "" when the subscription
    broke): another host's pause pauses this process's core, a new rate moves the sleepers'
    instants, and the callers standing by look again."""
    found = store()
    limiter = None if found is None or found._limiter is None else found._limiter()
    if found is None or limiter is None:
        return
    kind, _, rest = message.partition(" ")
    if kind == "pause":
        value, _, origin = rest.partition(" ")
        if origin != found._bucket.origin:
            _core.RateCore.pause(limiter, int(value) / 1e6)
    elif kind == "configure":
        found._moved(Move.parse(rest.split(" ")))
    limiter._notify_standing()
