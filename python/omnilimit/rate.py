"""RateLimiter: at most ``requests_per_minute`` requests per minute (a GCRA token bucket)."""

from __future__ import annotations

import asyncio

from omnilimit import _async, _core
from omnilimit._log import TimeoutWarnings, logger, shown_timeout
from omnilimit._validate import MAX_COUNT, flag, label, positive_rate, token_count, whole_number
from omnilimit.feedback import ProviderFeedback, _common_metrics
from omnilimit.headers import RateLimitInfo
from omnilimit.spec import DEFAULT_BURST, is_redis, shared_name


class RateLimiter(_core.RateCore, ProviderFeedback, _async.AsyncLimiting):
    """At most ``requests_per_minute`` requests per minute, with bursts of ``burst_size``.

    The bucket is one atomic word (GCRA): ``acquire(timeout=60) -> bool`` reserves the next free
    instant and sleeps exactly until it (no polling), so waiters go in arrival order. It returns
    True as soon as the caller may go and False only once ``timeout`` has passed: a caller whose
    turn lies beyond its timeout books nothing and stands by, going if a change brings its turn
    within reach (a reservation given back, a faster rate), so code that ignores the answer or
    retries in a loop never spins. ``None`` waits forever, ``0`` tries once; ``fail_fast=True``
    answers False at once, booking nothing, when the turn lies beyond the timeout
    (``predicted_wait()`` tells how far it is). ``record_request()`` records a request made, which
    ``get_current_rpm()`` counts over the last 60 seconds. ``with limiter:`` acquires with the
    default timeout (raising ``LimiterTimeout``) and records the request on exit. ``close()``
    wakes every waiter with ``LimiterClosed``.

    Coroutines share the same budget and order: ``await acquire_async(timeout=60, tokens=0)``,
    ``async with limiter:``, ``@limiter.limit``; they sleep on their event loop's timer.

    ``backend="shm"`` (or ``"shm://NAME"``; the name defaults to ``provider_name``) keeps the
    bucket, the request window, the pause and the counters in a shared-memory segment: every
    process that opens the same name shares one budget (``omnilimit.remove_shared(name)`` removes
    the segment). Not yet with a token budget.

    ``backend="redis://host:6379/0"`` (``rediss://``, ``redis+cluster://``, or a redis-py client)
    makes a ``RedisRateLimiter``: one budget for every host that names the same ``provider_name``
    on that server, with ``on_backend_error`` (``closed`` | ``open`` | ``local``) and
    ``local_fraction`` saying what happens while Redis is unreachable.

    ``burst_size`` and ``token_burst`` default to 1 (``DEFAULT_BURST``: strict pacing). With a
    token budget, callers that must wait queue in arrival order and go when both budgets allow
    them; the queue is re-planned whenever the budget changes (tokens given back, a provider's
    headers, a new limit). Every method is thread-safe; ``get_stats()`` reads atomics and never
    blocks.
    """

    __slots__ = ("_rpm", "_timeouts", "_tpm", "provider_name")

    def __new__(cls, *args: object, **kwargs: object) -> RateLimiter:
        if cls is RateLimiter and is_redis(kwargs.get("backend")):
            from omnilimit.backends.redis_rate import RedisRateLimiter

            cls = RedisRateLimiter
        return super().__new__(cls)

    def __init__(
        self,
        requests_per_minute: int | float = 60,
        burst_size: int | None = None,
        provider_name: str = "default",
        *,
        tokens_per_minute: int | float | None = None,
        token_burst: int | None = None,
        backend: object = None,
        on_backend_error: str | None = None,
        local_fraction: float | None = None,
    ) -> None:
        if on_backend_error is not None or local_fraction is not None:
            raise ValueError("on_backend_error and local_fraction apply only to a Redis backend")
        rpm = positive_rate("requests_per_minute", requests_per_minute)
        shm_name = shared_name(backend, default=provider_name)
        burst = DEFAULT_BURST if burst_size is None else whole_number("burst_size", burst_size)
        tpm = 0.0 if tokens_per_minute is None else positive_rate("tokens_per_minute", tokens_per_minute)
        if token_burst is not None and tokens_per_minute is None:
            raise ValueError("token_burst needs tokens_per_minute (a token budget) to apply to")
        tokens_at_once = (
            (DEFAULT_BURST if token_burst is None else whole_number("token_burst", token_burst)) if tpm else 1
        )
        checked_name = label("provider_name", provider_name)
        if shm_name and tpm:  # refused before the segment is opened: a refused limiter changes nothing shared
            raise ValueError("a limiter with a token budget cannot be shared between processes yet")
        super().__init__(rpm, burst, tpm, tokens_at_once, shm_name or "")
        self.provider_name = checked_name
        self._timeouts = TimeoutWarnings()
        if self._shared_limits_before is not None:
            was_rpm, was_burst = self._shared_limits_before
            logger.warning(
                "RateLimiter %r: the shared segment %r ran at %.6g RPM with burst %d: it now runs at this "
                "limiter's %s RPM with burst %d, in every process (the latest configuration wins)",
                self.provider_name,
                shm_name,
                was_rpm,
                was_burst,
                requests_per_minute,
                burst,
            )
        self._rpm = requests_per_minute  # shown as given: 500 stays 500, 0.5 stays 0.5
        self._tpm = tokens_per_minute
        logger.debug(
            "RateLimiter %r: %s RPM, burst %d%s%s",
            self.provider_name,
            self._rpm,
            burst,
            f", {tokens_per_minute} TPM, token burst {tokens_at_once}" if tpm else "",
            f", shared through /dev/shm/omnilimit.{shm_name}" if shm_name else "",
        )

    @property
    def rpm(self) -> int | float:
        """The limit in requests per minute, as given."""
        return self._rpm

    @property
    def burst_size(self) -> int:
        """Requests that may go at once on a full bucket."""
        return self.burst

    def get_rpm(self) -> int:
        """Alias of ``get_current_rpm()``: the requests of the last 60 s, not the limit (``rpm``).
        Both names are OmniGen's."""
        return self.get_current_rpm()

    def requests_available(self) -> int:
        """Requests that could go at once now, without waiting: what ``tokens_available()`` (the
        older name, after the bucket's tokens) answers. With a token budget, its tokens are
        ``token_budget_available()``."""
        return self.tokens_available()

    @property
    def tpm(self) -> int | float | None:
        """The token budget in tokens per minute, as given (None: no token budget)."""
        return self._tpm

    # ---- live changes ---------------------------------------------------------------------------

    def set_rate(self, requests_per_minute: int | float) -> None:
        """Changes the rate now, keeping what is owed (converted to the new pace). Waiters
        sleeping on a reservation move with it: a faster rate wakes them sooner (at once if their
        turn has come), a slower one later (up to their timeout); with a token budget, the queue
        is re-planned the same way."""
        rpm = positive_rate("requests_per_minute", requests_per_minute)
        super().set_rate(rpm)
        self._rpm = requests_per_minute
        logger.info("RateLimiter %r: rate set to %s RPM", self.provider_name, requests_per_minute)

    def set_burst(self, burst_size: int) -> None:
        """Changes the burst now. Without a token budget it applies to bookings made from now on;
        with one, the queued callers are re-planned."""
        super().set_burst(whole_number("burst_size", burst_size))
        logger.info("RateLimiter %r: burst set to %d", self.provider_name, burst_size)

    def set_tokens_per_minute(self, tokens_per_minute: int | float) -> None:
        """Changes the token budget's rate now, keeping what is owed (converted to the new pace);
        the queued callers are re-planned, and one that may go now goes now. Raises ValueError for
        a limiter created without a token budget."""
        tpm = positive_rate("tokens_per_minute", tokens_per_minute)
        super().set_tokens_per_minute(tpm)
        self._tpm = tokens_per_minute
        logger.info("RateLimiter %r: token budget set to %s TPM", self.provider_name, tokens_per_minute)

    def set_token_burst(self, token_burst: int) -> None:
        """Changes the token burst now; the queued callers are re-planned."""
        super().set_token_burst(whole_number("token_burst", token_burst))

    async def acquire_async(self, timeout: float | None = 60, tokens: int = 0, fail_fast: bool = False) -> bool:
        """``acquire()`` for a coroutine: takes a request (and ``tokens``, with a budget), waiting
        on the running event loop's timer (never blocking it) up to ``timeout`` seconds, in one
        order with threads and other loops. The same contract: True as soon as the caller may go,
        False once ``timeout`` has passed (at once with ``fail_fast=True`` when the turn lies beyond
        it), nothing taken then. Cancellation-safe: a reservation whose time has not come is
        refunded, a queued ticket leaves the queue. ``record_request(tokens=used)`` in the same task
        settles the reservation. Raises LimiterClosed, ValueError for a bad timeout, token count
        or flag."""
        _, deadline = _async.deadline(timeout)
        token_count(tokens)
        fail_fast = flag("fail_fast", fail_fast)
        if self.closed:
            raise _core.LimiterClosed("the limiter is closed")
        while True:
            go_in = self._pause_go_in()
            if go_in > 0:  # paused: book only at the end (plus this caller's jitter)
                now = _core.monotonic_ns()
                go_at = now + int(go_in * 1e9)
                if go_at > deadline and (fail_fast or now >= deadline):
                    break
                await _async.stand_by(self, min(go_at, deadline))
                continue
            took: bool | None
            if self.has_token_budget:
                took = await self._ticket_async(tokens, deadline, fail_fast)
            else:
                took = await self._reserve_async(deadline, fail_fast)
            if took is None:
                continue  # book again (the rate changed too often to follow, or the loop ran late)
            if not took:
                break
            if self._pause_go_in() > 0:
                continue  # a pause declared meanwhile voids the slot: wait for its end
            if self.has_token_budget:
                self._async_reservation.set(tokens)
            return True
        self._refused(timeout, fail_fast)
        return False

    async def _reserve_async(self, deadline: int, fail_fast: bool) -> bool | None:
        """One booking: True once its instant came, False at the deadline (or at once, failing
        fast), None to book again."""
        loop = asyncio.get_running_loop()
        waiter = _core.AsyncWait(_async.notifier(loop))
        standing_by = False
        try:
            while True:  # a turn beyond the deadline books nothing: stand by until a change or the deadline
                waiter.future = future = loop.create_future()
                delay = self._async_reserve(waiter, deadline)
                if delay is not None:
                    break
                if fail_fast or _core.monotonic_ns() >= deadline:
                    return False
                if not standing_by:  # registered from now on: look once more before waiting
                    self._async_stand_by(waiter)
                    standing_by = True
                    continue
                await _async.wake_or_timer(loop, future, deadline)
        finally:
            if standing_by:
                self._async_stand_by_end(waiter)
        try:
            while delay > 0:  # until the instant, or a rate change (which may move it either way)
                await _async.wake_or_timer(loop, future, min(deadline, _core.monotonic_ns() + int(delay * 1e9)))
                waiter.future = future = loop.create_future()
                delay = self._async_reserve_check(waiter)
                if delay > 0 and _core.monotonic_ns() >= deadline:
                    self._async_refund(waiter)  # a slower rate moved the instant past the deadline
                    return False
        except BaseException:
            self._async_refund(waiter)
            raise
        return None if delay < 0 else True

    async def _ticket_async(self, tokens: int, deadline: int, fail_fast: bool) -> bool:
        loop = asyncio.get_running_loop()
        waiter = _core.AsyncWait(_async.notifier(loop))
        waiter.future = future = loop.create_future()
        status = self._async_ticket(waiter, tokens, deadline, fail_fast)
        try:
            while status == 1:  # queued, or standing by: woken by every re-plan
                status, wake_in = self._async_ticket_poll(waiter)
                if status != 1:
                    break
                if _core.monotonic_ns() >= deadline:
                    self._async_ticket_leave(waiter)
                    return False
                at = deadline if wake_in is None else min(deadline, _core.monotonic_ns() + int(wake_in * 1e9))
                await _async.wake_or_timer(loop, future, at)
                waiter.future = future = loop.create_future()
        except BaseException:
            self._async_ticket_leave(waiter)
            raise
        return status == 0

    def _async_release(self) -> None:
        self.record_request()

    def _timeout_error(self, timeout: object = 60) -> BaseException:
        """What ``with limiter:`` (or a ``limit`` decorator with this timeout) raises after it."""
        return _core.LimiterTimeout(f"Rate limit timeout after {shown_timeout(timeout)}s for {self.provider_name}")

    def detach_reservation(self) -> TokenReservation:
        """The calling thread's latest reservation on this limiter, to settle from another thread
        (``record_request(tokens=...)`` settles it only in the thread that acquired). Raises
        KeyError when the thread holds none (not acquired, already settled, or no token budget)."""
        return TokenReservation(self, self._detach_reservation())

    def get_stats(self) -> dict[str, object]:
        """The guide's keys: ``provider``, ``rpm_limit``, ``current_rpm``, ``tokens_available``,
        ``total_requests``, ``blocked_count``, ``utilization`` (current RPM as % of the limit); with
        a token budget also ``tpm_limit`` and ``current_tpm``."""
        current = self.get_current_rpm()
        stats: dict[str, object] = {
            "provider": self.provider_name,
            "rpm_limit": self._rpm,
            "current_rpm": current,
            "tokens_available": self.tokens_available(),
            "total_requests": self.total_requests,
            "blocked_count": self.blocked_count,
            "utilization": current / self._rpm * 100.0,
        }
        if self._tpm is not None:
            stats["tpm_limit"] = self._tpm
            stats["current_tpm"] = self.get_current_tpm()
        return stats

    def metrics(self) -> dict[str, object]:
        """``get_stats()`` plus: ``admitted``, ``timed_out``, ``denied`` (refused without a wait:
        ``timeout=0``, or ``fail_fast``), ``rate_limited`` (429s reported), ``pauses``,
        ``paused_for`` (s), ``waiting`` (callers asleep or standing by now), ``wait_p50_s`` /
        ``wait_p99_s`` (admitted callers' waits, within 5% of the exact quantiles, never above the
        maximum), ``wait_max_s`` (the longest of them, exact), ``predicted_wait_s`` (for a caller
        arriving now)."""
        return {
            **self.get_stats(),
            **_common_metrics(self),
            "predicted_wait_s": self.predicted_wait(),
        }

    def __repr__(self) -> str:
        budget = f", tokens_per_minute={self._tpm!r}, token_burst={self.token_burst}" if self._tpm is not None else ""
        return (
            f"RateLimiter(requests_per_minute={self._rpm!r}, burst_size={self.burst}, "
            f"provider_name={self.provider_name!r}{budget})"
        )

    def _feedback_label(self) -> str:
        return f"rate limiter {self.provider_name!r}"

    def _exhausted_pause(self, info: RateLimitInfo, paced: tuple[str, ...] = ()) -> float:
        # The request bucket (and the token bucket, when there is one) was just capped at the
        # remaining budget: it paces the next bookings itself.
        return super()._exhausted_pause(info, ("requests", "tokens") if self.has_token_budget else ("requests",))

    def _follow_limits(self, info: RateLimitInfo) -> None:
        if info.requests_limit is not None and 0 < info.requests_limit < self._rpm:
            logger.warning(
                "RateLimiter %r: the provider reports %d requests per minute, below the configured %s: following it",
                self.provider_name,
                info.requests_limit,
                self._rpm,
            )
            self.set_rate(info.requests_limit)
        if self._tpm is not None and info.tokens_limit is not None and 0 < info.tokens_limit < self._tpm:
            logger.warning(
                "RateLimiter %r: the provider reports %d tokens per minute, below the configured %s: following it",
                self.provider_name,
                info.tokens_limit,
                self._tpm,
            )
            self.set_tokens_per_minute(info.tokens_limit)

    def _apply_budget(self, info: RateLimitInfo) -> None:
        if info.requests_remaining is not None:
            self.limit_available(min(info.requests_remaining, MAX_COUNT))
        if info.tokens_remaining is not None:
            self.limit_token_budget(min(info.tokens_remaining, MAX_COUNT))

    # Hook called by the core.
    def _on_timeout(self, timeout: object) -> str:
        message = f"Rate limit timeout after {shown_timeout(timeout)}s for {self.provider_name}"
        self._timeouts.warn(message)
        return message


class TokenReservation:
    """A reservation detached from the thread that made it (``RateLimiter.detach_reservation()``):
    ``settle(used)`` once, from any thread, when the call is done."""

    __slots__ = ("_limiter", "_settled", "tokens")

    def __init__(self, limiter: RateLimiter, tokens: int) -> None:
        self._limiter = limiter
        self.tokens = tokens  # reserved
        self._settled = False

    def settle(self, used: int | None = None) -> None:
        """Records the request; with a token budget, charges or gives back ``used - tokens``
        (``None``: as reserved). Raises RuntimeError on a second call."""
        if self._settled:
            raise RuntimeError("this reservation was already settled")
        self._limiter._settle(self.tokens, self.tokens if used is None else token_count(used, "used"))
        self._settled = True

    def __repr__(self) -> str:
        state = "settled" if self._settled else "open"
        return f"TokenReservation(tokens={self.tokens}, {state}, limiter={self._limiter.provider_name!r})"
