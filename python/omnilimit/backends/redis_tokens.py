"""RedisTokenStore: the store of a RateLimiter with a token budget whose budgets live in Redis,
shared by every process and host that names the same limiter on the same server
(``RateLimiter(..., tokens_per_minute=..., backend="redis://...")``).

A caller takes one request and its N tokens at one instant, or nothing, from two GCRAs kept in
the limiter's bucket (``redis_lua.TOKEN_TAKE``: the request bucket is the one a plain rate
limiter of the same name uses). Nothing is booked ahead: callers that must wait stand in one line
in Redis, across every host, and only the head of the line may take. So what changes the budget
while they wait (tokens a finished call gives back with ``record_request(tokens=used)``, a
provider's cap, a pause, a new limit, on any host) re-plans the line at once: the script that
changed it announces the head on the limiter's channel (``go ID``), and the process of that
waiter wakes it (``redis_wakeups``). The head sleeps until its planned instant (looking at least
once a second); the others wait for their announcement, their heartbeats renewed by their
process's ``Heart``, one round trip a second for all of them (hundreds of coroutines looking
each on their own would queue in the loop's default executor, ahead of the head's look, which has
a thread of its own). A waiter whose process died or stopped leaves the line ``HEARTBEAT_S``
after its last heartbeat, at the next look or beat of any process. A caller whose turn would not
come by its deadline takes no place: it stands by until a change (any message on the channel)
or its deadline, as on a plain Redis rate limiter.

Settling is one round trip (``TOKEN_SETTLE``): the token bucket is charged the difference, or
given it back up to a full bucket. While Redis is unreachable a settle of a reservation made on
Redis is lost (the estimate stands) and the outage policy applies: ``closed``, ``open``, or
``local`` (the limiter's native core at ``local_fraction`` of both the RPM and the TPM; the
reservations it makes are settled there).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from omnilimit import _async, _core
from omnilimit._log import logger
from omnilimit.backends.redis_bucket import interval_us, text
from omnilimit.backends.redis_changes import ChangeFeed
from omnilimit.backends.redis_leases import HEARTBEAT_S, owner_id
from omnilimit.backends.redis_link import IDLE_TTL_S, BackendDown, Call, OneRead, Op, RedisLink, channel_for, keys_for
from omnilimit.backends.redis_outage import OutagePolicy
from omnilimit.backends.redis_waits import ProcessWaits
from omnilimit.backends.redis_wakeups import Wakeups
from omnilimit.pause import sleep_until
from omnilimit.spec import check_policy, name_for_key

FALLBACK_S = 1.0  # the longest the head of the line sleeps without looking at Redis again
BEHIND_S = 5.0  # ... and a waiter behind it (its heartbeat is the process's): a lost announcement
LEAD_S = 0.02  # the head of the line books a turn this close, and sleeps until it
LATE_S = 0.005  # a turn looked at this late is still taken at its instant (as the in-process queue's tolerance)
TAKEN, REFUSED, HEAD, BEHIND = 1, 0, 2, 3  # TOKEN_TAKE's answers


class TokenBudgets:
    """The two budgets of one limiter in Redis and its line: the scripts, one round trip each."""

    __slots__ = ("_pending", "burst", "channel", "keys", "label", "link", "rpm", "token_burst", "tpm")

    def __init__(
        self, link: RedisLink, key_name: str, rpm: float, burst: int, tpm: float, token_burst: int, label: str
    ) -> None:
        self.link = link
        self.keys = keys_for("tokens", key_name)
        self.channel = channel_for(key_name, "rate")
        self.rpm, self.burst, self.tpm, self.token_burst = rpm, burst, tpm, token_burst
        self.label = label
        self._pending = False  # a configuration to write when Redis returns

    def args(self) -> list[Any]:
        return [
            repr(interval_us(self.rpm)),
            self.burst,
            IDLE_TTL_S,
            repr(interval_us(self.tpm)),
            self.token_burst,
            self.channel,
        ]

    @property
    def origin(self) -> str:
        """This process's id in a pause it publishes (its own core has paused already)."""
        return f"{os.getpid()}:{id(self):x}"

    def configure(self, announce: bool = False) -> None:
        """Writes both budgets' configuration for every host (while Redis is unreachable, when it
        returns). ``announce``: warns when it replaces another host's."""
        try:
            before = [text(v) for v in self.link.run("TOKEN_CONFIGURE", self.keys, self.args())]
        except BackendDown:
            self._pending = True
            return
        self._pending = False
        interval, burst, tinterval, tburst = before
        if not announce or not interval:
            return
        if float(interval) != interval_us(self.rpm) or int(burst) != self.burst:
            logger.warning(
                "%s: the shared limiter on Redis ran at %.6g RPM with burst %s: it now runs at this limiter's "
                "%s RPM with burst %d, on every host (the latest configuration wins)",
                self.label,
                60e6 / float(interval),
                burst,
                self.rpm,
                self.burst,
            )
        if tinterval and (float(tinterval) != interval_us(self.tpm) or int(tburst) != self.token_burst):
            logger.warning(
                "%s: the shared token budget on Redis ran at %.6g TPM with token burst %s: it now runs at this "
                "limiter's %s TPM with token burst %d, on every host (the latest configuration wins)",
                self.label,
                60e6 / float(tinterval),
                tburst,
                self.tpm,
                self.token_burst,
            )

    def configure_pending(self) -> None:
        if self._pending:
            self.configure()

    def take(self, owner: str, tokens: int, deadline: int, count_refusal: bool, join: bool) -> tuple[int, float]:
        """TOKEN_TAKE: (TAKEN | REFUSED | HEAD | BEHIND, the wait planned in seconds). Raises BackendDown."""
        return self.link.drive(self.take_op(owner, tokens, deadline, count_refusal, join))

    def take_op(self, owner: str, tokens: int, deadline: int, count_refusal: bool, join: bool) -> Op[tuple[int, float]]:
        max_wait_us = -1 if deadline >= _core.FOREVER_NS else max(0, (deadline - _core.monotonic_ns()) // 1000)
        reply = yield Call(
            "TOKEN_TAKE",
            self.keys,
            [
                *self.args(),
                owner,
                tokens,
                max_wait_us,
                int(count_refusal),
                int(join),
                int(HEARTBEAT_S * 1e6),
                int(LEAD_S * 1e6),
                int(LATE_S * 1e6),
            ],
        )
        return int(reply[0]), int(reply[1]) / 1e6

    def beat(self, owners: list[str]) -> None:
        """Renews the heartbeats of ``owners`` in the line (unreachable: nothing; the outage
        policy meets them at their next look)."""
        with contextlib.suppress(BackendDown):
            self.link.run("TOKEN_BEAT", self.keys, [*self.args(), int(HEARTBEAT_S * 1e6), *owners])

    def leave(self, owner: str, refused: bool) -> None:
        """Leaves the line (unreachable: the heartbeat takes the waiter out)."""
        self.link.drive(self.leave_op(owner, refused))

    def leave_op(self, owner: str, refused: bool) -> Op[None]:
        with contextlib.suppress(BackendDown):
            yield Call("TOKEN_LEAVE", self.keys, [*self.args(), owner, int(refused)])

    def settle(self, diff: int) -> None:
        """Charges ``diff`` tokens (negative: gives them back). Unreachable: lost, with a WARNING."""
        self.link.drive(self.settle_op(diff))

    def settle_op(self, diff: int) -> Op[None]:
        try:
            yield Call("TOKEN_SETTLE", self.keys, [*self.args(), diff])
        except BackendDown:
            logger.warning("%s: Redis is unreachable: a settle of %+d tokens was lost", self.label, diff)

    def hold(self, mode: str, value: int) -> float | None:
        """TOKEN_HOLD (``pause`` µs, or at most ``requests`` / ``tokens`` available now): the
        seconds until a request may go (None: unreachable)."""
        try:
            return int(self.link.run("TOKEN_HOLD", self.keys, [*self.args(), mode, value, self.origin])) / 1e6
        except BackendDown:
            return None

    def snapshot(self) -> list[Any] | None:
        """TOKEN_STATS, one round trip (None: unreachable)."""
        try:
            return list(self.link.run("TOKEN_STATS", self.keys, self.args()))
        except BackendDown:
            return None


class Heart:
    """Renews the heartbeats of this process's waiters behind the head of the line, one round trip
    a second for all of them (``TokenBudgets.beat``), so that they wait for their announcement
    without looking: hundreds of coroutines would otherwise queue their looks in the loop's
    default executor. A daemon thread, running while there are waiters. Thread-safe."""

    def __init__(self, budgets: TokenBudgets) -> None:
        self._budgets = budgets
        self._lock = threading.Lock()
        self._owners: set[str] = set()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def add(self, owner: str) -> None:
        with self._lock:
            self._owners.add(owner)
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name="omnilimit-redis-heartbeats", daemon=True)
                self._thread.start()

    def discard(self, owner: str) -> None:
        with self._lock:
            self._owners.discard(owner)

    def stop(self) -> None:
        self._stop.set()

    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._owners = set()
        self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_S / 3):
            with self._lock:
                owners = list(self._owners)
                if not owners:
                    self._thread = None
                    return
            self._budgets.beat(owners)


class _HeadLooks:
    """One thread of this process for the looks of the heads of the line made from coroutines
    (``acquire_async``), so that they do not queue behind other work in the loop's default
    executor. Made when first needed, and again in a forked child (the parent's thread is not
    the child's)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._pid = 0
        self._closed = False

    def executor(self) -> concurrent.futures.ThreadPoolExecutor | None:
        """The thread's executor (None once closed: the loop's default one). Two callers racing
        here may make two executors: the one dropped never started a thread."""
        if self._closed:
            return None
        if self._executor is None or self._pid != os.getpid():
            named = f"omnilimit-redis-head {self._name}"
            self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=named)
            self._pid = os.getpid()
        return self._executor

    def shutdown(self) -> None:
        self._closed = True
        executor = self._executor
        if executor is not None and self._pid == os.getpid():
            executor.shutdown(wait=False)


class RedisTokenStore:
    """The budgets of a ``RateLimiter`` with a token budget, shared through Redis: every host
    naming the same ``provider_name`` on the same server shares one request budget, one token
    budget and one line of waiters (the latest configuration written wins).

    ``on_backend_error`` is ``closed`` (wait for Redis until the timeout, then refuse) or ``open``
    (go, unlimited). The figures are the shared state's: ``current_rpm`` and ``current_tpm``
    count every host's admissions and tokens charged in the last 60 s. Every method is
    thread-safe.
    """

    __slots__ = (
        "__weakref__",
        "_budgets",
        "_feed",
        "_heads",
        "_heart",
        "_limiter",
        "_link",
        "_mine",
        "_outage",
        "_reads",
        "_wakeups",
        "local_fraction",
        "name",
    )

    def __init__(
        self,
        backend: object,
        name: str,
        rpm: int | float,
        burst: int,
        tpm: int | float,
        token_burst: int,
        *,
        on_backend_error: str = "closed",
        local_fraction: float | None = None,
    ) -> None:
        policy, self.local_fraction = check_policy(on_backend_error, local_fraction)
        self.name = name
        label = f"RateLimiter {name!r}"
        self._link = RedisLink(backend, label)
        self._budgets = TokenBudgets(self._link, name_for_key(name), rpm, burst, tpm, token_burst, label)
        self._outage = OutagePolicy(policy, self.local_fraction, self._link)
        self._reads = OneRead(self._budgets.snapshot)
        self._limiter: weakref.ref[Any] | None = None
        self._wakeups = Wakeups()
        me = weakref.ref(self)
        self._feed = ChangeFeed(self._link, self._budgets.channel, lambda message: _notify(me, message))
        weakref.finalize(self, self._feed.stop)
        self._mine = ProcessWaits()
        self._heads = _HeadLooks(name)  # where the head of the line looks from a coroutine (acquire_async)
        weakref.finalize(self, self._heads.shutdown)
        self._heart = Heart(self._budgets)
        _hearts.add(self._heart)
        weakref.finalize(self, self._heart.stop)
        self._link.on_recovery.append(self._budgets.configure_pending)
        self._budgets.configure(announce=True)

    def bind(self, limiter: Any) -> None:
        self._limiter = weakref.ref(limiter)

    @property
    def backend(self) -> str:
        """Where the state lives (the URL without its password)."""
        return self._link.where

    @property
    def on_backend_error(self) -> str:
        return self._outage.name

    @property
    def backend_available(self) -> bool:
        return not self._link.down

    @property
    def rpm(self) -> int | float:
        return self._budgets.rpm

    # ---- acquiring ------------------------------------------------------------------------------

    def acquire(self, limiter: Any, timeout: float | None = 60, tokens: int = 0, fail_fast: bool = False) -> bool:
        """Takes a request and ``tokens`` together, waiting up to ``timeout`` seconds in one line
        with every host's waiters. True as soon as the caller may go; False once ``timeout`` has
        passed (at once with ``fail_fast=True`` or ``timeout=0`` when it cannot go now), nothing
        taken. Raises LimiterClosed."""
        timeout_ns, deadline = _async.deadline(timeout)
        may_wait = timeout_ns != 0 and not fail_fast
        started = time.monotonic()
        owner = owner_id()
        waiter = self._wakeups.register(owner)
        in_line = False
        try:
            while True:
                seen = limiter._standby_generation()  # before the look: a change after it ends a stand-by
                waiter.before_try()  # before the look at closed: close() sets it, then wakes
                if limiter.closed:
                    raise _core.LimiterClosed("the limiter is closed")
                last_look = not may_wait or _core.monotonic_ns() >= deadline
                try:
                    answer, wait_s = self._budgets.take(owner, tokens, deadline, last_look, may_wait)
                except BackendDown:
                    in_line = False  # its heartbeat takes it out of the line
                    decided = self._outage.answer(
                        limiter, deadline, functools.partial(limiter._acquire_here, tokens=tokens), _here
                    )
                    if decided is None:
                        continue
                    return decided
                in_line = answer in (HEAD, BEHIND)
                self._heart_of(owner, answer)
                if answer == TAKEN:
                    if wait_s > 0:
                        self._sleep(limiter, wait_s, tokens)
                    self._mine.admitted(started)
                    _LOCAL.set(False)
                    return True
                if answer == REFUSED and last_look:
                    return False
                if self._feed.listen(min(_async.seconds_left(deadline), 1.0)):
                    continue  # subscribed just now: a change may have been published before, look again
                with self._mine.waiting():
                    if in_line:
                        waiter.wait(_bound(answer, wait_s, deadline))
                    else:
                        limiter._stand_by(seen, deadline)
        except BaseException:
            if in_line:
                self._budgets.leave(owner, False)
            raise
        finally:
            self._heart.discard(owner)
            self._wakeups.unregister(owner)

    async def acquire_async(
        self, limiter: Any, timeout: float | None = 60, tokens: int = 0, fail_fast: bool = False
    ) -> bool:
        """``acquire()`` for a coroutine: each look is awaited on the loop with a ``redis.asyncio``
        client, else runs in the loop's default executor; between looks it waits on the loop.
        Cancelled, it leaves the line; a take that completes as it is cancelled is settled as
        unused."""
        timeout_ns, deadline = _async.deadline(timeout)
        may_wait = timeout_ns != 0 and not fail_fast
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        owner = owner_id()
        waiter = self._wakeups.register(owner)
        standing: _core.AsyncWait | None = None
        in_line = False
        answer = REFUSED
        try:
            while True:
                stood = None
                if standing is not None:
                    standing.future = stood = loop.create_future()  # before the look
                waiter.before_try()  # before the look at closed: close() sets it, then wakes
                if limiter.closed:
                    raise _core.LimiterClosed("the limiter is closed")
                last_look = not may_wait or _core.monotonic_ns() >= deadline
                # Without a redis.asyncio client, the head's looks (and an announced waiter's) skip the
                # queue of the loop's default executor, where hundreds of waiters' looks may wait.
                ahead = answer == HEAD or waiter.rung
                executor = self._heads.executor() if ahead and not self._link.on_the_loop else None
                look = self._budgets.take_op(owner, tokens, deadline, last_look, may_wait)
                try:
                    attempt = self._link.submit(loop, look, executor)
                except RuntimeError:  # the head's executor was shut down: the limiter closed meanwhile?
                    if limiter.closed:
                        raise _core.LimiterClosed("the limiter is closed") from None
                    raise
                try:
                    answer, wait_s = await asyncio.shield(attempt)
                except BackendDown:
                    in_line = False
                    decided = await self._outage.answer_async(
                        limiter, deadline, functools.partial(limiter._acquire_async_here, tokens=tokens), _here
                    )
                    if decided is None:
                        continue
                    return decided
                except asyncio.CancelledError:
                    attempt.add_done_callback(lambda done: self._undo(done, owner, tokens))
                    in_line = False
                    raise
                in_line = answer in (HEAD, BEHIND)
                self._heart_of(owner, answer)
                if answer == TAKEN:
                    if wait_s > 0:
                        await self._sleep_async(limiter, loop, wait_s, tokens)
                    self._mine.admitted(started)
                    _LOCAL.set(False)
                    return True
                if answer == REFUSED and last_look:
                    return False
                if await self._feed.listen_async(min(_async.seconds_left(deadline), 1.0)):
                    continue  # subscribed just now: a change may have been published before, look again
                if in_line:
                    until = _core.monotonic_ns() + int(_bound(answer, wait_s, deadline) * 1e9)
                    with self._mine.waiting():
                        await _async.wake_or_timer(loop, waiter.future(loop), until)
                    continue
                if standing is None or stood is None:  # registered from now on: look again first
                    standing = _core.AsyncWait(_async.notifier(loop))
                    limiter._async_stand_by(standing)
                    continue
                with self._mine.waiting():
                    await _async.wake_or_timer(loop, stood, deadline)
        except BaseException:
            if in_line:
                await asyncio.shield(self._link.submit(loop, self._budgets.leave_op(owner, False)))
            raise
        finally:
            self._heart.discard(owner)
            self._wakeups.unregister(owner)
            if standing is not None:
                limiter._async_stand_by_end(standing)

    def _heart_of(self, owner: str, answer: int) -> None:
        """A waiter behind the head has its heartbeat renewed by the process; the head looks itself."""
        if answer == BEHIND:
            self._heart.add(owner)
        else:
            self._heart.discard(owner)

    def _sleep(self, limiter: Any, wait_s: float, tokens: int) -> None:
        """Taken with a wait (the lead, or the debt of a claim above the token burst): the caller
        goes when it is over. close() or Ctrl-C meanwhile gives its tokens back and raises."""
        with self._mine.waiting():
            try:
                sleep_until(limiter, _core.monotonic_ns() + int(wait_s * 1e9))
            except BaseException:
                self._budgets.settle(-tokens)
                raise

    async def _sleep_async(self, limiter: Any, loop: asyncio.AbstractEventLoop, wait_s: float, tokens: int) -> None:
        until = _core.monotonic_ns() + int(wait_s * 1e9)
        with self._mine.waiting():
            try:
                while _core.monotonic_ns() < until:
                    await _async.stand_by(limiter, until)  # raises LimiterClosed
            except BaseException:
                await asyncio.shield(self._link.submit(loop, self._budgets.settle_op(-tokens)))
                raise

    def _undo(self, attempt: asyncio.Future[tuple[int, float]], owner: str, tokens: int) -> None:
        """A look cancelled in flight: a take it made is settled as unused (its tokens go back; the
        request stays spent), a place it took in the line is left."""
        if attempt.cancelled() or attempt.exception() is not None:
            return
        answer = attempt.result()[0]
        if answer == TAKEN and tokens:
            self._budgets.settle(-tokens)
        elif answer in (HEAD, BEHIND):
            self._budgets.leave(owner, False)

    def detach_local(self) -> bool:
        """Whether the calling thread's (or task's) latest reservation was made by the ``local``
        policy in this process; forgotten here (its detached reservation settles it there)."""
        here = _LOCAL.get()
        _LOCAL.set(False)
        return here

    def settle(self, reserved: int, used: int) -> None:
        """A finished call used ``used`` tokens of the ``reserved``: charges or gives back the
        difference, for every host, and the line is re-planned. A reservation that the ``local``
        policy made in this process while Redis was away (the latest of this thread or task) is
        settled there."""
        if _LOCAL.get():
            _LOCAL.set(False)
            limiter = None if self._limiter is None else self._limiter()
            if limiter is not None:
                limiter._settle_here(reserved, used)
            return
        if used != reserved:
            self._budgets.settle(used - reserved)

    def listen_for_changes(self, wait_s: float) -> None:
        """Subscribes (once) to the changes every host publishes: each wakes this process's
        callers standing by (a CombinedLimiter's, whose rate turn was out of reach)."""
        self._feed.listen(wait_s)

    def close(self) -> None:
        """Stops listening for other hosts' changes; this process's waiters in the line look again
        (and meet the closed limiter)."""
        self._feed.stop()
        self._wakeups.wake_all()
        self._heads.shutdown()
        self._heart.stop()

    # ---- changes every host follows ---------------------------------------------------------------

    def set_rate(self, requests_per_minute: int | float) -> None:
        """Changes the shared request rate (every host follows; what is owed is converted)."""
        self._budgets.rpm = requests_per_minute
        self._budgets.configure()

    def set_burst(self, burst_size: int) -> None:
        self._budgets.burst = burst_size
        self._budgets.configure()

    def set_tokens_per_minute(self, tokens_per_minute: int | float) -> None:
        """Changes the shared token rate (every host follows; what is owed is converted)."""
        self._budgets.tpm = tokens_per_minute
        self._budgets.configure()

    def set_token_burst(self, token_burst: int) -> None:
        self._budgets.token_burst = token_burst
        self._budgets.configure()

    def limit_available(self, requests: int) -> None:
        """Keeps at most ``requests`` available now, for every host."""
        self._budgets.hold("requests", requests)

    def limit_token_budget(self, tokens: int) -> None:
        """Keeps at most ``tokens`` of the token budget available now, for every host."""
        self._budgets.hold("tokens", tokens)

    def pause(self, seconds: float) -> float | None:
        """Nobody, on any host, goes for ``seconds`` (a provider's 429); the other hosts pause
        their cores too. Returns the seconds until going, None while Redis is unreachable."""
        return self._budgets.hold("pause", int(seconds * 1e6))

    # ---- the shared state ------------------------------------------------------------------------

    def held_read(self) -> Any:
        return self._reads.held()

    def figure(self, name: str, local: Any, *args: Any) -> Any:
        """Shared where Redis holds it (while unreachable: this process's view); ``waiting``,
        ``wait_quantile`` and ``wait_max`` are this process's."""
        if name in ProcessWaits.FIGURES:
            return self._mine.figure(name, *args)
        if name == "interval_ns":
            return int(interval_us(self._budgets.rpm) * 1000)
        shared = self._reads.get()
        if shared is None:
            if name == "total_requests":
                return self._outage.admitted
            if name == "blocked_count":
                return self._outage.denied
            return local
        if name == "predicted_wait":
            tokens = int(args[0]) if args else 0
            return _planned_wait(shared, tokens)
        if name in _SHARED:
            return int(shared[_SHARED[name]])
        return local

    def get_stats(self, local: dict[str, Any]) -> dict[str, Any]:
        """The guide's keys and ``tpm_limit`` / ``current_tpm``, read from Redis (every host's
        numbers); while Redis is unreachable: ``local`` plus ``backend_error``."""
        shared = self._reads.get()
        if shared is None:
            return {**local, "backend_error": self._link.last_error}
        rpm, tpm = _shown(self._budgets.rpm, shared[1]), _shown(self._budgets.tpm, shared[8])
        current = int(shared[5])
        return {
            "provider": self.name,
            "rpm_limit": rpm,
            "current_rpm": current,
            "tokens_available": int(shared[0]),
            "total_requests": int(shared[3]),
            "blocked_count": int(shared[4]),
            "utilization": current / float(rpm) * 100.0,
            "tpm_limit": tpm,
            "current_tpm": int(shared[10]),
        }

    def metrics(self) -> dict[str, object]:
        shared = self._reads.get()
        return {
            "backend": self._link.where,
            "backend_available": not self._link.down,
            "backend_outages": self._link.outages,
            "waiting_everywhere": int(shared[11]) if shared is not None else None,
            "tokens_queued": int(shared[12]) if shared is not None else None,
            "outage_admitted": self._outage.admitted,
            "outage_denied": self._outage.denied,
        }

    def watch_waits(self, hook: Callable[[float], object] | None, threshold_s: float) -> None:
        self._mine.watch(hook, threshold_s)

    def described(self) -> str:
        b = self._budgets
        return (
            f"requests_per_minute={b.rpm!r}, burst_size={b.burst}, provider_name={self.name!r}, "
            f"tokens_per_minute={b.tpm!r}, token_burst={b.token_burst}, backend={self._link.where!r}, "
            f"on_backend_error={self._outage.name!r}"
        )


_SHARED = {
    "tokens_available": 0,
    "total_requests": 3,
    "blocked_count": 4,
    "get_current_rpm": 5,
    "token_budget_available": 7,
    "get_current_tpm": 10,
}
"""Where TOKEN_STATS answers each shared figure."""


def _planned_wait(shared: list[Any], tokens: int) -> float:
    """The wait of a caller claiming ``tokens`` that arrived now, behind the line (seconds)."""
    interval, burst = float(text(shared[1])), int(shared[2])
    tinterval, tburst = float(text(shared[8])), int(shared[9])
    line, queued = int(shared[11]), int(shared[12])
    by_requests = int(shared[6]) + (line + 1) * interval - burst * interval
    by_tokens = int(shared[13]) + (queued + tokens) * tinterval - tburst * tinterval
    return max(0.0, by_requests, by_tokens) / 1e6


def _shown(mine: int | float, stored: Any) -> int | float:
    """This process's limit when Redis holds the same, else another host's as a user would write it."""
    interval = float(text(stored))
    if abs(interval - interval_us(mine)) <= 1e-9 * interval:
        return mine
    rounded = float(f"{60e6 / interval:.9g}")
    return int(rounded) if rounded.is_integer() else rounded


def _bound(answer: int, wait_s: float, deadline: int) -> float:
    """How long a waiter in the line sleeps before looking again unannounced: the head until its
    planned turn, at most FALLBACK_S (its heartbeat); the others until announced, at most BEHIND_S
    (their process renews their heartbeats); never past the deadline."""
    left = _async.seconds_left(deadline)
    if answer == HEAD:
        return max(0.0, min(wait_s, FALLBACK_S, left))
    return max(0.0, min(BEHIND_S, left))


# Whether the latest reservation of this thread (or task) was the local policy's, in this process.
_LOCAL: contextvars.ContextVar[bool] = contextvars.ContextVar("omnilimit.redis_tokens.local", default=False)


def _here(how: str) -> None:
    """An admission by the outage policy: ``local`` reserved in this process (settled there);
    ``open`` reserved nothing."""
    _LOCAL.set(how == "local")


def _notify(store: weakref.ref[RedisTokenStore], message: str) -> None:
    """The feed heard a message: ``go ID`` wakes that waiter if it is this process's; another
    host's pause pauses this process's core; every message makes the callers standing by look
    again. "" (the subscription broke): every waiter looks again."""
    found = store()
    if found is None:
        return
    kind, _, rest = message.partition(" ")
    if kind == "go":
        found._wakeups.wake([rest])
    elif kind == "":
        found._wakeups.wake_all()
    limiter = None if found._limiter is None else found._limiter()
    if limiter is None:
        return
    if kind == "pause":
        value, _, origin = rest.partition(" ")
        if origin != found._budgets.origin:
            _core.RateCore.pause(limiter, int(value) / 1e6)
    limiter._notify_standing()


_hearts: weakref.WeakSet[Heart] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for heart in list(_hearts):
        heart.after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
