"""RedisConcurrencyLimiter: a ConcurrencyLimiter whose permits are leases in Redis, shared by
every process and host that names the same limiter on the same server.

A permit is a member of a sorted set (owner id -> expiry on the server's clock). Taking one is one
round trip (``redis_lua.SEM_ACQUIRE``: take back expired leases, then lease if fewer than the cap
are held); only the owner's ``release()`` removes its member, and publishes on the limiter's
channel. While a call runs, this process's keeper thread renews its leases every third of the
lease, so a long call keeps its permit and a client that dies (or hangs) gives its permits back
one lease after its last renewal.

Waiters stand in one line in Redis (a sorted set of tickets), across every host: the first
``free`` of the line may take a permit and nobody else, so a newcomer cannot pass them and permits
go in arrival order. A waiter does not poll: whenever permits may have come free (a release, a
lease taken back, a raised cap, a waiter leaving), the script publishes the ids of the waiters now
allowed to go, and the keeper thread of each process wakes exactly those of its own
(``redis_wakeups``). A bounded fallback (at most ``FALLBACK_S``, or sooner when the earliest lease
will expire) covers a message lost while the subscription reconnects; each look also refreshes
the waiter's heartbeat, and a waiter whose process died leaves the line ``HEARTBEAT_S`` after its
last look.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import weakref
from typing import Any

from omnilimit import _async, _core, pause
from omnilimit._log import logger
from omnilimit._validate import label, whole_number
from omnilimit.backends.redis_leases import LOCAL, REDIS, Keeper, keepers, owner_id
from omnilimit.backends.redis_link import (
    IDLE_TTL_S,
    BackendDown,
    OneRead,
    RedisLink,
    WithBlock,
    channel_for,
    keys_for,
)
from omnilimit.backends.redis_outage import OutagePolicy
from omnilimit.backends.redis_waits import WaitRecorder
from omnilimit.concurrency import ConcurrencyLimiter
from omnilimit.spec import MAX_CONCURRENT, check_lease, check_policy, name_for_key

DEFAULT_LEASE_S = 30.0
FALLBACK_S = 1.0  # the longest a waiter sleeps without looking at Redis again


class RedisConcurrencyLimiter(WithBlock, ConcurrencyLimiter):
    """A ``ConcurrencyLimiter`` whose cap is shared through Redis: at most ``max_concurrent``
    calls in flight across every host naming the same ``name`` on the same server (the latest
    cap written wins). Made by ``ConcurrencyLimiter(..., backend=URL or client)``.

    ``lease_seconds`` (default 30) is how long a permit outlives its holder's last renewal: a
    crashed client's permits come back after it. ``on_backend_error`` and ``local_fraction`` say
    what happens while Redis is unreachable (``redis_link``). Stats read the shared state;
    ``pause()`` (a provider's 429) pauses this process only. Every method is thread-safe.
    """

    __slots__ = (
        "_counts",
        "_fraction",
        "_keeper",
        "_link",
        "_outage",
        "_over_logged",
        "_reads",
        "_waits",
    )

    def __init__(
        self,
        max_concurrent: int,
        name: str = "default",
        *,
        backend: object = None,
        on_backend_error: str = "closed",
        local_fraction: float | None = None,
        lease_seconds: float = DEFAULT_LEASE_S,
    ) -> None:
        maximum = whole_number("max_concurrent", max_concurrent, maximum=MAX_CONCURRENT)
        policy, fraction = check_policy(on_backend_error, local_fraction)
        lease_s = check_lease(lease_seconds)
        super().__init__(max(1, math.floor(maximum * (fraction or 1.0))), label("name", name))
        self._fraction = fraction
        self._link = RedisLink(backend, f"ConcurrencyLimiter {self.name!r}")
        self._outage = OutagePolicy(policy, fraction, self._link)
        self._reads = OneRead(self._read_shared)
        key_name = name_for_key(self.name)
        self._keeper = Keeper(
            self._link,
            keys_for("sem", key_name),
            channel_for(key_name),
            lease_s,
            [int(lease_s * 1e6), maximum, IDLE_TTL_S],
        )
        keepers.add(self._keeper)
        weakref.finalize(self, self._keeper.stop)
        self._link.on_recovery.append(self._keeper.renew_soon)
        # This process's counters (the outage policy keeps its own).
        self._counts = dict.fromkeys(("waiting", "denied", "over_release"), 0)
        self._over_logged = False
        self._waits = WaitRecorder()
        self._write_cap(maximum, announce=True)

    def _bump(self, counter: str, delta: int = 1) -> None:
        with self._keeper.lock:
            self._counts[counter] += delta

    def _write_cap(self, maximum: int, announce: bool = False) -> None:
        self._keeper.args[1] = maximum
        try:
            before = self._keeper.run("SEM_CONFIGURE")
        except BackendDown:
            return  # the scripts carry the cap: it seeds the state if Redis lost it
        text = before.decode() if isinstance(before, bytes) else str(before)
        if announce and text and int(text) != maximum:
            logger.warning(
                "ConcurrencyLimiter %r: the shared limiter on Redis allowed %s concurrent calls: it now allows %d, "
                "on every host (the latest configuration wins)",
                self.name,
                text,
                maximum,
            )

    @property
    def backend(self) -> str:
        """Where the state lives (the URL without its password)."""
        return self._link.where

    @property
    def lease_seconds(self) -> float:
        return self._keeper.lease_s

    @property
    def backend_available(self) -> bool:
        return not self._link.down

    # ---- acquiring -------------------------------------------------------------------------------------

    def _try(self, owner: str, mode: str) -> tuple[bool, float]:
        """One round trip: (leased, seconds until the earliest lease expires or -1). ``mode``
        ``wait`` joins the line (or stays in it) when no permit is free for this caller."""
        reply = self._keeper.run("SEM_ACQUIRE", owner, mode)
        return int(reply[0]) == 1, int(reply[1]) / 1e6

    def _leave(self, owner: str, refused: bool) -> None:
        """Leaves the line (if in it); ``refused`` counts a caller that gave up. If Redis is
        unreachable, the heartbeat takes it out of the line."""
        with contextlib.suppress(BackendDown):
            self._keeper.run("SEM_LEAVE", owner, "1" if refused else "0")

    def acquire(self, timeout: float | None = 120) -> bool:
        """Takes a permit, waiting up to ``timeout`` seconds (``None``: forever, ``0``: no wait),
        in one arrival order with every host's waiters. Woken when its turn comes; while Redis is
        unreachable the policy decides (``closed``: wait for it until the timeout, then False).
        Raises LimiterClosed once closed."""
        timeout_ns, deadline = _async.deadline(timeout)
        keeper = self._keeper
        owner = owner_id()
        started = time.monotonic()
        mode = "try" if timeout_ns == 0 else "wait"
        waiter = keeper.wakeups.register(owner)
        in_line = False
        try:
            while True:
                if self.closed:
                    raise _core.LimiterClosed("the limiter is closed")
                waiter.before_try()
                try:
                    got, expiry_s = self._try(owner, mode)
                except BackendDown:
                    decided = self._outage.answer(
                        self, deadline, timeout, self._take_local, lambda how: keeper.hold(owner, how)
                    )
                    if decided is None:
                        continue
                    return decided
                if got:
                    in_line = False
                    keeper.hold(owner, REDIS)
                    return self._admitted(started, deadline, timeout, pause.wait_out(self, deadline, self.release))
                in_line = mode == "wait"
                left_s = _async.seconds_left(deadline)
                if timeout_ns == 0 or left_s <= 0:
                    return self._give_up(owner, timeout, timeout_ns)
                if keeper.listen(min(left_s, FALLBACK_S)):
                    continue  # subscribed just now: its turn may have been announced before, look again
                self._bump("waiting")
                try:
                    waiter.wait(_bound(left_s, expiry_s))
                finally:
                    self._bump("waiting", -1)
        except BaseException:
            if in_line:
                self._leave(owner, refused=False)
            raise
        finally:
            keeper.wakeups.unregister(owner)

    def _admitted(self, started: float, deadline: int, timeout: object, went: bool) -> bool:
        """The end of an acquire that leased a permit, once a pause in effect was waited out
        (``went``) or outlasted the deadline (the permit given back meanwhile)."""
        if not went:
            self._on_timeout(timeout)
            return False
        self._waits.record(time.monotonic() - started)
        return True

    def _give_up(self, owner: str, timeout: object, timeout_ns: int) -> bool:
        self._leave(owner, refused=True)
        if timeout_ns == 0:
            self._bump("denied")
        else:
            self._on_timeout(timeout)
        return False

    def _take_local(self, timeout: float | None) -> bool:
        """The ``local`` policy's fallback: the native core, at its fraction of the limit."""
        return super().acquire(timeout)

    async def _take_local_async(self, timeout: float | None) -> bool:
        return await super().acquire_async(timeout)

    async def acquire_async(self, timeout: float | None = 120) -> bool:
        """``acquire()`` for a coroutine: each try runs in the loop's default executor; between
        tries it waits on the loop for its turn. Cancellation-safe: it leaves the line, and a
        permit leased as it was cancelled is released."""
        timeout_ns, deadline = _async.deadline(timeout)
        keeper = self._keeper
        loop = asyncio.get_running_loop()
        owner = owner_id()
        started = time.monotonic()
        mode = "try" if timeout_ns == 0 else "wait"
        waiter = keeper.wakeups.register(owner)
        in_line = False
        try:
            while True:
                if self.closed:
                    raise _core.LimiterClosed("the limiter is closed")
                waiter.before_try()
                attempt = loop.run_in_executor(None, self._try, owner, mode)
                try:
                    got, expiry_s = await asyncio.shield(attempt)
                except BackendDown:
                    decided = await self._outage.answer_async(
                        self, deadline, timeout, self._take_local_async, lambda how: keeper.hold(owner, how)
                    )
                    if decided is None:
                        continue
                    return decided
                except asyncio.CancelledError:
                    attempt.add_done_callback(lambda done: self._give_back_if_leased(done, owner))
                    raise
                if got:
                    in_line = False
                    keeper.hold(owner, REDIS)
                    went = await pause.wait_out_async(self, deadline, lambda: loop.run_in_executor(None, self.release))
                    return self._admitted(started, deadline, timeout, went)
                in_line = mode == "wait"
                left_s = _async.seconds_left(deadline)
                if timeout_ns == 0 or left_s <= 0:
                    return await loop.run_in_executor(None, self._give_up, owner, timeout, timeout_ns)
                if not keeper.listening.is_set():
                    await loop.run_in_executor(None, keeper.listen, min(left_s, FALLBACK_S))
                    continue
                future = waiter.future(loop)
                self._bump("waiting")
                try:
                    await _async.wake_or_timer(loop, future, _core.monotonic_ns() + int(_bound(left_s, expiry_s) * 1e9))
                finally:
                    self._bump("waiting", -1)
        except BaseException:
            if in_line:
                await asyncio.shield(loop.run_in_executor(None, self._leave, owner, False))
            raise
        finally:
            keeper.wakeups.unregister(owner)

    def _give_back_if_leased(self, attempt: asyncio.Future[tuple[bool, float]], owner: str) -> None:
        """A try cancelled in flight: a permit it leased is released, a place it took in the line
        is left."""
        if attempt.cancelled() or attempt.exception() is not None:
            return
        if attempt.result()[0]:
            self._keeper.hold(owner, REDIS)
            self.release()
        else:
            self._leave(owner, refused=False)

    def release(self) -> None:
        """Gives a permit back (this thread's latest, else this process's oldest). A release
        without a held permit is ignored, counted in ``over_release_count`` and logged once."""
        taken = self._keeper.take()
        if taken is None:
            self._bump("over_release")
            if not self._over_logged:
                self._over_logged = True
                self._on_over_release()
            return
        owner, kind = taken
        if kind == LOCAL:
            super().release()
        elif kind == REDIS:
            try:
                released = int(self._keeper.run("SEM_RELEASE", owner))
            except BackendDown:
                return  # the lease runs out by itself (no more renewals)
            if not released:
                logger.warning(
                    "ConcurrencyLimiter %r: a permit's lease had expired before its release (a call longer than "
                    "the lease while renewals failed, or a stalled process); it was already given back",
                    self.name,
                )

    def set_max_concurrent(self, max_concurrent: int) -> int:
        """Changes the shared cap (every host follows; waiters everywhere are woken when it rises).
        Returns 0: the permits it frees go to whichever waiters try first."""
        maximum = whole_number("max_concurrent", max_concurrent, maximum=MAX_CONCURRENT)
        ConcurrencyLimiter.set_max_concurrent(self, max(1, math.floor(maximum * (self._fraction or 1.0))))
        self._write_cap(maximum)
        return 0

    def close(self) -> None:
        """Refuses new acquires (LimiterClosed) and wakes this process's waiters; releases still
        work. The keeper thread stops; leases still held then run out after the lease."""
        super().close()
        self._keeper.stop()

    # ---- the shared state --------------------------------------------------------------------------------

    def _shared(self) -> list[Any] | None:
        """SEM_STATS: one round trip (none inside ``metrics()``, which reads once for all)."""
        return self._reads.get()

    def _read_shared(self) -> list[Any] | None:
        try:
            return list(self._keeper.run("SEM_STATS"))
        except BackendDown:
            return None

    @property
    def max_concurrent(self) -> int:
        shared = self._shared()
        return int(shared[1]) if shared is not None else int(self._keeper.args[1])

    @property
    def active_calls(self) -> int:
        """Permits leased now, by every host (while Redis is unreachable: this process's)."""
        shared = self._shared()
        if shared is not None:
            return int(shared[0])
        with self._keeper.lock:
            return len(self._keeper.held)

    @property
    def total_requests(self) -> int:
        shared = self._shared()
        return int(shared[2]) if shared is not None else self._outage.admitted

    @property
    def blocked_count(self) -> int:
        shared = self._shared()
        return int(shared[3]) if shared is not None else self._outage.denied

    @property
    def denied_count(self) -> int:
        return self._counts["denied"]

    @property
    def over_release_count(self) -> int:
        return self._counts["over_release"]

    @property
    def waiting(self) -> int:
        """This process's callers waiting for a permit now."""
        return self._counts["waiting"]

    def wait_quantile(self, q: float) -> float:
        """The q-quantile of this process's latest admitted waits (seconds, exact)."""
        return self._waits.quantile(q)

    def wait_max(self) -> float:
        """The longest wait of this process's admitted callers (seconds, exact)."""
        return self._waits.maximum()

    def get_current_rpm(self) -> int:
        """Releases by every host in the last 60 seconds."""
        shared = self._shared()
        return int(shared[4]) if shared is not None else super().get_current_rpm()

    def get_stats(self) -> dict[str, Any]:
        """The guide's four keys, read from Redis in one round trip (every host's calls). While
        Redis is unreachable: this process's view, plus ``backend_error``."""
        shared = self._shared()
        if shared is None:
            with self._keeper.lock:
                held = len(self._keeper.held)
            maximum = int(self._keeper.args[1])
            return {
                "max_concurrent": maximum,
                "active_calls": held,
                "total_requests": self._outage.admitted,
                "available_slots": max(0, maximum - held),
                "backend_error": self._link.last_error,
            }
        held, maximum = int(shared[0]), int(shared[1])
        return {
            "max_concurrent": maximum,
            "active_calls": held,
            "total_requests": int(shared[2]),
            "available_slots": max(0, maximum - held),
        }

    def metrics(self) -> dict[str, object]:
        """``ConcurrencyLimiter.metrics()`` with the shared numbers, plus ``backend``,
        ``backend_available``, ``backend_outages``, ``leases_expired`` (permits taken back from
        clients that stopped renewing), ``waiting_everywhere`` (the line across every host; ``waiting``
        is this process's) and ``outage_admitted`` / ``outage_denied``. Every shared number comes
        from one read of Redis."""
        with self._reads.held() as shared:
            merged = super().metrics()
        return {
            **merged,
            "backend": self._link.where,
            "backend_available": not self._link.down,
            "backend_outages": self._link.outages,
            "leases_expired": int(shared[5]) if shared is not None else None,
            "waiting_everywhere": int(shared[6]) if shared is not None else None,
            "outage_admitted": self._outage.admitted,
            "outage_denied": self._outage.denied,
        }

    def __repr__(self) -> str:
        return (
            f"ConcurrencyLimiter(max_concurrent={int(self._keeper.args[1])}, name={self.name!r}, "
            f"backend={self._link.where!r}, on_backend_error={self._outage.name!r})"
        )


def _bound(left_s: float, expiry_s: float) -> float:
    """How long a waiter sleeps before looking again without a ring: at most FALLBACK_S, its
    time left, or until the earliest lease expires (its permit is then free)."""
    bound = min(left_s, FALLBACK_S)
    if expiry_s >= 0:
        bound = min(bound, expiry_s + 0.001)
    return max(bound, 0.0)
