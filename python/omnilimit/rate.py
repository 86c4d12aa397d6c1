"""RateLimiter: at most ``requests_per_minute`` requests per minute (a GCRA token bucket)."""

from __future__ import annotations

from typing import Any

from omnilimit import _async, _core, rate_async
from omnilimit._log import TimeoutWarnings, logger
from omnilimit._validate import MAX_COUNT, flag, label, positive_rate, token_count, whole_number
from omnilimit.backends.redis_lease import LeaseKeeper
from omnilimit.backends.redis_rate import RedisRateStore
from omnilimit.backends.redis_tokens import RedisTokenStore
from omnilimit.feedback import ProviderFeedback, _common_metrics
from omnilimit.headers import RateLimitInfo
from omnilimit.spec import DEFAULT_BURST, check_coordination, is_redis, shared_name, store_options
from omnilimit.store import RateStore, TokenStore, WithStore


class RateLimiter(_core.RateCore, WithStore[RateStore], ProviderFeedback, _async.AsyncLimiting):
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
    the segment). With ``tokens_per_minute`` the token budget and the queue of waiting callers live
    there too: every process on the host shares one budget and one arrival order.

    ``backend="redis://host:6379/0"`` (``rediss://``, ``redis+cluster://``, or a redis-py client)
    composes a Redis store (``limiter.store``, a ``RedisRateStore``): one budget for every host
    that names the same ``provider_name`` on that server, with ``on_backend_error`` (``closed`` |
    ``open`` | ``local``) and ``local_fraction`` (options of the store) saying what happens while
    Redis is unreachable. With ``tokens_per_minute`` the store is a ``RedisTokenStore``: both
    budgets and one line of waiters for every host (``on_backend_error`` ``closed`` or ``open``).

    ``burst_size`` and ``token_burst`` default to 1 (``DEFAULT_BURST``: strict pacing). With a
    token budget, callers that must wait queue in arrival order and go when both budgets allow
    them; the queue is re-planned whenever the budget changes (tokens given back, a provider's
    headers, a new limit). Every method is thread-safe; ``get_stats()`` reads atomics and never
    blocks.
    """

    __slots__ = ("_lease", "_rpm", "_store", "_timeouts", "_tokens_store", "_tpm", "provider_name")

    @property
    def coordination(self) -> str:
        """``lease`` (each process decides on a leased share of a Redis budget) or ``strict``."""
        return "strict" if self._lease is None else "lease"

    @property
    def backend(self) -> str | None:
        if self._lease is not None:
            return self._lease.backend
        return WithStore.backend.fget(self)  # type: ignore[attr-defined,no-any-return]

    @property
    def backend_available(self) -> bool:
        if self._lease is not None:
            return self._lease.backend_available
        return bool(WithStore.backend_available.fget(self))  # type: ignore[attr-defined]

    @property
    def on_backend_error(self) -> str | None:
        if self._lease is not None:
            return self._lease.on_backend_error
        return WithStore.on_backend_error.fget(self)  # type: ignore[attr-defined,no-any-return]

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
        coordination: str | None = None,
    ) -> None:
        options = store_options(backend, on_backend_error=on_backend_error, local_fraction=local_fraction)
        leased = check_coordination(coordination, backend) == "lease"
        rpm = positive_rate("requests_per_minute", requests_per_minute)
        burst = DEFAULT_BURST if burst_size is None else whole_number("burst_size", burst_size)
        tpm = 0.0 if tokens_per_minute is None else positive_rate("tokens_per_minute", tokens_per_minute)
        if token_burst is not None and tokens_per_minute is None:
            raise ValueError("token_burst needs tokens_per_minute (a token budget) to apply to")
        tokens_at_once = (
            (DEFAULT_BURST if token_burst is None else whole_number("token_burst", token_burst)) if tpm else 1
        )
        checked_name = label("provider_name", provider_name)
        self._store: RateStore | None = None
        self._tokens_store: TokenStore | None = None  # the same store, when it holds the token budget too
        self._lease: LeaseKeeper | None = None
        shm_name = None
        if leased:
            self._lease = LeaseKeeper(
                backend,
                checked_name,
                rpm,
                burst,
                f"RateLimiter {checked_name!r}",
                tokens_per_minute=tpm,
                token_burst=tokens_at_once,
                **options,
            )
        elif is_redis(backend) and tpm:
            self._store = self._tokens_store = RedisTokenStore(
                backend, checked_name, requests_per_minute, burst, tokens_per_minute or tpm, tokens_at_once, **options
            )
        elif is_redis(backend):
            self._store = RedisRateStore(backend, checked_name, requests_per_minute, burst, **options)
        else:
            shm_name = shared_name(backend, default=provider_name)
        timeouts = TimeoutWarnings(f"Rate limit timeout after {{}}s for {checked_name}")
        super().__init__(
            _local_share(rpm, self._store),
            burst,
            _local_share(tpm, self._store) if tpm else 0.0,
            tokens_at_once,
            shm_name or "",
            store=self._store,
            on_timeout=timeouts,
        )
        if self._store is not None:
            self._store.bind(self)
        self.provider_name = checked_name
        self._rpm = requests_per_minute
        if self._lease is not None:
            # A late sleeper keeps its slot only within the 5-ms tolerance: this process's pacing of
            # its share is what keeps the fleet's bound (rate_policy.hpp, kCatchUpNs).
            self._catch_up = False
            self._lease.bind(self)  # the first lease: one round trip
        self._timeouts = timeouts
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
        """The limit in requests per minute, as given (with Redis, as this process configured it)."""
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
        if self._lease is not None:  # the fleet's capacity: this process's share follows at its next renewal
            self._lease.set_capacity(rpm)
            self._rpm = requests_per_minute
            logger.info("RateLimiter %r: rate set to %s RPM (leased)", self.provider_name, requests_per_minute)
            return
        super().set_rate(_local_share(rpm, self._store))
        self._rpm = requests_per_minute
        if self._store is not None:
            self._store.set_rate(requests_per_minute)  # every host follows
        logger.info("RateLimiter %r: rate set to %s RPM", self.provider_name, requests_per_minute)

    def set_burst(self, burst_size: int) -> None:
        """Changes the burst now. Without a token budget it applies to bookings made from now on;
        with one, the queued callers are re-planned."""
        burst = whole_number("burst_size", burst_size)
        super().set_burst(burst)
        if self._store is not None:
            self._store.set_burst(burst)  # every host follows
        logger.info("RateLimiter %r: burst set to %d", self.provider_name, burst_size)

    def set_tokens_per_minute(self, tokens_per_minute: int | float) -> None:
        """Changes the token budget's rate now, keeping what is owed (converted to the new pace);
        the queued callers are re-planned, and one that may go now goes now. Raises ValueError for
        a limiter created without a token budget."""
        tpm = positive_rate("tokens_per_minute", tokens_per_minute)
        if self._lease is not None:  # the fleet's token budget: this process's share follows at its next renewal
            self._lease.set_token_capacity(tpm)
            self._tpm = tokens_per_minute
            return
        super().set_tokens_per_minute(_local_share(tpm, self._store))
        self._tpm = tokens_per_minute
        if self._tokens_store is not None:
            self._tokens_store.set_tokens_per_minute(tokens_per_minute)  # every host follows
        logger.info("RateLimiter %r: token budget set to %s TPM", self.provider_name, tokens_per_minute)

    def set_token_burst(self, token_burst: int) -> None:
        """Changes the token burst now; the queued callers are re-planned (with Redis, on every host)."""
        burst = whole_number("token_burst", token_burst)
        if self._lease is not None:  # the fleet's token burst: this process's part follows at its next renewal
            self._lease.token_burst = burst
            return
        super().set_token_burst(burst)
        if self._tokens_store is not None:
            self._tokens_store.set_token_burst(burst)

    def limit_token_budget(self, tokens: int) -> None:
        """Keeps at most ``tokens`` of the token budget available now (a provider's remaining
        tokens); with Redis, for every host."""
        super().limit_token_budget(tokens)
        if self._tokens_store is not None:
            self._tokens_store.limit_token_budget(tokens)

    async def acquire_async(self, timeout: float | None = 60, tokens: int = 0, fail_fast: bool = False) -> bool:
        """``acquire()`` for a coroutine: takes a request (and ``tokens``, with a budget), waiting
        on the running event loop's timer (never blocking it) up to ``timeout`` seconds, in one
        order with threads and other loops. The same contract: True as soon as the caller may go,
        False once ``timeout`` has passed (at once with ``fail_fast=True`` when the turn lies beyond
        it), nothing taken then. Cancellation-safe: a reservation whose time has not come is
        refunded, a queued ticket leaves the queue. ``record_request(tokens=used)`` in the same task
        settles the reservation. Raises LimiterClosed, ValueError for a bad timeout, token count
        or flag."""
        _async.deadline(timeout)  # checks it
        token_count(tokens)
        fail_fast = flag("fail_fast", fail_fast)
        if self._store is not None:
            took = await self._store.acquire_async(self, timeout, tokens, fail_fast)
            if took and self.has_token_budget:
                self._async_reservation.set(tokens)  # record_request(tokens=used) in this task settles it
                self._count_tokens_admitted(tokens)
        else:
            took = await self._acquire_async_here(timeout, tokens, fail_fast)
        if not took:
            self._refused(timeout, fail_fast)
        return took

    async def __aenter__(self) -> RateLimiter:
        """``async with limiter:``: ``acquire_async()`` with the default timeout (60 s), raising
        ``LimiterTimeout`` when the turn did not come; leaving records the request."""
        if self._async_fast():
            return self
        if self._store is None:
            took = await rate_async.acquire_here(self, 60, 0, False)
        else:
            took = await self.acquire_async()
        if took:
            return self
        if self._store is None:
            self._refused(60, False)
        raise self._timeout_error()  # acquire_async counted and logged the timeout

    async def __aexit__(self, *exc_info: object) -> bool:
        self.record_request()
        return False

    async def _acquire_async_here(self, timeout: float | None, tokens: int = 0, fail_fast: bool = False) -> bool:
        """A request of the native core itself (a Redis store's in-process fallback too); False
        (nothing counted) when its turn lies beyond ``timeout`` (``rate_async``)."""
        return await rate_async.acquire_here(self, timeout, tokens, fail_fast)

    def _async_release(self) -> None:
        self.record_request()

    def _timeout_error(self, timeout: object = 60) -> BaseException:
        """What ``with limiter:`` (or a ``limit`` decorator with this timeout) raises after it."""
        return _core.LimiterTimeout(self._timeouts.message(timeout))

    def limit_available(self, requests: int) -> None:
        """Keeps at most ``requests`` available now (a provider's remaining budget); with Redis,
        for every host."""
        super().limit_available(requests)  # checks it (and caps a Redis store's local fallback)
        if self._store is not None:
            self._store.limit_available(requests)

    def pause(self, seconds: float) -> float:
        """Nobody goes for ``seconds`` (a provider's 429; with Redis, on any host); then requests
        resume at the paced rate. Returns the seconds until this limiter may go again."""
        local = super().pause(seconds)
        if self._lease is not None:
            shared = self._lease.pause(seconds)
        else:
            shared = None if self._store is None else self._store.pause(seconds)
        return local if shared is None else max(local, shared)

    def close(self) -> None:
        """Wakes every caller of this process (asleep on an instant, standing by, queued or paused)
        with LimiterClosed, giving their bookings back; later acquires raise it. Other processes
        and hosts sharing the limiter stay open."""
        super().close()
        if self._store is not None:
            self._store.close()
        if self._lease is not None:
            self._lease.close()

    def detach_reservation(self) -> TokenReservation:
        """The calling thread's latest reservation on this limiter, to settle from another thread
        (``record_request(tokens=...)`` settles it only in the thread that acquired). Raises
        KeyError when the thread holds none (not acquired, already settled, or no token budget)."""
        tokens = self._detach_reservation()
        here = self._tokens_store is not None and self._tokens_store.detach_local()
        return TokenReservation(self, tokens, here)

    def get_stats(self) -> dict[str, Any]:
        """The guide's keys: ``provider``, ``rpm_limit``, ``current_rpm``, ``tokens_available``,
        ``total_requests``, ``blocked_count``, ``utilization`` (current RPM as % of the limit); with
        a token budget also ``tpm_limit`` and ``current_tpm``. With Redis, every host's numbers,
        read in one round trip (while Redis is unreachable: this process's view, plus
        ``backend_error``)."""
        if self._store is not None:
            with self._store.held_read():
                return self._store.get_stats(self._own_stats())
        return self._own_stats()

    def _own_stats(self) -> dict[str, Any]:
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
        arriving now); with a token budget also ``tokens_admitted`` (reserved by admitted callers)
        and ``tokens_settled`` (recorded as used), in all since the limiter was made.

        With Redis, the shared numbers come from one read of Redis (``timed_out`` and ``denied`` are
        this process's: Redis counts every host's refusals in ``blocked_count``), and it adds ``backend``,
        ``backend_available``, ``backend_outages`` and ``outage_admitted`` / ``outage_denied``
        (this process's decisions taken by the outage policy)."""
        if self._lease is not None:
            lease = {"backend": self._lease.backend, **self._lease.metrics()}
            return {
                **self.get_stats(),
                **_common_metrics(self),
                **self._token_metrics(),
                "predicted_wait_s": self.predicted_wait(),
                **lease,
            }
        if self._store is None:
            return {
                **self.get_stats(),
                **_common_metrics(self),
                **self._token_metrics(),
                "predicted_wait_s": self.predicted_wait(),
            }
        with self._store.held_read():
            return {
                **self.get_stats(),
                **_common_metrics(self),
                **self._token_metrics(),
                "predicted_wait_s": self.predicted_wait(),
                **self._store.metrics(),
            }

    def _token_metrics(self) -> dict[str, object]:
        if self._tpm is None:
            return {}
        return {"tokens_admitted": self.tokens_admitted, "tokens_settled": self.tokens_settled}

    def __repr__(self) -> str:
        if self._store is not None:
            return f"RateLimiter({self._store.described()})"
        if self._lease is not None:
            budget = (
                "" if self._tpm is None else f", tokens_per_minute={self._tpm!r}, token_burst={self._lease.token_burst}"
            )
            return (
                f"RateLimiter(requests_per_minute={self._rpm!r}, burst_size={self._lease.burst}, "
                f"provider_name={self.provider_name!r}{budget}, backend={self._lease.backend!r}, coordination='lease')"
            )
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


def _local_share(rate: float, store: RateStore | None) -> float:
    """A rate of the native core (requests or tokens per minute): the limit, or a Redis store's
    in-process fallback's share of it."""
    return rate if store is None or store.local_fraction is None else rate * store.local_fraction


class TokenReservation:
    """A reservation detached from the thread that made it (``RateLimiter.detach_reservation()``):
    ``settle(used)`` once, from any thread, when the call is done."""

    __slots__ = ("_here", "_limiter", "_settled", "tokens")

    def __init__(self, limiter: RateLimiter, tokens: int, here: bool = False) -> None:
        self._limiter = limiter
        self.tokens = tokens  # reserved
        self._here = here  # made by a Redis store's local policy: settled in this process's core
        self._settled = False

    def settle(self, used: int | None = None) -> None:
        """Records the request; with a token budget, charges or gives back ``used - tokens``
        (``None``: as reserved). Raises RuntimeError on a second call."""
        if self._settled:
            raise RuntimeError("this reservation was already settled")
        spent = self.tokens if used is None else token_count(used, "used")
        if self._here:
            self._limiter._settle_here(self.tokens, spent)
            self._limiter._settle(spent, spent)  # records the request and the tokens, settles nothing more
        else:
            self._limiter._settle(self.tokens, spent)
        self._settled = True

    def __repr__(self) -> str:
        state = "settled" if self._settled else "open"
        return f"TokenReservation(tokens={self.tokens}, {state}, limiter={self._limiter.provider_name!r})"
