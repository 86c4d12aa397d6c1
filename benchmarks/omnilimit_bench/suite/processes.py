"""Section 9, limiters shared between processes: omnilimit's in shared memory (``backend="shm"``)
against the same in-process and against pyrate-limiter's multi-process buckets, per decision and
with several processes taking from one limiter. Also the helpers section 10 shares (segment names,
checked deciders, the rows of skipped peers)."""

from __future__ import annotations

import gc
import itertools
import logging
import math
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, NamedTuple

import omnilimit

from .. import peers
from .event_loop import _whole
from .per_call import time_per_call
from .settings import HUGE, Impls, Settings
from .threads import most_in_window

# --- 9: shared between processes ------------------------------------------------------------------

SHARED_THREADS = 4  # threads in each process of the multi-process run
SHARED_RATE_PER_S = 600
SHARED_BURST = 60  # 100 ms of traffic: pyrate-limiter's window log gets Rate(60, 100 ms), the same budget
SHARED_SHORT_WINDOW_S = 0.1
SHARED_START_TIMEOUT_S = 120.0  # for the processes to start (spawn imports omnilimit in each)
RATE_DECISION = "rate decision"
TOKEN_DECISION = "token decision"  # a request and 100 tokens of a token budget, together
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
        for shared, backend in ((IN_PROCESS, None), (SHM, "shm://" + segment("tokens"))):
            lim = omnilimit.RateLimiter(
                HUGE, burst_size=HUGE, provider_name="bench", backend=backend, tokens_per_minute=HUGE, token_burst=HUGE
            )
            row(TOKEN_DECISION, "omnilimit", shared, "acquire(timeout=0, tokens=100)", partial(lim.acquire, 0, 100))
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
        helpers_cpu = [_cpu_of(pid) - before for pid, before in zip(helpers, helpers_cpu, strict=False)]
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
