"""Sections 1, 2 and 7: the uncontended cost per call (a concurrency pair, a rate decision,
OmniGen's manager path), and the timing helpers the other per-call figures use
(``time_per_call``, ``times_per_call``)."""

from __future__ import annotations

import _thread
import statistics
import timeit
from collections.abc import Callable
from typing import Any

import omnilimit

from .. import peers
from .settings import HUGE, Impls, Settings

# --- 1, 2, 7: uncontended cost per call ------------------------------------------------------------


def _calibrated(stmt: Callable[[], Any], settings: Settings) -> tuple[timeit.Timer, int]:
    """A timer of `stmt` and the number of calls that take it about `micro_repeat_s` s."""
    timer = timeit.Timer(stmt)
    number = 1
    while (elapsed := timer.timeit(number)) < settings.micro_repeat_s / 10:
        number *= 10
    return timer, max(1, round(number * settings.micro_repeat_s / elapsed))


def _per_call(runs: list[float], number: int) -> dict[str, Any]:
    return {"min_ns": min(runs), "median_ns": statistics.median(runs), "loops": number, "repeats": len(runs)}


def time_per_call(stmt: Callable[[], Any], settings: Settings) -> dict[str, Any]:
    """ns per call of `stmt`: `micro_repeat` runs, each calibrated to about `micro_repeat_s` s."""
    timer, number = _calibrated(stmt, settings)
    return _per_call([timer.timeit(number) / number * 1e9 for _ in range(settings.micro_repeat)], number)


def times_per_call(stmts: list[Callable[[], Any]], settings: Settings) -> list[dict[str, Any]]:
    """``time_per_call`` of each of `stmts`, their runs interleaved: a slow phase of the machine hits
    every one of them (for calls whose time swings with it, as a round trip to a server does)."""
    timed = [_calibrated(stmt, settings) for stmt in stmts]
    runs: list[list[float]] = [[] for _ in stmts]
    for _ in range(settings.micro_repeat):
        for (timer, number), mine in zip(timed, runs, strict=False):
            mine.append(timer.timeit(number) / number * 1e9)
    return [_per_call(mine, number) for (_, number), mine in zip(timed, runs, strict=False)]


def _pair(lim: Any, with_timeout: bool) -> Callable[[], None]:
    acquire, release = lim.acquire, lim.release
    if with_timeout:

        def pair_with_timeout() -> None:
            acquire(timeout=120)
            release()

        return pair_with_timeout

    def pair() -> None:
        acquire()
        release()

    return pair


def uncontended(impls: Impls, settings: Settings) -> list[dict[str, Any]]:
    """1. ``acquire(); release()`` and ``acquire(timeout=120); release()`` on one thread."""
    makers: dict[str, Callable[[int], Any]] = {"_thread.lock": lambda n: _thread.allocate_lock()}
    makers.update(impls.concurrency())
    rows = []
    for form, with_timeout in (("acquire(); release()", False), ("acquire(timeout=120); release()", True)):
        for impl, make in makers.items():
            rows.append({"call": form, "impl": impl, **time_per_call(_pair(make(4), with_timeout), settings)})
    return rows


def _count_waits(lim: Any) -> list[int]:
    """Counts the reference RateLimiter's sleeps: it calls _calculate_wait_time before each one, and
    only then, so the counter costs nothing on the path measured."""
    waits = [0]
    compute = lim._calculate_wait_time

    def counted() -> float:
        waits[0] += 1
        seconds: float = compute()
        return seconds

    lim._calculate_wait_time = counted
    return waits


def rate_decision(impls: Impls, settings: Settings) -> list[dict[str, Any]]:
    """2. One admission decision of a token bucket that never runs dry within the run."""
    rows = []
    for impl, make in impls.rate().items():
        lim = make(HUGE, HUGE)
        waits = _count_waits(lim) if impl == "reference" else [0]
        acquire = lim.acquire

        def decide(acquire: Callable[..., bool] = acquire) -> None:
            acquire(timeout=120)

        # a decision that slept would not be a decision: `waits` shows it never did
        row = {"call": "one decision", "api": "acquire(timeout=120)", "impl": impl, **time_per_call(decide, settings)}
        rows.append({**row, "waits": waits[0]})
    deciders, skipped = peers.rate_deciders(HUGE, HUGE)
    impls.skipped += [{"name": s.name, "reason": s.reason} for s in skipped]
    for decider in deciders:
        try:
            row = {"call": "one decision", "api": decider.call, "impl": decider.name}
            rows.append({**row, **time_per_call(decider.decide, settings)})
        finally:
            decider.close()
    return rows


def manager_path(impls: Impls, settings: Settings) -> list[dict[str, Any]]:
    """7. What omnigen's generators do per API call: get_limiter(...), acquire(timeout=120), release()."""
    managers: dict[str, Any] = {"omnilimit": omnilimit.ProviderRateLimitManager()}
    if impls.reference is not None:
        managers["reference"] = impls.reference.ProviderRateLimitManager()
    provider_config = {"name": "openai", "model": "gpt-4o-mini", "max_concurrent_calls": 16, "temperature": 0.7}
    rows = []
    for impl, manager in managers.items():
        get_limiter = manager.get_limiter

        def call(get_limiter: Callable[..., Any] = get_limiter) -> None:
            limiter = get_limiter(provider_name="openai", provider_config=provider_config, role="text_enhancement")
            limiter.acquire(timeout=120)
            limiter.release()

        rows.append({"call": "get_limiter + acquire + release", "impl": impl, **time_per_call(call, settings)})
    return rows
