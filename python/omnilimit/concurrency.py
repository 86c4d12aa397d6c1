"""ConcurrencyLimiter: at most ``max_concurrent`` calls in flight at once."""

from __future__ import annotations

import asyncio
import functools
import math
from typing import Any

from omnilimit import _async, _core, pause
from omnilimit._log import TimeoutWarnings, logger
from omnilimit._validate import label, whole_number
from omnilimit.backends.redis_concurrency import RedisConcurrencyStore
from omnilimit.feedback import ProviderFeedback, _common_metrics
from omnilimit.spec import MAX_CONCURRENT, is_redis, shared_name, store_options
from omnilimit.store import ConcurrencyStore, WithStore


class ConcurrencyLimiter(_core.ConcurrencyCore, WithStore[ConcurrencyStore], ProviderFeedback, _async.AsyncLimiting):
    """At most ``max_concurrent`` calls in flight at once (the guide's concurrency limiting).

    ``acquire(timeout=120) -> bool`` takes a slot, waiting up to ``timeout`` seconds (``None``
    waits forever, ``0`` tries once); ``release()`` frees it. Waiters are served in arrival order.
    It returns True as soon as a slot is had, False only once ``timeout`` has passed (a pause that
    outlasts the timeout is waited out holding nothing). ``with limiter:`` acquires with the
    default timeout (raising ``LimiterTimeout`` when none came) and releases on exit. ``close()``
    wakes every waiter with ``LimiterClosed``.

    ``backend="shm"`` (or ``"shm://NAME"``; the name defaults to ``name``) keeps the slots in a
    shared-memory segment: every process that opens the same name shares the cap, waiters in
    other processes are woken by a futex, and the slots of a process that dies holding them are
    taken back (within half a second when someone waits). Coroutines cannot wait on a shared
    limiter yet; ``close()`` closes it in this process only.

    ``backend="redis://host:6379/0"`` (``rediss://``, ``redis+cluster://``, or a redis-py client)
    composes a Redis store (``limiter.store``, a ``RedisConcurrencyStore``): the cap holds across
    every host naming the same ``name`` on that server; permits are leases (``lease_seconds``)
    renewed while the call runs; ``on_backend_error`` and ``local_fraction`` (options of the store)
    say what happens while Redis is unreachable.

    Coroutines share the same slots and the same queue: ``await acquire_async(timeout=120)``,
    ``async with limiter:``, ``@limiter.limit`` (sync or async functions). They wait on their
    event loop, woken by the core, from any number of loops in any threads.

    The uncontended ``acquire()``/``release()`` pair runs entirely in C++ with the GIL held; the GIL
    is released only while a caller waits. Every method is thread-safe. ``get_stats()`` reads
    atomics and never blocks.

    A release without a matching acquire is ignored, counted in ``over_release_count`` and logged
    once: capacity never exceeds ``max_concurrent``.
    """

    __slots__ = ("_store", "_timeouts", "name")

    def __init__(
        self,
        max_concurrent: int,
        name: str = "default",
        *,
        backend: object = None,
        on_backend_error: str | None = None,
        local_fraction: float | None = None,
        lease_seconds: float | None = None,
    ) -> None:
        options = store_options(
            backend, on_backend_error=on_backend_error, local_fraction=local_fraction, lease_seconds=lease_seconds
        )
        maximum = whole_number("max_concurrent", max_concurrent, maximum=MAX_CONCURRENT)
        checked_name = label("name", name)
        self._store: ConcurrencyStore | None = None
        if is_redis(backend):
            self._store = RedisConcurrencyStore(backend, checked_name, maximum, **options)
        timeouts = TimeoutWarnings(f"Concurrency limit timeout after {{}}s for {checked_name}")
        super().__init__(
            local_share(maximum, self._store),
            "" if self._store is not None else shared_name(backend, default=checked_name) or "",
            store=self._store,
            on_timeout=timeouts,
            on_over_release=functools.partial(_log_over_release, checked_name),
        )
        self.name = checked_name
        self._timeouts = timeouts
        if self._store is not None:
            self._store.bind(self)
        if self._shared_max_before is not None:
            logger.warning(
                "ConcurrencyLimiter %r: the shared segment %r allowed %d concurrent calls: it now allows %d, in "
                "every process (the latest configuration wins)",
                self.name,
                self.shared_name,
                self._shared_max_before,
                maximum,
            )
        logger.debug("ConcurrencyLimiter %r: at most %d concurrent calls", self.name, maximum)

    # ---- where the state lives ----------------------------------------------------------------

    @property
    def lease_seconds(self) -> float | None:
        """How long a Redis permit outlives its holder's last renewal (None without Redis)."""
        return None if self._store is None else self._store.lease_seconds

    def pause(self, seconds: float) -> float:
        """Admits nothing for ``seconds`` (a provider's 429; a pause in effect that ends later
        stays): callers that get a slot meanwhile wait out the rest, within their timeout. In
        shared memory, for every process; with Redis, for every host. Returns the seconds until
        this limiter may go again."""
        local: float = super().pause(seconds)
        shared = None if self._store is None else self._store.pause(seconds)
        return local if shared is None else max(local, shared)

    # ---- acquiring ------------------------------------------------------------------------------

    async def acquire_async(self, timeout: float | None = 120) -> bool:
        """``acquire()`` for a coroutine: takes a slot, waiting on the running event loop (never
        blocking it) up to ``timeout`` seconds, in one arrival order with threads and other
        loops. Cancellation-safe: a waiter cancelled or timed out holds no slot, and a slot
        handed to it meanwhile goes on to the next waiter. Raises LimiterClosed, ValueError for a
        bad timeout."""
        if self._store is not None:
            _async.deadline(timeout)  # checks it
            took = await self._store.acquire_async(self, timeout)
        else:
            took = await self._acquire_async_here(timeout)
        if not took:
            self._refused(timeout)
        return took

    async def __aenter__(self) -> ConcurrencyLimiter:
        """``async with limiter:``: ``acquire_async()`` with the default timeout (120 s), raising
        ``LimiterTimeout`` when no slot came; leaving releases the slot."""
        if self._async_fast():
            return self
        if self._store is None:
            took = await self._acquire_async_here(120)
        else:
            took = await self._store.acquire_async(self, 120)
        if took:
            return self
        self._refused(120)
        raise self._timeout_error()

    async def __aexit__(self, *exc_info: object) -> bool:
        self.release()
        return False

    async def _acquire_async_here(self, timeout: float | None) -> bool:
        """A slot of the native core itself (a Redis store's in-process fallback too), its pause
        waited out; False (nothing counted) when none came by ``timeout``. A coroutine that must
        wait does so in the core's queue (one arrival order with threads), woken by the core when
        a slot is handed to it, or by the loop's timed waits at its deadline."""
        timeout_ns, deadline = _async.deadline(timeout)
        if timeout_ns == 0:
            if not self._async_try():
                if self.closed:
                    raise _core.LimiterClosed("the limiter is closed")
                return False
        else:  # a free slot is taken by _async_enqueue; a closed limiter raises there
            loop = asyncio.get_running_loop()
            future: asyncio.Future[None] = loop.create_future()
            waiting = self._async_enqueue(_async.here(loop).notifier, future, deadline)
            if waiting is not True:
                try:
                    while True:
                        await future
                        if self._async_status(waiting):
                            break
                        if _core.monotonic_ns() >= deadline:
                            if self._async_cancel(waiting):  # a slot handed over at the last moment is kept
                                break
                            return False
                        future = loop.create_future()  # woken to look again
                        self._async_watch(waiting, future, deadline)
                except BaseException:  # cancelled (or closed): leave, passing on a slot handed over meanwhile
                    if self._async_cancel(waiting):
                        self._give_back()
                    raise
        if self._pause_go_in() > 0:
            return await pause.wait_out_async(self, deadline, self._give_back_async)
        return True

    async def _give_back_async(self) -> None:
        self._give_back()

    def _async_release(self) -> None:
        self.release()

    def _timeout_error(self, timeout: object = 120) -> BaseException:
        """What ``with limiter:`` (or a ``limit`` decorator with this timeout) raises after it."""
        return _core.LimiterTimeout(self._timeouts.message(timeout))

    def record_request(self) -> None:
        """Does nothing: kept so code written for RateLimiter runs unchanged. For this kind,
        ``release()`` records the call (it counts in ``get_current_rpm()``)."""

    def set_max_concurrent(self, max_concurrent: int) -> int:
        """Changes the limit now. Extra slots go at once to the oldest waiters (returns how many
        got one); with fewer, calls in flight finish and slots are handed on only below the new
        limit."""
        maximum = whole_number("max_concurrent", max_concurrent, maximum=MAX_CONCURRENT)
        if self._store is not None:
            # Every host follows; waiters everywhere are woken when it rises, and the permits it
            # frees go to whichever try first (0 granted here).
            super().set_max_concurrent(local_share(maximum, self._store))
            self._store.set_max_concurrent(maximum)
            granted = 0
        else:
            granted = super().set_max_concurrent(maximum)
        logger.info("ConcurrencyLimiter %r: max_concurrent set to %d", self.name, max_concurrent)
        return granted

    def close(self) -> None:
        """Wakes every waiter of this process (threads and coroutines) with LimiterClosed; later
        acquires raise it, releases still work. A limiter shared with other processes or hosts
        stays open there; a Redis store's leases still held run out after their lease."""
        super().close()
        if self._store is not None:
            self._store.close()

    def get_stats(self) -> dict[str, Any]:
        """The guide's four keys: ``max_concurrent``, ``active_calls``, ``total_requests``,
        ``available_slots``. With Redis, every host's calls, read in one round trip (while Redis
        is unreachable: this process's view, plus ``backend_error``)."""
        if self._store is not None:
            with self._store.held_read():
                return self._store.get_stats(self._own_stats())
        return self._own_stats()

    def _own_stats(self) -> dict[str, Any]:
        maximum = self.max_concurrent
        active = self.active_calls
        return {
            "max_concurrent": maximum,
            "active_calls": active,
            "total_requests": self.total_requests,
            "available_slots": max(0, maximum - active),
        }

    def metrics(self) -> dict[str, object]:
        """``get_stats()`` plus: ``admitted``, ``timed_out``, ``denied`` (``acquire(timeout=0)``
        refused), ``rate_limited`` (429s reported), ``pauses``, ``paused_for`` (s), ``waiting`` (callers
        queued now), ``wait_p50_s`` / ``wait_p99_s`` (admitted callers' waits, within 5% of the exact
        quantiles, never above the maximum), ``wait_max_s`` (the longest of them, exact),
        ``predicted_wait_s`` (for a caller arriving now: 0 with a slot free, else its place in line
        over the releases per second of the last minute; None when nothing was released).

        With Redis, the shared numbers come from one read of Redis (``timed_out`` and ``denied`` are
        this process's: Redis counts every host's refusals in ``blocked_count``), and it adds ``backend``,
        ``backend_available``, ``backend_outages``, ``leases_expired`` (permits taken back from
        clients that stopped renewing), ``waiting_everywhere`` (the line across every host;
        ``waiting`` is this process's) and ``outage_admitted`` / ``outage_denied``."""
        if self._store is None:
            return {**self.get_stats(), **_common_metrics(self), "predicted_wait_s": self._predicted_wait()}
        with self._store.held_read():
            return {
                **self.get_stats(),
                **_common_metrics(self),
                "predicted_wait_s": self._predicted_wait(),
                **self._store.metrics(),
            }

    def _predicted_wait(self) -> float | None:
        paused = self.paused_for
        ahead = self.waiting
        if ahead == 0 and self.active_calls < self.max_concurrent:
            return paused
        per_second = self.get_current_rpm() / 60.0
        if per_second == 0:
            return None
        return max(paused, (ahead + 1) / per_second)

    def __repr__(self) -> str:
        if self._store is None:
            return f"ConcurrencyLimiter(max_concurrent={self.max_concurrent}, name={self.name!r})"
        return f"ConcurrencyLimiter({self._store.described()})"

    def _feedback_label(self) -> str:
        return f"concurrency limiter {self.name!r}"


def local_share(maximum: int, store: ConcurrencyStore | None) -> int:
    """The cap of the native core: the limit, or a Redis store's in-process fallback's share of it."""
    if store is None or store.local_fraction is None:
        return maximum
    return max(1, math.floor(maximum * store.local_fraction))


def _log_over_release(name: str) -> None:
    """The native core's on_over_release: the first release without a held slot."""
    logger.warning(
        "ConcurrencyLimiter %r: release() without a held slot was ignored; further ones are "
        "counted in over_release_count without being logged",
        name,
    )
