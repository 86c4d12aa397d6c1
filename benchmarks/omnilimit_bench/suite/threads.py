"""Sections 3 to 6, threads against one limiter: contention (throughput, fairness, latency), rate
accuracy, GIL friendliness (what waiting threads cost the thread that works) and wake-up latency."""

from __future__ import annotations

import gc
import itertools
import resource
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .settings import Impls, Settings

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
                "largest_gap_ms": max((b - a for a, b in itertools.pairwise(times)), default=0.0) * 1e3,
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
