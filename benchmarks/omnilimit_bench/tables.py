"""The printed report of a run: the sections' titles (``TITLES``), their tables, the peers skipped
and the targets' verdicts (``print_report``)."""

from __future__ import annotations

import math
import sys
from typing import Any, TextIO

from .suite import RATE_DECISION, SHM
from .targets import _one

TITLES = {
    "uncontended": "1. Uncontended pair, one thread (ns per call)",
    "rate_decision": "2. Uncontended rate decision (ns per call)",
    "manager": "7. Manager path as OmniGen's generators call it (ns per call)",
    "contention": "3. Contention on max_concurrent=4 (median trial; counted after the warm-up)",
    "rate_accuracy": "4. Rate accuracy: 6000 RPM, burst 100, 32 threads",
    "gil": "5. GIL friendliness: 64 threads waiting on a held ConcurrencyLimiter(1)",
    "wakeup": "6. Wake-up latency: release() to the waiter's acquire() returning",
    "asyncio": "8. asyncio: {tasks:,} tasks on one event loop",
    "shared": "9. Shared between processes",
    "redis": "10. Redis: one budget across hosts",
}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, str]], out: TextIO, left: int = 2) -> None:
    """Prints `rows` under `columns` ((key, heading)): the first `left` columns aligned left."""
    cells = [[_fmt(row.get(key, "")) for key, _ in columns] for row in rows]
    widths = [max(len(head), *(len(c[i]) for c in cells)) for i, (_, head) in enumerate(columns)]
    print(
        "  "
        + "  ".join(
            h.ljust(w) if i < left else h.rjust(w) for i, ((_, h), w) in enumerate(zip(columns, widths, strict=False))
        ),
        file=out,
    )
    for c in cells:
        print(
            "  "
            + "  ".join(
                v.ljust(w) if i < left else v.rjust(w) for i, (v, w) in enumerate(zip(c, widths, strict=False))
            ),
            file=out,
        )


def _with_ratio(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Adds "vs omnilimit": each row's `key` over omnilimit's in the same group (call / threads)."""
    out = []
    for row in rows:
        group = {k: row[k] for k in ("call", "threads") if k in row}
        ours = _one({"x": rows}, "x", impl="omnilimit", **group)
        out.append({**row, "vs_omnilimit": row[key] / ours[key] if ours and ours[key] else float("nan")})
    return out


COLUMNS: dict[str, list[tuple[str, str]]] = {
    "uncontended": [
        ("call", "call"),
        ("impl", "implementation"),
        ("min_ns", "min ns"),
        ("median_ns", "median"),
        ("vs_omnilimit", "x omnilimit"),
    ],
    "rate_decision": [
        ("impl", "implementation"),
        ("api", "call"),
        ("min_ns", "min ns"),
        ("median_ns", "median"),
        ("vs_omnilimit", "x omnilimit"),
    ],
    "manager": [
        ("call", "call"),
        ("impl", "implementation"),
        ("min_ns", "min ns"),
        ("median_ns", "median"),
        ("vs_omnilimit", "x omnilimit"),
    ],
    "contention": [
        ("threads", "threads"),
        ("impl", "implementation"),
        ("cycles_per_s", "cycles/s"),
        ("fairness", "min/max"),
        ("cv", "CV"),
        ("p50_us", "p50 µs"),
        ("p99_us", "p99 µs"),
        ("max_us", "max µs"),
        ("fairness_whole_run", "min/max whole run"),
    ],
    "rate_accuracy": [
        ("impl", "implementation"),
        ("rate_per_s", "rate/s"),
        ("admitted", "admitted"),
        ("ideal", "ideal"),
        ("error_pct", "error %"),
        ("most_in_1s_after_first", "most in 1 s"),
        ("largest_gap_ms", "largest gap ms"),
        ("cpu_ms_per_admitted", "CPU ms/admitted"),
        ("switches_per_admitted", "switches/admitted"),
    ],
    "gil": [
        ("impl", "implementation"),
        ("speed_ratio", "loop speed vs alone"),
        ("wakeups_per_s", "wake-ups/s"),
        ("idle_cpu_ms_per_s", "CPU ms/s"),
    ],
    "wakeup": [("impl", "implementation"), ("p50_us", "p50 µs"), ("p99_us", "p99 µs"), ("max_us", "max µs")],
}
RATIO_KEY = {"uncontended": "min_ns", "rate_decision": "min_ns", "manager": "min_ns"}

ASYNC_CONCURRENCY_COLUMNS = [
    ("loop", "loop"),
    ("impl", "implementation"),
    ("call", "call"),
    ("tasks_per_s", "tasks/s"),
    ("vs_semaphore", "x asyncio.Semaphore"),
    ("wall_ms", "wall ms"),
    ("cpu_us_per_task", "CPU µs/task"),
    ("cpu_vs_semaphore", "CPU x Semaphore"),
    ("limiter_cpu_us_per_task", "over tasks only"),
    ("peak_in_flight", "peak in flight"),
]


def _async_rate_columns(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    window = f"{rows[0]['window_s']:g} s" if rows else "window"
    short = f"{rows[0]['short_window_s'] * 1e3:g} ms" if rows else "short window"
    return [
        ("loop", "loop"),
        ("impl", "implementation"),
        ("config", "configured as"),
        ("admitted", "admitted"),
        ("achieved_per_s", "achieved/s"),
        ("error_pct", "error %"),
        ("most_in_window", f"most in {window}"),
        ("window_limit", "limit"),
        ("most_in_short_window", f"most in {short}"),
        ("short_window_limit", "limit"),
        ("cpu_us_per_admitted", "CPU µs/admitted"),
        ("wall_s", "wall s"),
    ]


def _print_asyncio(rows: list[dict[str, Any]], out: TextIO) -> None:
    tasks = rows[0]["tasks"] if rows else 0
    print(f"\n{TITLES['asyncio'].format(tasks=tasks)}", file=out)
    concurrency = [r for r in rows if r["part"] == "concurrency"]
    if concurrency:
        trials = len(concurrency[0]["trials"])
        print(
            f"  concurrency: each task `async with lim: await asyncio.sleep(0)`, max_concurrent="
            f"{concurrency[0]['max_concurrent']}; median of {trials} trial(s); ratios to asyncio.Semaphore on"
            " the same loop",
            file=out,
        )
        with_ratio = []
        for r in concurrency:
            semaphore = _one({"x": concurrency}, "x", impl="asyncio.Semaphore", loop=r["loop"])
            with_ratio.append(
                {
                    **r,
                    "vs_semaphore": r["tasks_per_s"] / semaphore["tasks_per_s"] if semaphore else float("nan"),
                    "cpu_vs_semaphore": r["cpu_us_per_task"] / semaphore["cpu_us_per_task"]
                    if semaphore
                    else float("nan"),
                }
            )
        _table(with_ratio, ASYNC_CONCURRENCY_COLUMNS, out)
    rate = [r for r in rows if r["part"] == "rate"]
    if rate:
        print(
            f"  rate: {tasks:,} tasks started at once, each `async with lim:` at {rate[0]['rate_per_s']:,}/s (the"
            " loop is busy starting them for the first tens of ms); the limit of a window is rate x window +"
            " burst; worst of the runs",
            file=out,
        )
        shown = [{**r, "admitted": r["admitted"] if r["complete"] else f"{r['admitted']:,} (cut off)"} for r in rate]
        _table(shown, _async_rate_columns(rate), out)
    sustained = [r for r in rows if r["part"] == "sustained"]
    if sustained:
        print(
            f"  sustained: {tasks:,} tasks each `async with lim:` in a loop for {sustained[0]['seconds']:g} s at"
            f" {sustained[0]['rate_per_s']:,}/s",
            file=out,
        )
        _table(sustained, _async_rate_columns(sustained), out)


SHARED_DECISION_COLUMNS = [
    ("call", "call"),
    ("impl", "implementation"),
    ("shared", "shared through"),
    ("api", "api"),
    ("min_ns", "min ns"),
    ("median_ns", "median"),
    ("vs_shm", "x omnilimit shm"),
]


def _shared_process_columns(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    short = f"{rows[0]['short_window_s'] * 1e3:g} ms" if rows else "short window"
    return [
        ("impl", "implementation"),
        ("shared", "shared through"),
        ("config", "configured as"),
        ("admitted", "admitted"),
        ("ideal", "ideal"),
        ("error_pct", "error %"),
        ("most_in_1s", "most in 1 s"),
        ("limit_1s", "limit"),
        ("most_in_short_window", f"most in {short}"),
        ("short_window_limit", "limit"),
        ("cpu_us_per_admitted", "CPU µs/admitted"),
    ]


def _print_shared(rows: list[dict[str, Any]], out: TextIO) -> None:
    print(f"\n{TITLES['shared']}", file=out)
    decisions = [r for r in rows if r["part"] == "decision"]
    if decisions:
        print("  uncontended, one thread (ns per call); a limit no run exhausts", file=out)
        with_ratio = []
        for r in decisions:
            shm = _one({"x": decisions}, "x", call=r["call"], impl="omnilimit", shared=SHM)
            with_ratio.append({**r, "vs_shm": r["min_ns"] / shm["min_ns"] if shm else float("nan")})
        _table(with_ratio, SHARED_DECISION_COLUMNS, out, left=4)
    processes = [r for r in rows if r["part"] == "processes"]
    if processes:
        first = processes[0]
        print(
            f"  {first['processes']} processes x {first['threads'] // first['processes']} threads take from one limiter"
            f" of {first['rate_per_s']:,}/s, burst {first['burst']}, for {first['seconds']:g} s; ideal = burst +"
            f" rate x time; limit of a window = rate x window + burst; worst of {len(first['runs'])} run(s)",
            file=out,
        )
        _table(processes, _shared_process_columns(processes), out, left=3)
        for r in processes:
            if r["note"]:
                print(f"  note: {r['impl']} ({r['shared']}): {r['note']}", file=out)


REDIS_DECISION_COLUMNS = [
    ("call", "call"),
    ("impl", "implementation"),
    ("api", "api"),
    ("decisions_per_s", "decisions/s"),
    ("min_us", "min µs"),
    ("median_us", "median"),
    ("round_trips", "round trips"),
    ("commands", "Redis commands"),
    ("server_cpu_us", "Redis CPU µs"),
    ("cpu_us", "CPU µs"),
    ("vs_omnilimit", "x omnilimit"),
]
REDIS_THREADS_COLUMNS = [
    ("call", "call"),
    ("impl", "implementation"),
    ("api", "api"),
    ("decisions_per_s", "decisions/s"),
    ("vs_one_thread", "x one thread"),
    ("server_cpu_us", "Redis CPU µs"),
    ("cpu_us", "CPU µs"),
]


def _print_redis(rows: list[dict[str, Any]], out: TextIO) -> None:
    decisions = [r for r in rows if r["part"] == "decision"]
    print(f"\n{TITLES['redis']}" + (f" ({decisions[0]['server']})" if decisions else ""), file=out)
    if decisions:
        first = decisions[0]
        print(
            f"  one thread, a limit no run exhausts: µs per decision (minimum and median of {first['repeats']} runs,"
            " interleaved; decisions/s from the median);"
            f" over {first['counted']:,} more, per decision: round trips (this thread's sends), the commands Redis"
            " ran (a script's included), Redis's CPU and this process's",
            file=out,
        )
        ours = _one({"x": decisions}, "x", impl="omnilimit", call=RATE_DECISION)
        shown = [
            {**r, "min_us": r["min_ns"] / 1e3, "median_us": r["median_ns"] / 1e3}
            | {"vs_omnilimit": r["min_ns"] / ours["min_ns"] if ours else math.nan}
            for r in decisions
        ]
        _table(shown, REDIS_DECISION_COLUMNS, out, left=3)
        print("  Redis commands per decision:", file=out)
        for r in decisions:
            ran = ", ".join(f"{name} {_fmt(n)}" for name, n in r["commands_by_name"].items())
            print(f"    {r['impl']} ({r['call']}): {ran}", file=out)
    threads = [r for r in rows if r["part"] == "threads"]
    if threads:
        first = threads[0]
        print(
            f"  {first['threads']} threads share each limiter, counted for {first['seconds']:g} s after the"
            f" warm-up; the trial of median throughput of {len(first['trials'])}; CPU of Redis and of this"
            " process per decision",
            file=out,
        )
        _table(threads, REDIS_THREADS_COLUMNS, out, left=3)
    for r in rows:
        errors = "; ".join(dict.fromkeys(r.get("errors", [])))[:300]
        if r["refused"] or errors:
            note = f"{r['refused']:,} refused" + (f"; {errors}" if errors else "")
            print(f"  note: {r['impl']} ({r['call']}, {r['part']}): {note}", file=out)


def print_report(data: dict[str, Any], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    for key, value in data["info"].items():
        print(f"{key + ':':<11}{value}", file=out)
    for section, rows in data["results"].items():
        if section == "asyncio":
            _print_asyncio(rows, out)
            continue
        if section == "shared":
            _print_shared(rows, out)
            continue
        if section == "redis":
            _print_redis(rows, out)
            continue
        print(f"\n{TITLES[section]}", file=out)
        if section in RATIO_KEY:
            rows = _with_ratio(rows, RATIO_KEY[section])
        _table(rows, COLUMNS[section], out)
    if data["skipped"]:
        print("\nskipped:", file=out)
        for s in data["skipped"]:
            print(f"  {s['name']}: {s['reason']}", file=out)
    print("\ntargets (this run):", file=out)
    for t in data["targets"]:
        verdict = {True: "met", False: "NOT MET", None: "not measured"}[t["met"]]
        print(f"  [{verdict}] {t['target']}: {t['measured']}", file=out)
