"""RedisConcurrencyStore: the store of a ConcurrencyLimiter whose permits are leases in Redis,
shared by every process and host that names the same limiter on the same server
(``ConcurrencyLimiter(..., backend="redis://...")``; ``omnilimit.store`` says what a store is).

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
import functools
import time
import weakref
from collections.abc import Callable
from typing import Any

from omnilimit import _async, _core, pause
from omnilimit._log import logger
from omnilimit.backends.redis_leases import LOCAL, REDIS, Keeper, keepers, owner_id
from omnilimit.backends.redis_link import IDLE_TTL_S, BackendDown, OneRead, Op, RedisLink, channel_for, keys_for
from omnilimit.backends.redis_outage import OutagePolicy
from omnilimit.backends.redis_waits import ProcessWaits
from omnilimit.spec import check_lease, check_policy, name_for_key

DEFAULT_LEASE_S = 30.0
FALLBACK_S = 1.0  # the longest a waiter sleeps without looking at Redis again


class RedisConcurrencyStore:
    """The slots of a ``ConcurrencyLimiter`` shared through Redis: at most ``max_concurrent``
    calls in flight across every host naming the same ``name`` on the same server (the latest
    cap written wins).

    ``lease_seconds`` (default 30) is how long a permit outlives its holder's last renewal: a
    crashed client's permits come back after it. ``on_backend_error`` and ``local_fraction`` say
    what happens while Redis is unreachable (``redis_outage``). ``pause()`` (a provider's 429)
    pauses every host: the next caller of any host to lease a permit meanwhile waits out the rest.
    Every method is thread-safe.
    """

    __slots__ = ("__weakref__", "_keeper", "_limiter", "_link", "_mine", "_outage", "_reads", "local_fraction", "name")

    def __init__(
        self,
        backend: object,
        name: str,
        maximum: int,
        *,
        on_backend_error: str = "closed",
        local_fraction: float | None = None,
        lease_seconds: float = DEFAULT_LEASE_S,
    ) -> None:
        policy, self.local_fraction = check_policy(on_backend_error, local_fraction)
        lease_s = check_lease(lease_seconds)
        self.name = name
        self._limiter: weakref.ref[Any] | None = None
        self._link = RedisLink(backend, f"ConcurrencyLimiter {name!r}")
        self._outage = OutagePolicy(policy, self.local_fraction, self._link)
        key_name = name_for_key(name)
        self._keeper = Keeper(
            self._link,
            keys_for("sem", key_name),
            channel_for(key_name),
            lease_s,
            [int(lease_s * 1e6), maximum, IDLE_TTL_S],
        )
        keepers.add(self._keeper)
        self._reads = OneRead(functools.partial(_read_stats, self._keeper))  # not a bound method: no cycle
        weakref.finalize(self, self._keeper.stop)
        self._link.on_recovery.append(self._keeper.renew_soon)
        self._mine = ProcessWaits()  # this process's waiting callers and waits
        self._write_cap(maximum, announce=True)

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

    @property
    def on_backend_error(self) -> str:
        return self._outage.name

    # ---- acquiring -------------------------------------------------------------------------------------

    def _try(self, owner: str, mode: str) -> tuple[bool, float]:
        """One round trip: (leased, seconds until the earliest lease expires or -1). ``mode``
        ``wait`` joins the line (or stays in it) when no permit is free for this caller. A permit
        leased while a pause declared by any host runs pauses this process's limiter for the rest
        of it (the caller then waits it out)."""
        return self._link.drive(self._try_op(owner, mode))

    def _try_op(self, owner: str, mode: str) -> Op[tuple[bool, float]]:
        reply = yield self._keeper.call("SEM_ACQUIRE", owner, mode)
        leased = int(reply[0]) == 1
        if leased and len(reply) > 2:
            limiter = None if self._limiter is None else self._limiter()
            if limiter is not None:
                _core.ConcurrencyCore.pause(limiter, int(reply[2]) / 1e6)
        return leased, int(reply[1]) / 1e6

    def bind(self, limiter: Any) -> None:
        """Called once the limiter exists: a pause that another host declared reaches it through
        this store's answers."""
        self._limiter = weakref.ref(limiter)

    def pause(self, seconds: float) -> float | None:
        """Nobody, on any host, takes a permit and goes for ``seconds`` (a provider's 429): every
        host's next caller to lease a permit meanwhile waits out the rest. Returns the seconds until
        the pause in effect ends, None while Redis is unreachable (this process's pause stands)."""
        try:
            return int(self._keeper.run("SEM_PAUSE", "", int(seconds * 1e6))) / 1e6
        except BackendDown:
            return None

    def _leave(self, owner: str, refused: bool) -> None:
        """Leaves the line (if in it); ``refused`` counts a caller that gave up. If Redis is
        unreachable, the heartbeat takes it out of the line."""
        self._link.drive(self._leave_op(owner, refused))

    def _leave_op(self, owner: str, refused: bool) -> Op[None]:
        with contextlib.suppress(BackendDown):
            yield self._keeper.call("SEM_LEAVE", owner, "1" if refused else "0")

    def acquire(self, limiter: Any, timeout: float | None = 120) -> bool:
        """Takes a permit, waiting up to ``timeout`` seconds (``None``: forever, ``0``: no wait),
        in one arrival order with every host's waiters, then waits out ``limiter``'s pause. Woken
        when its turn comes; while Redis is unreachable the policy decides (``closed``: wait for it
        until the timeout, then False). Raises LimiterClosed once the limiter is closed."""
        timeout_ns, deadline = _async.deadline(timeout)
        keeper = self._keeper
        owner = owner_id()
        started = time.monotonic()
        mode = "try" if timeout_ns == 0 else "wait"
        waiter = keeper.wakeups.register(owner)
        in_line = False
        try:
            while True:
                waiter.before_try()  # before the look at closed: close() sets it, then wakes
                if limiter.closed:
                    raise _core.LimiterClosed("the limiter is closed")
                try:
                    got, expiry_s = self._try(owner, mode)
                except BackendDown:
                    decided = self._outage.answer(
                        limiter, deadline, limiter._acquire_here, lambda how: keeper.hold(owner, how)
                    )
                    if decided is None:
                        continue
                    return decided
                if got:
                    in_line = False
                    keeper.hold(owner, REDIS)
                    return self._admitted(started, pause.wait_out(limiter, deadline, limiter.release))
                in_line = mode == "wait"
                left_s = _async.seconds_left(deadline)
                if timeout_ns == 0 or left_s <= 0:
                    self._leave(owner, refused=True)
                    return False
                if keeper.listen(min(left_s, FALLBACK_S)):
                    continue  # subscribed just now: its turn may have been announced before, look again
                with self._mine.waiting():
                    waiter.wait(_bound(left_s, expiry_s))
        except BaseException:
            if in_line:
                self._leave(owner, refused=False)
            raise
        finally:
            keeper.wakeups.unregister(owner)

    def _admitted(self, started: float, went: bool) -> bool:
        """The end of an acquire that leased a permit, once a pause in effect was waited out
        (``went``) or outlasted the deadline (the permit given back meanwhile)."""
        if went:
            self._mine.admitted(started)
        return went

    async def acquire_async(self, limiter: Any, timeout: float | None = 120) -> bool:
        """``acquire()`` for a coroutine: each try is awaited on the loop with a ``redis.asyncio``
        client, else runs in the loop's default executor; between tries it waits on the loop for
        its turn. Cancellation-safe: it leaves the line, and a permit leased as it was cancelled is
        released."""
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
                waiter.before_try()  # before the look at closed: close() sets it, then wakes
                if limiter.closed:
                    raise _core.LimiterClosed("the limiter is closed")
                attempt = self._link.submit(loop, self._try_op(owner, mode))
                try:
                    got, expiry_s = await asyncio.shield(attempt)
                except BackendDown:
                    decided = await self._outage.answer_async(
                        limiter, deadline, limiter._acquire_async_here, lambda how: keeper.hold(owner, how)
                    )
                    if decided is None:
                        continue
                    return decided
                except asyncio.CancelledError:
                    attempt.add_done_callback(lambda done: self._give_back_if_leased(done, limiter, owner))
                    raise
                if got:
                    in_line = False
                    keeper.hold(owner, REDIS)
                    went = await pause.wait_out_async(
                        limiter, deadline, lambda: loop.run_in_executor(None, limiter.release)
                    )
                    return self._admitted(started, went)
                in_line = mode == "wait"
                left_s = _async.seconds_left(deadline)
                if timeout_ns == 0 or left_s <= 0:
                    await self._link.submit(loop, self._leave_op(owner, True))
                    return False
                if await keeper.listen_async(min(left_s, FALLBACK_S)):
                    continue  # subscribed just now: its turn may have been announced before, look again
                future = waiter.future(loop)
                with self._mine.waiting():
                    await _async.wake_or_timer(loop, future, _core.monotonic_ns() + int(_bound(left_s, expiry_s) * 1e9))
        except BaseException:
            if in_line:
                await asyncio.shield(self._link.submit(loop, self._leave_op(owner, False)))
            raise
        finally:
            keeper.wakeups.unregister(owner)

    def _give_back_if_leased(self, attempt: asyncio.Future[tuple[bool, float]], limiter: Any, owner: str) -> None:
        """A try cancelled in flight: a permit it leased is released, a place it took in the line
        is left."""
        if attempt.cancelled() or attempt.exception() is not None:
            return
        if attempt.result()[0]:
            self._keeper.hold(owner, REDIS)
            limiter.release()
        else:
            self._leave(owner, refused=False)

    def release(self, limiter: Any) -> bool:
        """Gives a permit back (this thread's latest, else this process's oldest); False when none
        was held."""
        taken = self._keeper.take()
        if taken is None:
            return False
        owner, kind = taken
        if kind == LOCAL:
            limiter._release_here()
        elif kind == REDIS:
            try:
                released = int(self._keeper.run("SEM_RELEASE", owner))
            except BackendDown:
                return True  # the lease runs out by itself (no more renewals)
            if not released:
                logger.warning(
                    "ConcurrencyLimiter %r: a permit's lease had expired before its release (a call longer than "
                    "the lease while renewals failed, or a stalled process); it was already given back",
                    self.name,
                )
        return True

    def set_max_concurrent(self, maximum: int) -> int:
        """Writes the shared cap (every host follows; waiters everywhere are woken when it rises)."""
        self._write_cap(maximum)
        return maximum

    def close(self) -> None:
        """Stops the keeper thread; leases still held then run out after the lease."""
        self._keeper.stop()

    # ---- the shared state --------------------------------------------------------------------------------

    def held_read(self) -> Any:
        return self._reads.held()

    def _configured_max(self) -> int:
        return int(self._keeper.args[1])

    def _held_here(self) -> int:
        with self._keeper.lock:
            return len(self._keeper.held)

    def figure(self, name: str, local: Any, *args: Any) -> Any:
        """Shared where Redis holds it (while unreachable: this process's view): ``max_concurrent``,
        ``active_calls`` (permits leased by every host), ``total_requests`` and ``blocked_count``
        (every host's; during an outage, this process's decisions), ``get_current_rpm`` (releases
        by every host in the last minute). This process's: ``waiting``, ``wait_quantile`` and
        ``wait_max`` (exact, over its latest admitted waits). Any other figure is the core's."""
        if name in ProcessWaits.FIGURES:
            return self._mine.figure(name, *args)
        if name not in _SHARED:
            return local
        shared = self._reads.get()
        if shared is not None:
            return int(shared[_SHARED[name]])
        if name == "max_concurrent":
            return self._configured_max()
        if name == "active_calls":
            return self._held_here()
        if name == "total_requests":
            return self._outage.admitted
        if name == "blocked_count":
            return self._outage.denied
        return local

    def get_stats(self, local: dict[str, Any]) -> dict[str, Any]:
        """The guide's four keys, read from Redis (every host's calls); while Redis is
        unreachable, this process's view plus ``backend_error``."""
        if self._reads.get() is None:
            return {**local, "backend_error": self._link.last_error}
        return local  # its figures were the shared ones

    def metrics(self) -> dict[str, object]:
        shared = self._reads.get()
        return {
            "backend": self._link.where,
            "backend_available": not self._link.down,
            "backend_outages": self._link.outages,
            "leases_expired": int(shared[5]) if shared is not None else None,
            "waiting_everywhere": int(shared[6]) if shared is not None else None,
            "outage_admitted": self._outage.admitted,
            "outage_denied": self._outage.denied,
        }

    def watch_waits(self, hook: Callable[[float], object] | None, threshold_s: float) -> None:
        self._mine.watch(hook, threshold_s)

    def described(self) -> str:
        return (
            f"max_concurrent={self._configured_max()}, name={self.name!r}, "
            f"backend={self._link.where!r}, on_backend_error={self._outage.name!r}"
        )


_SHARED = {"active_calls": 0, "max_concurrent": 1, "total_requests": 2, "blocked_count": 3, "get_current_rpm": 4}
"""Where SEM_STATS answers each shared figure."""


def _read_stats(keeper: Keeper) -> list[Any] | None:
    """SEM_STATS: one round trip (none inside ``held_read()``, which reads once for all)."""
    try:
        return list(keeper.run("SEM_STATS"))
    except BackendDown:
        return None


def _bound(left_s: float, expiry_s: float) -> float:
    """How long a waiter sleeps before looking again without a ring: at most FALLBACK_S, its
    time left, or until the earliest lease expires (its permit is then free)."""
    bound = min(left_s, FALLBACK_S)
    if expiry_s >= 0:
        bound = min(bound, expiry_s + 0.001)
    return max(bound, 0.0)
