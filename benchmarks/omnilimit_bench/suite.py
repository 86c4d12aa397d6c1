"""The measurements of ``omnilimit bench``, one function a section.

Every section measures omnilimit and its peers in the same run, under the same settings, so the
ratios mean something on whatever machine runs them. Each function returns plain dicts (JSON-ready);
``report.py`` prints them and checks the targets.

The implementations compared:
- concurrency: omnilimit's ConcurrencyLimiter, ``_thread.lock`` (the floor for any lock Python can
  see), ``threading.Semaphore`` / ``BoundedSemaphore``, and the reference ConcurrencyLimiter of
  omnigen-usf 0.1.18;
- rate: omnilimit's RateLimiter, the reference RateLimiter, and the third-party limiters of
  ``peers.py`` (pyrate-limiter, limits, token-bucket);
- asyncio (section 8): omnilimit's ConcurrencyLimiter against ``asyncio.Semaphore`` /
  ``BoundedSemaphore``, and its RateLimiter against aiolimiter's ``AsyncLimiter``;
- shared between processes (section 9): omnilimit's limiters with ``backend="shm://NAME"`` against
  the same in-process, and against pyrate-limiter's ``MultiprocessBucket`` and ``SQLiteBucket`` with
  a file lock;
- shared through a Redis server (section 10, when one is given): omnilimit's limiters with
  ``backend="redis://..."`` against pyrate-limiter's ``RedisBucket`` and ``StateBucket`` over a
  ``RedisStateStore``, limits' windows over ``RedisStorage``, and redis-py's PING.
"""

from __future__ import annotations

import _thread
import asyncio
import gc
import itertools
import logging
import math
import multiprocessing
import os
import resource
import statistics
import threading
import time
import timeit
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from types import ModuleType
from typing import Any, NamedTuple

import omnilimit
from omnilimit._shown import redact
from omnilimit.backends.redis_link import keys_for
from omnilimit.shared import name_for_key

from . import peers

HUGE = 10**12  # a rate and a burst no run can exhaust: the decision is measured, never a wait


@dataclass(frozen=True)
class Settings:
    """How long each section runs. ``short`` is the default of ``omnilimit bench`` (about 35 s on a
    2-core machine); ``full`` produced benchmarks/README.md."""

    name: str
    micro_repeat: int  # timeit repeats per case (the minimum is reported, with the median)
    micro_repeat_s: float  # seconds per repeat
    threads: tuple[int, ...]  # contention: thread counts
    trials: int  # contention: trials per thread count
    warmup_s: float  # contention: time before counting starts (threads start and the queue forms)
    measure_s: float  # contention: counted time per trial
    accuracy_s: float  # rate accuracy: seconds per run
    gil_idle_s: float  # GIL section: seconds counting context switches while everyone waits
    wake_rounds: int  # wake-up latency: hand-overs measured per implementation
    gil_rounds: int  # GIL section: rounds (alone / beside the waiters) per implementation
    async_tasks: int  # asyncio section: tasks per run
    async_trials: int  # asyncio concurrency: trials per implementation (the median is reported)
    async_rate_runs: int  # asyncio rate: runs per limiter and burst
    async_window_s: float  # asyncio rate: the window in which the most admissions are counted
    shared_processes: int  # shared section: processes taking from one limiter
    shared_seconds: float  # shared section: seconds per multi-process run
    shared_runs: int  # shared section: runs per limiter (the worst error and windows are reported)
    redis_counted: int  # Redis section: decisions whose round trips and server commands are counted
    redis_threads: int  # Redis section: threads sharing each limiter in the multi-thread run
    redis_trials: int  # Redis section: multi-thread trials per limiter (interleaved; the median is reported)
    redis_seconds: float  # Redis section: counted seconds per multi-thread trial (after `warmup_s`)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


SETTINGS = {
    "short": Settings(
        "short", 3, 0.05, (8, 64, 256), 2, 0.3, 0.4, 2.0, 0.5, 200, 9, 10_000, 3, 1, 1.0, 4, 1.5, 1, 1000, 8, 1, 0.5
    ),
    "full": Settings(
        "full", 7, 0.3, (8, 64, 256), 3, 1.0, 2.0, 5.0, 2.0, 1000, 31, 10_000, 7, 3, 1.0, 4, 2.0, 3, 5000, 8, 3, 1.0
    ),
    # For the tests of the suite itself: every code path, as fast as possible. Figures meaningless.
    "smoke": Settings(
        "smoke", 1, 0.002, (4,), 1, 0.05, 0.05, 0.3, 0.05, 5, 1, 300, 1, 1, 0.01, 2, 0.2, 1, 20, 2, 1, 0.02
    ),
}


@dataclass
class Impls:
    """What this run can compare: the reference module when found, the peers that are installed,
    the Redis server given."""

    reference: ModuleType | None
    reference_origin: str  # where the reference came from, or why it is missing
    skipped: list[dict[str, str]]
    redis_url: str | None = None  # the server of section 10 (``omnilimit bench --redis URL``)

    def concurrency(self) -> dict[str, Callable[[int], Any]]:
        makers: dict[str, Callable[[int], Any]] = {
            "omnilimit": lambda n: omnilimit.ConcurrencyLimiter(n, name="bench"),
            "threading.Semaphore": threading.Semaphore,
            "threading.BoundedSemaphore": threading.BoundedSemaphore,
        }
        if self.reference is not None:
            ref = self.reference
            makers["reference"] = lambda n: ref.ConcurrencyLimiter(n, name="bench")
        return makers

    def rate(self) -> dict[str, Callable[[float, int], Any]]:
        """RateLimiter makers taking (requests per minute, burst)."""
        makers: dict[str, Callable[[float, int], Any]] = {
            "omnilimit": lambda rpm, burst: omnilimit.RateLimiter(rpm, burst_size=burst, provider_name="bench"),
        }
        if self.reference is not None:
            ref = self.reference
            makers["reference"] = lambda rpm, burst: ref.RateLimiter(int(rpm), burst, provider_name="bench")
        return makers


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
        for (timer, number), mine in zip(timed, runs):
            mine.append(timer.timeit(number) / number * 1e9)
    return [_per_call(mine, number) for (_, number), mine in zip(timed, runs)]


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


# --- 3: contention -------------------------------------------------------------------------------


def _percentile(sorted_values: list[int], fraction: float) -> int:
    if not sorted_values:
        return 0
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * fraction))]


def contention_trial(make: Callable[[int], Any], threads: int, settings: Settings) -> dict[str, Any]:
    """`threads` threads loop ``acquire(timeout=120); release()`` on ``max_concurrent=4``.

    Counting starts after `warmup_s`: until every thread has started and the limiter's queue has
    formed, the first threads to run loop alone (nobody else is asking yet), which says nothing about
    the limiter. Fairness is min/max of the per-thread cycles counted; the whole run's figure is kept
    too (``fairness_whole_run``)."""
    lim = make(4)
    acquire, release = lim.acquire, lim.release
    phase = [0]  # 0 warm-up, 1 counting, 2 stop
    counted = [0] * threads
    whole = [0] * threads
    latencies: list[list[int]] = [[] for _ in range(threads)]
    start = threading.Event()
    clock = time.perf_counter_ns

    def worker(i: int) -> None:
        mine = latencies[i]
        start.wait()
        total = n = 0
        while True:
            state = phase[0]
            if state == 2:
                break
            t0 = clock()
            acquire(timeout=120)
            t1 = clock()
            release()
            total += 1
            if state == 1:
                n += 1
                mine.append(t1 - t0)
        counted[i], whole[i] = n, total

    workers = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for w in workers:
        w.start()
    start.set()
    time.sleep(settings.warmup_s)
    phase[0] = 1
    t0 = time.perf_counter()
    time.sleep(settings.measure_s)
    phase[0] = 2
    elapsed = time.perf_counter() - t0
    for w in workers:
        w.join()
    lat = sorted(x for mine in latencies for x in mine)
    mean = statistics.fmean(counted)
    return {
        "cycles_per_s": sum(counted) / elapsed,
        "fairness": min(counted) / max(counted) if max(counted) else 0.0,
        "cv": statistics.pstdev(counted) / mean if mean else 0.0,
        "fairness_whole_run": min(whole) / max(whole) if max(whole) else 0.0,
        "p50_us": _percentile(lat, 0.50) / 1e3,
        "p99_us": _percentile(lat, 0.99) / 1e3,
        "max_us": (lat[-1] if lat else 0) / 1e3,
    }


def contention(impls: Impls, settings: Settings) -> list[dict[str, Any]]:
    """3. Cycles/s, fairness and acquire latency; the trial with median throughput is reported and
    every trial is kept in ``trials``."""
    makers = {k: v for k, v in impls.concurrency().items() if k != "threading.BoundedSemaphore"}
    rows = []
    for threads in settings.threads:
        trials: dict[str, list[dict[str, Any]]] = {impl: [] for impl in makers}
        for _ in range(settings.trials):  # interleaved: a slow phase of the machine hits everyone
            for impl, make in makers.items():
                trials[impl].append(contention_trial(make, threads, settings))
        for impl, mine in trials.items():
            median = sorted(mine, key=lambda t: t["cycles_per_s"])[(len(mine) - 1) // 2]
            rows.append({"impl": impl, "threads": threads, **median, "trials": mine})
    return rows


# --- 4: rate accuracy ----------------------------------------------------------------------------


@contextmanager
def _cpu_and_switches() -> Iterator[dict[str, float]]:
    """Process CPU seconds (all threads) and voluntary context switches spent inside the block."""
    cpu, switches = time.process_time(), resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw
    out: dict[str, float] = {}
    yield out
    out["cpu_s"] = time.process_time() - cpu
    out["voluntary_switches"] = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw - switches


def most_in_window(times: list[float], window: float) -> int:
    """The most of the sorted `times` that fall in any half-open interval of length `window`."""
    best = lo = 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


RATE_RPM = 6000
RATE_BURST = 100
RATE_THREADS = 32


def _accuracy_run(lim: Any, seconds: float) -> tuple[float, list[float], dict[str, float]]:
    """(start, sorted admission times, cost) of RATE_THREADS threads taking what `lim` admits."""
    admitted: list[list[float]] = [[] for _ in range(RATE_THREADS)]
    start = threading.Event()
    end = [0.0]

    def worker(mine: list[float]) -> None:
        start.wait()
        while (left := end[0] - time.monotonic()) > 0:
            if not lim.acquire(timeout=left):
                return  # no admission fits before the end (or the wait timed out there)
            if (t := time.monotonic()) <= end[0]:
                mine.append(t)

    workers = [threading.Thread(target=worker, args=(mine,), daemon=True) for mine in admitted]
    for w in workers:
        w.start()
    gc.collect()
    with _cpu_and_switches() as cost:
        began = time.monotonic()
        end[0] = began + seconds
        start.set()
        for w in workers:
            w.join()
    return began, sorted(t for mine in admitted for t in mine), cost


def rate_accuracy(impls: Impls, settings: Settings) -> list[dict[str, Any]]:
    """4. 32 threads take as much as RateLimiter(6000 RPM, burst 100) admits for `accuracy_s`.

    Ideal is burst + rate * t. Each thread asks with the time left as its timeout and stops at its
    first refusal; an admission counts when acquire() returns True before the end."""
    rows = []
    per_s = RATE_RPM / 60
    ideal = RATE_BURST + per_s * settings.accuracy_s
    for impl, make in impls.rate().items():
        began, times, cost = _accuracy_run(make(RATE_RPM, RATE_BURST), settings.accuracy_s)
        n = len(times) or float("nan")
        rows.append(
            {
                "impl": impl,
                "admitted": len(times),
                "ideal": ideal,
                "error_pct": (len(times) - ideal) / ideal * 100,
                "most_in_1s_after_first": most_in_window([t for t in times if t >= began + 1.0], 1.0),
                "rate_per_s": per_s,
                "largest_gap_ms": max((b - a for a, b in zip(times, times[1:])), default=0.0) * 1e3,
                "cpu_ms_per_admitted": cost["cpu_s"] / n * 1e3,
                "switches_per_admitted": cost["voluntary_switches"] / n,
            }
        )
    return rows


# --- 5: GIL friendliness -------------------------------------------------------------------------


def _python_work(n: int = 100_000) -> float:
    """Seconds a plain Python loop takes: the yardstick for how much the waiters cost everyone else."""
    t0 = time.perf_counter()
    x = 0
    for i in range(n):
        x += i & 7
    return time.perf_counter() - t0


def _best_work_time(samples: int = 3) -> float:
    return min(_python_work() for _ in range(samples))


WAITERS = 64


def _beside_waiters(lim: Any, idle_s: float) -> tuple[float, dict[str, float]]:
    """With WAITERS threads blocked in lim.acquire() (lim held by this thread): the loop's time, and
    the cost of `idle_s` seconds of sleeping while they wait."""
    lim.acquire()
    entered = threading.Semaphore(0)

    def waiter() -> None:
        entered.release()
        if lim.acquire(timeout=600):
            lim.release()

    workers = [threading.Thread(target=waiter, daemon=True) for _ in range(WAITERS)]
    for w in workers:
        w.start()
    for _ in workers:
        entered.acquire()
    time.sleep(0.02)  # let the last of them get into acquire()
    with _cpu_and_switches() as idle:
        time.sleep(idle_s)
    beside = _best_work_time()
    lim.release()
    for w in workers:
        w.join()
    return beside, idle


def gil_friendliness(impls: Impls, settings: Settings) -> list[dict[str, Any]]:
    """5. 64 threads wait in acquire() on a ConcurrencyLimiter(1) held by this thread: how fast does a
    Python loop run next to them, and how often do they wake while nothing is admitted?

    The loop is timed alone and beside the waiters in `gil_rounds` short rounds, and the median of the
    rounds' ratios is reported: the machine's fast and slow phases last longer than a round, so
    each ratio compares like with like."""
    rows = []
    for impl, make in impls.concurrency().items():
        if impl == "threading.BoundedSemaphore":
            continue
        ratios = []
        idle: dict[str, float] = {}
        alone_before = _best_work_time()
        for round_ in range(settings.gil_rounds):
            beside, cost = _beside_waiters(make(1), settings.gil_idle_s if round_ == 0 else 0.0)
            alone_after = _best_work_time()
            ratios.append((alone_before + alone_after) / 2 / beside)  # alone on both sides: no order bias
            alone_before = alone_after
            idle = idle or cost
        rows.append(
            {
                "impl": impl,
                "speed_ratio": statistics.median(ratios),
                # this thread's sleep is one switch: the rest are the waiters waking for nothing
                "wakeups_per_s": max(0.0, idle["voluntary_switches"] - 1) / settings.gil_idle_s,
                "idle_cpu_ms_per_s": idle["cpu_s"] / settings.gil_idle_s * 1e3,
            }
        )
    return rows


# --- 6: wake-up latency --------------------------------------------------------------------------


def _hand_overs(lim: Any, rounds: int) -> list[int]:
    """ns from this thread's release() to acquire() returning in a thread asleep waiting for it."""
    released_at = [0]
    samples: list[int] = []
    done = threading.Semaphore(0)
    go = threading.Semaphore(0)

    def waiter() -> None:
        for _ in range(rounds):
            go.acquire()
            lim.acquire(timeout=120)
            samples.append(time.perf_counter_ns() - released_at[0])
            lim.release()
            done.release()

    lim.acquire()
    thread = threading.Thread(target=waiter, daemon=True)
    thread.start()
    for _ in range(rounds):
        go.release()
        time.sleep(0.002)  # the waiter is asleep in acquire() by now
        released_at[0] = time.perf_counter_ns()
        lim.release()
        done.acquire()
        lim.acquire()
    lim.release()
    thread.join()
    return sorted(samples)


def wakeup_latency(impls: Impls, settings: Settings) -> list[dict[str, Any]]:
    """6. From release() by one thread to acquire() returning in the thread waiting for the slot."""
    rows = []
    for impl, make in impls.concurrency().items():
        if impl == "threading.BoundedSemaphore":
            continue
        samples = _hand_overs(make(1), settings.wake_rounds)
        rows.append(
            {
                "impl": impl,
                "p50_us": _percentile(samples, 0.5) / 1e3,
                "p99_us": _percentile(samples, 0.99) / 1e3,
                "max_us": samples[-1] / 1e3,
            }
        )
    return rows


# --- 8: asyncio ----------------------------------------------------------------------------------

ASYNC_MAX_CONCURRENT = 64
ASYNC_RATE_PER_S = 6000  # 10,000 tasks take 1.67 s at burst 1
ASYNC_BURSTS = (1, 10)  # strict pacing (omnilimit's default), and 1.7 ms of traffic at once
SHORT_WINDOW_S = 0.01
TASKS_ONLY = "tasks only (no limiter)"
ASYNC_WITH = "async with lim"
NO_TIMEOUT = "acquire_async(timeout=None); release()"

# (implementation, call, maker taking max_concurrent; None for the tasks without a limiter)
ASYNC_CONCURRENCY: tuple[tuple[str, str, Callable[[int], Any] | None], ...] = (
    (TASKS_ONLY, "await asyncio.sleep(0)", None),
    ("omnilimit", ASYNC_WITH, lambda n: omnilimit.ConcurrencyLimiter(n, name="bench")),
    ("omnilimit", NO_TIMEOUT, lambda n: omnilimit.ConcurrencyLimiter(n, name="bench")),
    ("asyncio.Semaphore", ASYNC_WITH, asyncio.Semaphore),
    ("asyncio.BoundedSemaphore", ASYNC_WITH, asyncio.BoundedSemaphore),
)


def _async_concurrency_run(make: Callable[[int], Any] | None, call: str, tasks: int) -> dict[str, Any]:
    """`tasks` tasks started at once on a fresh event loop, each holding a slot of
    ``max_concurrent=64`` across one ``await asyncio.sleep(0)``; the run ends when the last is done.
    Every task counts the tasks inside (the same few bytecodes for every implementation) so that
    the peak shows the limit held."""
    flight = [0, 0]  # inside now, most inside at once

    async def body() -> None:
        flight[0] += 1
        if flight[0] > flight[1]:
            flight[1] = flight[0]
        await asyncio.sleep(0)
        flight[0] -= 1

    async def main() -> dict[str, Any]:
        lim = None if make is None else make(ASYNC_MAX_CONCURRENT)
        if lim is None:

            async def task() -> None:  # the same call into body() as with a limiter
                await body()

        elif call == NO_TIMEOUT:
            acquire, release = lim.acquire_async, lim.release

            async def task() -> None:
                if not await acquire(timeout=None):
                    raise RuntimeError("acquire_async(timeout=None) returned False")
                try:
                    await body()
                finally:
                    release()

        else:

            async def task() -> None:
                async with lim:
                    await body()

        cpu, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*[task() for _ in range(tasks)])
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu
        return {"tasks_per_s": tasks / wall, "wall_ms": wall * 1e3, "cpu_us_per_task": cpu / tasks * 1e6}

    gc.collect()
    result = asyncio.run(main())
    return {**result, "peak_in_flight": flight[1]}


def _async_concurrency(settings: Settings) -> list[dict[str, Any]]:
    trials: dict[tuple[str, str], list[dict[str, Any]]] = {(impl, call): [] for impl, call, _ in ASYNC_CONCURRENCY}
    for _ in range(settings.async_trials):  # interleaved: a slow phase of the machine hits everyone
        for impl, call, make in ASYNC_CONCURRENCY:
            trials[impl, call].append(_async_concurrency_run(make, call, settings.async_tasks))
    rows = []
    for (impl, call), mine in trials.items():
        median = sorted(mine, key=lambda t: t["tasks_per_s"])[(len(mine) - 1) // 2]
        row = {"part": "concurrency", "impl": impl, "call": call, "tasks": settings.async_tasks}
        rows.append({**row, "max_concurrent": ASYNC_MAX_CONCURRENT, **median, "trials": mine})
    base = rows[0]["cpu_us_per_task"]  # the tasks alone, in the same run
    for row in rows:
        row["limiter_cpu_us_per_task"] = row["cpu_us_per_task"] - base
    return rows


def _async_rate_run(make: Callable[[], Any], tasks: int, per_s: float, burst: int) -> dict[str, Any]:
    """`tasks` tasks started at once on a fresh event loop, each entering ``async with lim:`` and
    noting the time it got in. A limiter that cannot keep the pace is cut off at 1.5x the ideal
    time (plus 0.1 s): the tasks still waiting are cancelled, after the clocks are read."""
    cutoff = 1.5 * max(0, tasks - burst) / per_s + 0.1

    async def main() -> dict[str, Any]:
        lim = make()
        admitted: list[float] = []
        clock = time.monotonic

        async def task() -> None:
            async with lim:
                admitted.append(clock())

        loop = asyncio.get_running_loop()
        cpu, t0 = time.process_time(), time.perf_counter()
        started = [loop.create_task(task()) for _ in range(tasks)]
        done, pending = await asyncio.wait(started, timeout=cutoff)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu
        for waiting in pending:
            waiting.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for finished in done:
            finished.result()  # a limiter that failed a task fails the run
        return {"times": sorted(admitted), "wall_s": wall, "cpu_s": cpu, "complete": not pending}

    gc.collect()
    run = asyncio.run(main())
    times: list[float] = run.pop("times")
    n = len(times)
    span = times[-1] - times[0] if n else 0.0
    achieved = (n - burst) / span if n > burst and span > 0 else float("nan")
    return {
        "admitted": n,
        "achieved_per_s": achieved,
        "error_pct": (achieved / per_s - 1) * 100,
        "cpu_us_per_admitted": run["cpu_s"] / n * 1e6 if n else float("nan"),
        "wall_s": run["wall_s"],
        "complete": run["complete"],
        "times": times,
    }


def _whole(x: float) -> float | int:
    """`x` as an int when it is a whole number (6001, not 6001.0)."""
    return round(x) if abs(x - round(x)) < 1e-9 else x


def _async_rate(impls: Impls, settings: Settings) -> list[dict[str, Any]]:
    per_s = ASYNC_RATE_PER_S
    window = settings.async_window_s
    limiters: list[tuple[str, int, str, Callable[[], Any]]] = []
    for burst in ASYNC_BURSTS:

        def ours(burst: int = burst) -> Any:
            return omnilimit.RateLimiter(per_s * 60, burst_size=burst, provider_name="bench")

        limiters.append(("omnilimit", burst, f"RateLimiter({per_s * 60} RPM, burst_size={burst})", ours))
        found, skipped = peers.async_rate_limiters(per_s, burst)
        limiters += [(peer.name, burst, peer.config, peer.make) for peer in found]
        if burst == ASYNC_BURSTS[0]:  # the same peers are missing at every burst
            impls.skipped += [{"name": s.name, "reason": s.reason} for s in skipped]
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {(impl, burst): [] for impl, burst, _, _ in limiters}
    for _ in range(settings.async_rate_runs):  # interleaved
        for impl, burst, _, make in limiters:
            run = _async_rate_run(make, settings.async_tasks, per_s, burst)
            times = run.pop("times")
            run["most_in_window"] = most_in_window(times, window)
            run["most_in_short_window"] = most_in_window(times, SHORT_WINDOW_S)
            runs[impl, burst].append(run)
    rows = []
    for impl, burst, config, _ in limiters:
        mine = runs[impl, burst]
        # the run of median CPU; the worst of every run for the error and the windows
        row = dict(sorted(mine, key=lambda r: r["cpu_us_per_admitted"])[(len(mine) - 1) // 2])
        row["error_pct"] = max((r["error_pct"] for r in mine), key=abs)
        row["most_in_window"] = max(r["most_in_window"] for r in mine)
        row["most_in_short_window"] = max(r["most_in_short_window"] for r in mine)
        row["complete"] = all(r["complete"] for r in mine)
        rows.append(
            {
                "part": "rate",
                "impl": impl,
                "config": config,
                "burst": burst,
                "tasks": settings.async_tasks,
                "rate_per_s": per_s,
                **row,
                "window_s": window,
                "window_limit": _whole(per_s * window + burst),
                "short_window_s": SHORT_WINDOW_S,
                "short_window_limit": _whole(per_s * SHORT_WINDOW_S + burst),
                "runs": mine,
            }
        )
    return rows


def asyncio_tasks(impls: Impls, settings: Settings) -> list[dict[str, Any]]:
    """8. asyncio, `async_tasks` tasks started at once on one event loop.

    Concurrency (rows with ``part == "concurrency"``): each task holds a slot of
    ``max_concurrent=64`` across ``await asyncio.sleep(0)``; tasks/s and process CPU per task, the
    trial of median throughput (every trial in ``trials``), next to the same tasks without a limiter.

    Rate (``part == "rate"``): each task enters ``async with lim:`` on a limiter of 6000/s, at burst 1
    and burst 10; the rate achieved from the first admission to the last, the most admissions in any
    `async_window_s` and in any 10 ms against what the bucket allows (rate * window + burst), and
    process CPU per admission."""
    return _async_concurrency(settings) + _async_rate(impls, settings)


# --- 9: shared between processes ------------------------------------------------------------------

SHARED_THREADS = 4  # threads in each process of the multi-process run
SHARED_RATE_PER_S = 600
SHARED_BURST = 60  # 100 ms of traffic: pyrate-limiter's window log gets Rate(60, 100 ms), the same budget
SHARED_SHORT_WINDOW_S = 0.1
SHARED_START_TIMEOUT_S = 120.0  # for the processes to start (spawn imports omnilimit in each)
RATE_DECISION = "rate decision"
CONCURRENCY_PAIR = "concurrency pair"
IN_PROCESS = "in-process"
SHM = "shm"
OWN_LIMITERS = "none: one limiter per process"
_segment_numbers = itertools.count()


@contextmanager
def _segments() -> Iterator[Callable[[str], str]]:
    """Yields a maker of unique segment names (bench-PID-N-WHAT); every segment named is removed on
    the way out, whatever happened (a name never created is simply not found)."""
    names: list[str] = []

    def name(what: str) -> str:
        names.append(f"bench-{os.getpid()}-{next(_segment_numbers)}-{what}")
        return names[-1]

    try:
        yield name
    finally:
        for made in names:
            omnilimit.remove_shared(made)


class _OmnilimitHandle(NamedTuple):
    """What a process needs to open an omnilimit RateLimiter (picklable)."""

    per_minute: float
    burst: int
    backend: str | None  # "shm://NAME", or None for a limiter of this process alone


def _open_omnilimit(handle: _OmnilimitHandle) -> peers.SharedTaker:
    lim = omnilimit.RateLimiter(
        handle.per_minute, burst_size=handle.burst, provider_name="bench", backend=handle.backend
    )
    return peers.SharedTaker(partial(lim.acquire, 0), lim.acquire, _nothing, "acquire(timeout=0)")


def _nothing() -> None:
    """``close`` of a limiter that needs none."""


def _checked(decide: Callable[[], Any], what: str) -> Callable[[], Any]:
    """`decide`, after checking that it admits (a refusal would be timed as a decision too)."""
    if decide() is False:
        raise RuntimeError(f"{what} refused a decision that should have been admitted")
    return decide


def _shared_decisions(impls: Impls, settings: Settings, context: Any) -> list[dict[str, Any]]:
    rows = []

    def row(call: str, impl: str, shared: str, api: str, decide: Callable[[], Any]) -> None:
        rows.append(
            {"part": "decision", "call": call, "impl": impl, "shared": shared, "api": api}
            | time_per_call(_checked(decide, f"{impl} ({shared})"), settings)
        )

    with _segments() as segment:
        for shared, backend in ((IN_PROCESS, None), (SHM, "shm://" + segment("rate"))):
            lim = omnilimit.RateLimiter(HUGE, burst_size=HUGE, provider_name="bench", backend=backend)
            row(RATE_DECISION, "omnilimit", shared, "acquire(timeout=0)", partial(lim.acquire, 0))
        for shared, backend in ((IN_PROCESS, None), (SHM, "shm://" + segment("slots"))):
            slots = omnilimit.ConcurrencyLimiter(4, name="bench", backend=backend)
            pair = _pair_without_waiting(slots)
            row(CONCURRENCY_PAIR, "omnilimit", shared, "acquire(timeout=0); release()", pair)
    found, skipped = peers.shared_rate_peers(HUGE, HUGE, context)
    _add_skipped(impls, skipped)
    try:
        for peer in found:
            taker = peers.open_shared(peer.handle)
            try:
                row(RATE_DECISION, peer.name, peer.shared_through, taker.call, taker.decide)
            finally:
                taker.close()
    finally:
        for peer in found:
            peer.close()
    return rows


def _pair_without_waiting(lim: Any) -> Callable[[], bool]:
    acquire, release = lim.acquire, lim.release

    def pair() -> bool:
        admitted: bool = acquire(0)
        release()
        return admitted

    return pair


def _add_skipped(impls: Impls, skipped: list[peers.Skipped]) -> None:
    """Adds the peers skipped to the run's list, each once (another section may have named it)."""
    for s in skipped:
        entry = {"name": s.name, "reason": s.reason}
        if entry not in impls.skipped:
            impls.skipped.append(entry)


def _cpu_of(pid: int) -> float:
    """CPU seconds (user + system) used so far by process `pid`; NaN where /proc cannot tell."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()  # the fields after the command name
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    except (OSError, ValueError, IndexError):
        return math.nan


def _shared_process(
    open_limiter: Callable[[Any], peers.SharedTaker],
    handle: Any,
    threads: int,
    ready: Any,
    go: Any,
    end: Any,
    out: Any,
) -> None:
    """One process of a multi-process run (the target of a multiprocessing.Process): opens the
    limiter, starts `threads` threads, says it is ready, and at `go` lets them take what the limiter
    admits until ``end.value`` (time.monotonic(), the same clock in every process). Each thread asks
    with the time left as its timeout and stops at its first refusal. Puts its admission times, its
    CPU seconds over the run and any error on `out`."""
    logging.getLogger("omnilimit").setLevel(logging.ERROR)  # as in the parent: the last waits time out on purpose
    result: dict[str, Any] = {"times": [], "cpu_s": 0.0, "errors": []}
    errors: list[str] = result["errors"]
    try:
        taker = open_limiter(handle)
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
        ready.release()
        out.put(result)
        return
    admitted: list[list[float]] = [[] for _ in range(threads)]
    start = threading.Event()
    take = taker.take

    def worker(mine: list[float]) -> None:
        start.wait()
        stop = end.value
        try:
            while (left := stop - time.monotonic()) > 0:
                if not take(left):
                    return
                if (t := time.monotonic()) <= stop:
                    mine.append(t)
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    workers = [threading.Thread(target=worker, args=(mine,), daemon=True) for mine in admitted]
    try:
        for w in workers:
            w.start()
        gc.collect()
        ready.release()
        go.wait(SHARED_START_TIMEOUT_S)
        cpu = time.process_time()
        start.set()
        for w in workers:
            w.join()
        result["cpu_s"] = time.process_time() - cpu
        result["times"] = sorted(t for mine in admitted for t in mine)
    finally:
        start.set()
        taker.close()
        out.put(result)


def _wait_ready(ready: Any, processes: list[Any]) -> None:
    """Waits until each of `processes` has released `ready` once; raises if one dies first or
    SHARED_START_TIMEOUT_S pass."""
    deadline = time.monotonic() + SHARED_START_TIMEOUT_S
    for _ in processes:
        while not ready.acquire(timeout=0.1):
            dead = [p.exitcode for p in processes if p.exitcode]  # 0: done, after saying it was ready
            if dead or time.monotonic() > deadline:
                why = f"exited with {dead[0]}" if dead else f"not ready after {SHARED_START_TIMEOUT_S:g} s"
                raise RuntimeError(f"a process of the multi-process run {why}")


def _processes_run(
    context: Any, open_limiter: Callable[[Any], peers.SharedTaker], handle: Any, settings: Settings, helpers: Any = ()
) -> dict[str, Any]:
    """`shared_processes` processes of SHARED_THREADS threads each take from the limiter `handle`
    opens for `shared_seconds`: the admission times of all of them (sorted), the CPU seconds of the
    processes and of the library's `helpers` processes over the run, and the errors reported."""
    ready, go, out = context.Semaphore(0), context.Event(), context.Queue()
    end = context.Value("d", 0.0, lock=False)
    args = (open_limiter, handle, SHARED_THREADS, ready, go, end, out)
    processes = [
        context.Process(target=_shared_process, args=args, daemon=True) for _ in range(settings.shared_processes)
    ]
    try:
        for p in processes:
            p.start()
        _wait_ready(ready, processes)
        helpers_cpu = [_cpu_of(pid) for pid in helpers]
        gc.collect()
        began = time.monotonic()
        end.value = began + settings.shared_seconds
        go.set()
        results = [out.get(timeout=settings.shared_seconds + SHARED_START_TIMEOUT_S) for _ in processes]
        helpers_cpu = [_cpu_of(pid) - before for pid, before in zip(helpers, helpers_cpu)]
    finally:
        go.set()  # end.value is 0 unless the run began: the threads stop at once
        for p in processes:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
                p.join()
    return {
        "began": began,
        "times": sorted(t for r in results for t in r["times"]),
        "cpu_s": sum(r["cpu_s"] for r in results) + sum(helpers_cpu),
        "helpers_cpu_s": sum(helpers_cpu),
        "errors": [e for r in results for e in r["errors"]],
    }


def _processes_figures(run: dict[str, Any], settings: Settings) -> dict[str, Any]:
    times, began = run["times"], run["began"]
    ideal = SHARED_BURST + SHARED_RATE_PER_S * settings.shared_seconds
    n = len(times)
    return {
        "admitted": n,
        "ideal": _whole(ideal),
        "error_pct": (n - ideal) / ideal * 100,
        "first_ms": (times[0] - began) * 1e3 if times else math.nan,
        "most_in_1s": most_in_window(times, 1.0),
        "most_in_short_window": most_in_window(times, SHARED_SHORT_WINDOW_S),
        "cpu_us_per_admitted": run["cpu_s"] / n * 1e6 if n else math.nan,
        "helpers_cpu_s": run["helpers_cpu_s"],
        "errors": run["errors"],
    }


def _shared_processes(impls: Impls, settings: Settings, context: Any) -> list[dict[str, Any]]:
    per_minute = SHARED_RATE_PER_S * 60
    config = f"RateLimiter({per_minute} RPM, burst_size={SHARED_BURST})"
    # (implementation, shared through, configured as): every run of each, interleaved
    kinds: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for round_ in range(settings.shared_runs):
        with _segments() as segment:
            shared = _OmnilimitHandle(per_minute, SHARED_BURST, "shm://" + segment("processes"))
            # The segment is created here (full bucket), then opened by every process.
            creator = omnilimit.RateLimiter(
                per_minute, burst_size=SHARED_BURST, provider_name="bench", backend=shared.backend
            )
            run = _processes_run(context, _open_omnilimit, shared, settings)
            kinds.setdefault(("omnilimit", SHM, config), []).append(_processes_figures(run, settings))
            del creator
        own = _OmnilimitHandle(per_minute, SHARED_BURST, None)
        run = _processes_run(context, _open_omnilimit, own, settings)
        kinds.setdefault(("omnilimit", OWN_LIMITERS, config), []).append(_processes_figures(run, settings))
        found, skipped = peers.shared_rate_peers(per_minute, SHARED_BURST, context)
        if round_ == 0:
            _add_skipped(impls, skipped)
        try:
            for peer in found:
                run = _processes_run(context, peers.open_shared, peer.handle, settings, peer.helper_pids)
                kinds.setdefault((peer.name, peer.shared_through, peer.config), []).append(
                    _processes_figures(run, settings)
                )
        finally:
            for peer in found:
                peer.close()
    rows = []
    for (impl, shared_through, configured), runs in kinds.items():
        # the run of median CPU; the worst of every run for the error and the windows
        row = dict(sorted(runs, key=lambda r: r["cpu_us_per_admitted"])[(len(runs) - 1) // 2])
        row["error_pct"] = max((r["error_pct"] for r in runs), key=abs)
        row["most_in_1s"] = max(r["most_in_1s"] for r in runs)
        row["most_in_short_window"] = max(r["most_in_short_window"] for r in runs)
        row["errors"] = [e for r in runs for e in r["errors"]]
        rows.append(
            {
                "part": "processes",
                "impl": impl,
                "shared": shared_through,
                "config": configured,
                "processes": settings.shared_processes,
                "threads": settings.shared_processes * SHARED_THREADS,
                "seconds": settings.shared_seconds,
                "rate_per_s": SHARED_RATE_PER_S,
                "burst": SHARED_BURST,
                **row,
                "limit_1s": SHARED_RATE_PER_S + SHARED_BURST,
                "short_window_s": SHARED_SHORT_WINDOW_S,
                "short_window_limit": _whole(SHARED_RATE_PER_S * SHARED_SHORT_WINDOW_S + SHARED_BURST),
                "note": "; ".join(dict.fromkeys(row["errors"]))[:300],
                "runs": runs,
            }
        )
    return rows


def shared_processes(impls: Impls, settings: Settings) -> list[dict[str, Any]]:
    """9. Limiters shared between processes.

    Decisions (rows with ``part == "decision"``): ns per uncontended call on one thread, as in
    section 2, of omnilimit's RateLimiter (``acquire(timeout=0)`` on a bucket no run exhausts) and
    ConcurrencyLimiter (``acquire(timeout=0); release()``), in-process and in a shared-memory segment,
    and of the peers that share a limiter between processes without a server.

    Processes (``part == "processes"``): `shared_processes` processes of 4 threads each take from one
    limiter of 600/s, burst 60, for `shared_seconds`: admitted against the ideal (burst + rate x
    time), the most admissions in any 1 s and any 100 ms against rate x window + burst, and CPU per
    admission (the processes', and that of the library's own server process, if any). A control row
    gives each process its own in-process limiter: each admits the whole budget.

    The processes are started with the "spawn" method: a fork would copy a process that earlier
    sections left with threads. Start-up is not timed: the run begins once every process is ready.
    Every segment created is removed at the end, on errors too."""
    context = multiprocessing.get_context("spawn")
    return _shared_decisions(impls, settings, context) + _shared_processes(impls, settings, context)


# --- 10: Redis: one budget across hosts ------------------------------------------------------------

REDIS_ENV_VAR = "OMNILIMIT_BENCH_REDIS"  # the default of ``omnilimit bench --redis URL``
ROUND_TRIP = "round trip"
NO_LIMITER = "(no limiter)"


def redis_problem(url: str | None) -> str | None:
    """Why section 10 cannot run against `url` (none given, no redis-py, no server answering), or
    None when it can."""
    if not url:
        return f"no Redis server given: omnilimit bench --redis redis://HOST:6379/0 (or {REDIS_ENV_VAR}=URL)"
    if "+cluster://" in url:
        return f"{redact(url)} names a Redis Cluster: this section measures one server (redis:// or rediss://)"
    try:
        import redis
    except ImportError:
        return "redis-py is not installed: pip install 'omnilimit[redis]'"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
        try:
            client.ping()
        finally:
            client.close()
    except (redis.RedisError, ValueError, OSError) as error:
        return f"no Redis answering at {redact(url)} ({type(error).__name__}: {error})"
    return None


class _RedisCase(NamedTuple):
    """One limiter of section 10, built: ``decide()`` is one decision (True: admitted)."""

    call: str  # RATE_DECISION, CONCURRENCY_PAIR or ROUND_TRIP
    impl: str
    api: str
    decide: Callable[[], Any]
    api_in_threads: str  # what the threads of the multi-thread run call (see peers.RateDecider)
    decide_in_threads: Callable[[], Any]


@contextmanager
def _redis_cases(impls: Impls, url: str, slots: int) -> Iterator[tuple[Any, list[_RedisCase]]]:
    """Yields (a client of the server, every limiter of section 10 on it); on the way out, whatever
    happened, closes them and deletes every key they made."""
    import redis

    client = redis.Redis.from_url(url)
    name = f"bench-{os.getpid()}-{next(_segment_numbers)}"  # omnilimit's limiters: keys omnilimit:{NAME}:...
    closers: list[Callable[[], None]] = []
    try:
        rate = omnilimit.RateLimiter(HUGE, burst_size=HUGE, provider_name=name, backend=url)
        pair = omnilimit.ConcurrencyLimiter(slots, name=name, backend=url)
        closers.append(pair.close)
        ours = (
            (ROUND_TRIP, f"redis-py {redis.__version__} {NO_LIMITER}", "ping()", client.ping),
            (RATE_DECISION, "omnilimit", "acquire(timeout=0)", partial(rate.acquire, 0)),
            (CONCURRENCY_PAIR, "omnilimit", "acquire(timeout=0); release()", _pair_without_waiting(pair)),
        )
        cases = [_RedisCase(call, impl, api, decide, api, decide) for call, impl, api, decide in ours]
        found, skipped = peers.redis_rate_deciders(HUGE, HUGE, url)
        closers += [decider.close for decider in found]
        _add_skipped(impls, skipped)
        for d in found:
            in_threads = (d.call_in_threads, d.decide_in_threads) if d.decide_in_threads else (d.call, d.decide)
            cases.append(_RedisCase(RATE_DECISION, d.name, d.call, d.decide, *in_threads))
        yield client, cases
    finally:
        try:
            for close in closers:
                close()
        finally:
            client.delete(*keys_for("rate", name_for_key(name)), *keys_for("sem", name_for_key(name)))
            client.close()


@contextmanager
def _sends() -> Iterator[list[int]]:
    """Counts what this thread sends to Redis inside the block, as ``[count]``: each send of a
    redis-py connection is one round trip (a command, or a whole pipeline). Other threads' sends
    (omnilimit's lease keeper, say) are not counted."""
    from redis.connection import Connection

    owner: Any = next(klass for klass in Connection.__mro__ if "send_packed_command" in vars(klass))
    send = owner.send_packed_command
    me = threading.get_ident()
    sent = [0]

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() == me:
            sent[0] += 1
        return send(self, *args, **kwargs)

    owner.send_packed_command = counted
    try:
        yield sent
    finally:
        owner.send_packed_command = send


def _server_counts(client: Any) -> tuple[dict[str, int], float]:
    """The commands Redis has run so far by name (INFO commandstats, those run by scripts included;
    INFO itself left out) and its CPU seconds so far (INFO cpu, user + system). The whole server's."""
    stats = client.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(stat["calls"]) for name, stat in stats.items()}
    calls.pop("info", None)
    cpu = client.info("cpu")
    return calls, float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def _redis_counts(decide: Callable[[], Any], client: Any, decisions: int) -> dict[str, Any]:
    """Over `decisions` decisions on this thread: round trips, Redis commands (and by name), Redis
    CPU and this process's CPU, per decision; and how many were refused."""
    before, server_cpu = _server_counts(client)
    refused = 0
    cpu = time.process_time()
    with _sends() as sent:
        for _ in range(decisions):
            if decide() is False:
                refused += 1
    cpu = time.process_time() - cpu
    after, server_cpu_after = _server_counts(client)
    ran = {name: (n - before.get(name, 0)) / decisions for name, n in after.items() if n != before.get(name, 0)}
    return {
        "round_trips": sent[0] / decisions,
        "commands": sum(ran.values()),
        "commands_by_name": dict(sorted(ran.items(), key=lambda item: (-item[1], item[0]))),
        "server_cpu_us": (server_cpu_after - server_cpu) / decisions * 1e6,
        "cpu_us": cpu / decisions * 1e6,
        "counted": decisions,
        "refused": refused,
    }


def _redis_threads_trial(decide: Callable[[], Any], client: Any, settings: Settings) -> dict[str, Any]:
    """`redis_threads` threads decide in a loop on one limiter; counted for `redis_seconds` after
    `warmup_s` (the threads start, the connection pool grows to one connection each)."""
    threads = settings.redis_threads
    phase = [0]  # 0 warm-up, 1 counting, 2 stop
    counted = [0] * threads
    refused = [0] * threads
    errors: list[str] = []
    start = threading.Event()

    def worker(i: int) -> None:
        start.wait()
        n = no = 0
        try:
            while (state := phase[0]) != 2:
                admitted = decide()
                if state == 1:
                    n += 1
                    if admitted is False:
                        no += 1
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
        counted[i], refused[i] = n, no

    workers = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for w in workers:
        w.start()
    start.set()
    time.sleep(settings.warmup_s)
    _, server_cpu = _server_counts(client)
    cpu, t0 = time.process_time(), time.perf_counter()
    phase[0] = 1
    time.sleep(settings.redis_seconds)
    phase[0] = 2
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu
    _, server_cpu_after = _server_counts(client)
    for w in workers:
        w.join()
    n = sum(counted)
    return {
        "decisions_per_s": n / elapsed,
        "cpu_us": cpu / n * 1e6 if n else math.nan,
        "server_cpu_us": (server_cpu_after - server_cpu) / n * 1e6 if n else math.nan,
        "refused": sum(refused),
        "errors": errors,
    }


def redis_across_hosts(impls: Impls, settings: Settings) -> list[dict[str, Any]]:
    """10. Limiters whose state lives in one Redis server (``impls.redis_url``), shared by every
    process and host that names them there; a limit no run exhausts, as in section 2.

    Decisions (rows with ``part == "decision"``): one thread; ns per call (minimum and median of
    `micro_repeat` runs, interleaved; decisions/s from the median), then over `redis_counted` more decisions the round
    trips (what this thread sent: one per send of a redis-py connection), the commands Redis ran
    (those a script runs included), Redis's CPU and this process's, per decision. omnilimit's
    RateLimiter (``acquire(timeout=0)``) and ConcurrencyLimiter (``acquire(timeout=0); release()``),
    the peers' Redis limiters, and redis-py's PING: one round trip deciding nothing, the floor.

    Threads (``part == "threads"``): `redis_threads` threads share each limiter (and its client's
    connection pool) and decide in a loop: decisions/s against one thread's, CPU per decision;
    the trial of median throughput of `redis_trials` (interleaved; every trial in ``trials``).

    Redis's figures are the whole server's: the run should be its only client. Every key the run
    makes is deleted at the end, on errors too."""
    if impls.redis_url is None:
        raise ValueError("section 10 needs a Redis server: Impls.redis_url")
    url = impls.redis_url
    decisions: list[dict[str, Any]] = []
    with _redis_cases(impls, url, max(4, settings.redis_threads)) as (client, cases):
        where = f"Redis {client.info('server')['redis_version']} at {redact(url)}"
        deciders = [_checked(case.decide, f"{case.impl} ({case.call})") for case in cases]
        for case, decide, timed in zip(cases, deciders, times_per_call(deciders, settings)):
            decisions.append(
                {"part": "decision", "call": case.call, "impl": case.impl, "api": case.api, "server": where}
                | timed
                | {"decisions_per_s": 1e9 / timed["median_ns"]}  # the typical run: threads are compared with it
                | _redis_counts(decide, client, settings.redis_counted)
            )
        trials: list[list[dict[str, Any]]] = [[] for _ in cases]
        for _ in range(settings.redis_trials):  # interleaved: a slow phase of the machine hits everyone
            for case, mine in zip(cases, trials):
                mine.append(_redis_threads_trial(case.decide_in_threads, client, settings))
    threads = []
    for case, one, mine in zip(cases, decisions, trials):
        median = sorted(mine, key=lambda t: t["decisions_per_s"])[(len(mine) - 1) // 2]
        threads.append(
            {"part": "threads", "call": case.call, "impl": case.impl, "api": case.api_in_threads, "server": where}
            | {"threads": settings.redis_threads, "seconds": settings.redis_seconds, **median}
            | {"vs_one_thread": median["decisions_per_s"] / one["decisions_per_s"], "trials": mine}
        )
    return decisions + threads


SECTIONS: dict[str, Callable[[Impls, Settings], list[dict[str, Any]]]] = {
    "uncontended": uncontended,
    "rate_decision": rate_decision,
    "manager": manager_path,
    "contention": contention,
    "rate_accuracy": rate_accuracy,
    "gil": gil_friendliness,
    "wakeup": wakeup_latency,
    "asyncio": asyncio_tasks,
    "shared": shared_processes,
    "redis": redis_across_hosts,
}
