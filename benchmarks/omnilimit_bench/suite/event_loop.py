"""Section 8, asyncio: tasks on one event loop through omnilimit's ConcurrencyLimiter against
``asyncio.Semaphore`` / ``BoundedSemaphore``, and through its RateLimiter against aiolimiter; on
asyncio's own loop and, when installed, on uvloop's."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Coroutine
from typing import Any

import omnilimit

from .. import peers
from .settings import Impls, Settings
from .threads import most_in_window

# --- 8: asyncio ----------------------------------------------------------------------------------

ASYNC_MAX_CONCURRENT = 64
ASYNC_RATE_PER_S = 6000  # 10,000 tasks take 1.67 s at burst 1
ASYNC_BURSTS = (1, 10)  # strict pacing (omnilimit's default), and 1.7 ms of traffic at once
SHORT_WINDOW_S = 0.01
TASKS_ONLY = "tasks only (no limiter)"
ASYNC_WITH = "async with lim"
NO_TIMEOUT = "acquire_async(timeout=None); release()"

Runner = Callable[[Coroutine[Any, Any, Any]], Any]  # asyncio.run, or uvloop.run


def loops(impls: Impls) -> list[tuple[str, Runner]]:
    """The event loops to run on: asyncio's, and uvloop's when it is installed (else it is listed
    as skipped)."""
    found: list[tuple[str, Runner]] = [("asyncio", asyncio.run)]
    try:
        import uvloop
    except ImportError:
        impls.skipped.append({"name": "uvloop", "reason": "not installed (pip install uvloop)"})
    else:
        found.append(("uvloop", uvloop.run))
    return found


# (implementation, call, maker taking max_concurrent; None for the tasks without a limiter)
ASYNC_CONCURRENCY: tuple[tuple[str, str, Callable[[int], Any] | None], ...] = (
    (TASKS_ONLY, "await asyncio.sleep(0)", None),
    ("omnilimit", ASYNC_WITH, lambda n: omnilimit.ConcurrencyLimiter(n, name="bench")),
    ("omnilimit", NO_TIMEOUT, lambda n: omnilimit.ConcurrencyLimiter(n, name="bench")),
    ("asyncio.Semaphore", ASYNC_WITH, asyncio.Semaphore),
    ("asyncio.BoundedSemaphore", ASYNC_WITH, asyncio.BoundedSemaphore),
)


def _async_concurrency_run(
    make: Callable[[int], Any] | None, call: str, tasks: int, run: Runner = asyncio.run
) -> dict[str, Any]:
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
    result = run(main())
    return {**result, "peak_in_flight": flight[1]}


def _async_concurrency(settings: Settings, on: list[tuple[str, Runner]]) -> list[dict[str, Any]]:
    """Every implementation on asyncio's loop; on another loop, the tasks alone, omnilimit's
    `async with` and asyncio.Semaphore."""
    cases = [
        (loop, run, impl, call, make)
        for loop, run in on
        for impl, call, make in ASYNC_CONCURRENCY
        if loop == "asyncio" or (call == ASYNC_WITH and impl != "asyncio.BoundedSemaphore") or make is None
    ]
    trials: dict[tuple[str, str, str], list[dict[str, Any]]] = {(c[0], c[2], c[3]): [] for c in cases}
    for _ in range(settings.async_trials):  # interleaved: a slow phase of the machine hits everyone
        for loop, run, impl, call, make in cases:
            trials[loop, impl, call].append(_async_concurrency_run(make, call, settings.async_tasks, run))
    rows = []
    for (loop, impl, call), mine in trials.items():
        median = sorted(mine, key=lambda t: t["tasks_per_s"])[(len(mine) - 1) // 2]
        row = {"part": "concurrency", "loop": loop, "impl": impl, "call": call, "tasks": settings.async_tasks}
        rows.append({**row, "max_concurrent": ASYNC_MAX_CONCURRENT, **median, "trials": mine})
    for loop, _ in on:
        mine = [row for row in rows if row["loop"] == loop]
        base = mine[0]["cpu_us_per_task"]  # the tasks alone, on the same loop, in the same run
        for row in mine:
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


def _sustained_run(make: Callable[[], Any], tasks: int, seconds: float, run: Runner) -> dict[str, Any]:
    """`tasks` tasks on a fresh event loop, each entering ``async with lim:`` in a loop and noting
    the time it got in, for `seconds`; then the tasks still waiting are cancelled."""

    async def main() -> dict[str, Any]:
        lim = make()
        admitted: list[float] = []
        clock = time.monotonic

        async def task() -> None:
            while True:
                async with lim:
                    admitted.append(clock())

        loop = asyncio.get_running_loop()
        cpu, t0 = time.process_time(), time.perf_counter()
        started = [loop.create_task(task()) for _ in range(tasks)]
        await asyncio.wait(started, timeout=seconds)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu
        for waiting in started:
            waiting.cancel()
        await asyncio.gather(*started, return_exceptions=True)
        for finished in started:
            if not finished.cancelled() and finished.exception() is not None:
                raise RuntimeError("a task failed") from finished.exception()
        return {"times": sorted(t for t in admitted if t - t0 <= wall), "wall_s": wall, "cpu_s": cpu}

    gc.collect()
    return run(main())  # type: ignore[no-any-return]


def _async_sustained(impls: Impls, settings: Settings, on: list[tuple[str, Runner]]) -> list[dict[str, Any]]:
    """The rate held for `async_sustained_s` by 10,000 tasks acquiring in a loop (at 6,000/s: about
    six admissions per task), on each loop: omnilimit at each burst, and aiolimiter on asyncio's
    loop at the larger burst (at burst 1 it admits about one request per loop iteration)."""
    per_s, seconds = ASYNC_RATE_PER_S, settings.async_sustained_s
    cases: list[tuple[str, Runner, str, int, str, Callable[[], Any]]] = []
    for loop, run in on:
        for burst in ASYNC_BURSTS:

            def ours(burst: int = burst) -> Any:
                return omnilimit.RateLimiter(per_s * 60, burst_size=burst, provider_name="bench")

            cases.append((loop, run, "omnilimit", burst, f"RateLimiter({per_s * 60} RPM, burst_size={burst})", ours))
            if loop == "asyncio" and burst == ASYNC_BURSTS[-1]:
                found, _ = peers.async_rate_limiters(per_s, burst)
                cases += [(loop, run, peer.name, burst, peer.config, peer.make) for peer in found]
    rows = []
    for loop, run, impl, burst, config, make in cases:
        result = _sustained_run(make, settings.async_tasks, seconds, run)
        times: list[float] = result["times"]
        n = len(times)
        span = times[-1] - times[0] if n > 1 else 0.0
        achieved = (n - burst) / span if n > burst and span > 0 else float("nan")
        rows.append(
            {
                "part": "sustained",
                "loop": loop,
                "impl": impl,
                "config": config,
                "burst": burst,
                "tasks": settings.async_tasks,
                "rate_per_s": per_s,
                "seconds": seconds,
                "admitted": n,
                "achieved_per_s": achieved,
                "error_pct": (achieved / per_s - 1) * 100,
                "most_in_window": most_in_window(times, settings.async_window_s),
                "window_s": settings.async_window_s,
                "window_limit": _whole(per_s * settings.async_window_s + burst),
                "most_in_short_window": most_in_window(times, SHORT_WINDOW_S),
                "short_window_s": SHORT_WINDOW_S,
                "short_window_limit": _whole(per_s * SHORT_WINDOW_S + burst),
                "cpu_us_per_admitted": result["cpu_s"] / n * 1e6 if n else float("nan"),
                "wall_s": result["wall_s"],
                "complete": True,
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
    process CPU per admission.

    Sustained (``part == "sustained"``): the same tasks each acquiring in a loop for
    `async_sustained_s`, the same figures.

    Concurrency and sustained rows run on asyncio's loop and on uvloop's (``loop``) when it is
    installed."""
    on = loops(impls)
    rows = _async_concurrency(settings, on) + _async_rate(impls, settings)
    for row in rows:
        row.setdefault("loop", "asyncio")
    return rows + _async_sustained(impls, settings, on)
