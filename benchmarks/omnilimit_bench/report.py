"""``omnilimit bench``: run the suite, print omnilimit against every peer found, check the targets.

    omnilimit bench [--full] [--only SECTION ...] [--redis URL] [--json FILE] [--plot FILE.png]

The targets are those of the project's benchmark issue; they are reported, met or not, with the
figures of this run. Nothing here is asserted by the test suite: timings belong to this command.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import logging
import math
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, TextIO

import omnilimit
from omnilimit._shown import redact
from omnilimit.backends.redis_link import SCHEMES

from .reference import ENV_VAR, load_reference
from .suite import (
    ASYNC_WITH,
    CONCURRENCY_PAIR,
    IN_PROCESS,
    RATE_DECISION,
    REDIS_ENV_VAR,
    SECTIONS,
    SETTINGS,
    SHM,
    Impls,
    Settings,
    redis_problem,
)

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


PEER_DISTRIBUTIONS = ("pyrate-limiter", "limits", "token-bucket", "aiolimiter", "filelock", "redis")


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), model)
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{platform.platform()}, {model}, {os.cpu_count()} cores ({usable} usable)"


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def run(
    settings: Settings,
    sections: Iterable[str],
    command: str = "omnilimit bench",
    progress: TextIO | None = None,
    redis_url: str | None = None,
) -> dict[str, Any]:
    """Every figure of one run, JSON-ready: info, settings, results by section, skipped peers, targets.

    Section 10 (redis) runs against the server at `redis_url`; without one it is skipped, and says
    why (on `progress`, and in the run's skipped list)."""
    reference, origin = load_reference()
    skipped = [] if reference is not None else [{"name": "reference (omnigen-usf 0.1.18)", "reason": origin}]
    impls = Impls(reference, origin, skipped, redis_url)
    sections = list(sections)
    if "redis" in sections and (problem := redis_problem(redis_url)) is not None:
        sections.remove("redis")
        skipped.append({"name": TITLES["redis"], "reason": problem})
        if progress is not None:
            print(f"  skipping redis: {problem}", file=progress, flush=True)
    given = os.environ.get(ENV_VAR)
    info = {
        "command": f"{ENV_VAR}={shlex.quote(given)} {command}" if given else command,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "omnilimit": omnilimit.__version__,
        "reference": origin if reference is not None else "skipped",
        "peers": ", ".join(f"{d} {_version(d)}" for d in PEER_DISTRIBUTIONS),
    }
    results: dict[str, Any] = {}
    started = time.perf_counter()
    log = logging.getLogger("omnilimit")
    level = log.level
    log.setLevel(logging.ERROR)  # the runs time out on purpose: one warning each would flood the output
    try:
        for section in sections:
            if progress is not None:
                print(f"  running {section}...", file=progress, flush=True)
            results[section] = SECTIONS[section](impls, settings)
    finally:
        log.setLevel(level)
    info["seconds"] = f"{time.perf_counter() - started:.1f}"
    return {
        "info": info,
        "settings": settings.as_dict(),
        "results": results,
        "skipped": impls.skipped,
        "targets": targets(results),
    }


# --- targets -------------------------------------------------------------------------------------


def _rows(results: dict[str, Any], section: str, **match: Any) -> list[dict[str, Any]]:
    return [row for row in results.get(section, []) if all(row.get(k) == v for k, v in match.items())]


def _one(results: dict[str, Any], section: str, **match: Any) -> dict[str, Any] | None:
    rows = _rows(results, section, **match)
    return rows[0] if rows else None


Part = tuple[str, float, Callable[[float], bool]]  # (label, figure, the check of the figure)


def _at_most(limit: float) -> Callable[[float], bool]:
    return lambda v: v <= limit


def _figure(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """[{target, measured, met}], met None when this run lacks what the target compares."""
    out: list[dict[str, Any]] = []

    def add(target: str, parts: list[Part | None]) -> None:
        if not parts or any(p is None for p in parts):
            out.append({"target": target, "measured": "not measured in this run", "met": None})
            return
        present = [p for p in parts if p is not None]
        measured = "; ".join(f"{label} {_figure(value)}" for label, value, _ in present)
        out.append({"target": target, "measured": measured, "met": all(ok(v) for _, v, ok in present)})

    def ratio(section: str, top: str, bottom: str, call: str, label: str, ok: Callable[[float], bool]) -> Any:
        a, b = _one(results, section, impl=top, call=call), _one(results, section, impl=bottom, call=call)
        return None if a is None or b is None else (label, a["min_ns"] / b["min_ns"], ok)

    pair_forms = ("acquire(); release()", "acquire(timeout=120); release()")
    add(
        "concurrency pair ≥10x faster than the reference (both forms)",
        [ratio("uncontended", "reference", "omnilimit", f, f"{f}: x", lambda v: v >= 10) for f in pair_forms],
    )
    add(
        "concurrency pair within 1.5x of _thread.lock (both forms)",
        [ratio("uncontended", "omnilimit", "_thread.lock", f, f"{f}: x", lambda v: v <= 1.5) for f in pair_forms],
    )
    add(
        "rate decision ≥5x faster than the reference",
        [ratio("rate_decision", "reference", "omnilimit", "one decision", "x", lambda v: v >= 5)],
    )
    ours = _one(results, "rate_decision", impl="omnilimit")
    rivals = [r for r in results.get("rate_decision", []) if r["impl"].startswith(("pyrate-limiter", "limits"))]
    add(
        "rate decision ≥20x faster than pyrate-limiter and limits",
        [(r["impl"] + ": x", r["min_ns"] / ours["min_ns"], lambda v: v >= 20) for r in rivals] if ours else [],
    )

    threads = max((r["threads"] for r in results.get("contention", [])), default=None)
    mine = _one(results, "contention", impl="omnilimit", threads=threads)
    ref = _one(results, "contention", impl="reference", threads=threads)
    add(
        f"contention at {threads} threads: fairness min/max ≥ 0.5",
        [("fairness", mine["fairness"], lambda v: v >= 0.5)] if mine else [],
    )
    add(
        f"contention at {threads} threads: p99 acquire latency ≤ 1/5 of the reference's",
        [("ours/reference", mine["p99_us"] / ref["p99_us"], lambda v: v <= 0.2)] if mine and ref else [],
    )
    add(
        f"contention at {threads} threads: throughput ≥ 2x the reference's",
        [("x", mine["cycles_per_s"] / ref["cycles_per_s"], lambda v: v >= 2)] if mine and ref else [],
    )

    acc = _one(results, "rate_accuracy", impl="omnilimit")
    acc_ref = _one(results, "rate_accuracy", impl="reference")
    add(
        "rate accuracy: admitted within 0.5% of ideal",
        [("error %", acc["error_pct"], lambda v: abs(v) <= 0.5)] if acc else [],
    )
    if acc:
        limit = acc["rate_per_s"] + 1
        add(
            "rate accuracy: no 1-s window above rate + 1",
            [("most in 1 s", acc["most_in_1s_after_first"], lambda v: v <= limit)],
        )
    else:
        add("rate accuracy: no 1-s window above rate + 1", [])
    add(
        "rate accuracy: CPU per admitted request ≤ 1/20 of the reference's",
        [("ours/reference", acc["cpu_ms_per_admitted"] / acc_ref["cpu_ms_per_admitted"], lambda v: v <= 0.05)]
        if acc and acc_ref
        else [],
    )
    gil = _one(results, "gil", impl="omnilimit")
    add("GIL friendliness ≥ 0.95", [("speed ratio", gil["speed_ratio"], lambda v: v >= 0.95)] if gil else [])
    add(
        "no wake-ups while nothing is admitted",
        [("wake-ups/s", gil["wakeups_per_s"], lambda v: v < 1)] if gil else [],
    )
    _asyncio_targets(results, out, add)
    _shared_targets(results, add)
    return out


def _shared_targets(results: dict[str, Any], add: Callable[[str, list[Part | None]], None]) -> None:
    """The targets of section 9."""

    def decision(call: str, shared: str) -> dict[str, Any] | None:
        return _one(results, "shared", part="decision", call=call, impl="omnilimit", shared=shared)

    parts: list[Part | None] = []
    for call in (RATE_DECISION, CONCURRENCY_PAIR):
        shm, alone = decision(call, SHM), decision(call, IN_PROCESS)
        parts.append(
            None if shm is None or alone is None else (f"{call}: x", shm["min_ns"] / alone["min_ns"], _at_most(3))
        )
    add("shared: a decision in shared memory within 3x of in-process (rate decision, concurrency pair)", parts)
    ours = decision(RATE_DECISION, SHM)
    rivals = [
        r
        for r in _rows(results, "shared", part="decision", call=RATE_DECISION)
        if r["impl"].startswith("pyrate-limiter")
    ]
    add(
        "shared: rate decision in shared memory ≥10x faster than pyrate-limiter's multi-process buckets",
        [(r["impl"] + ": x", r["min_ns"] / ours["min_ns"], lambda v: v >= 10) for r in rivals] if ours else [],
    )
    run = _one(results, "shared", part="processes", impl="omnilimit", shared=SHM)
    add(
        "shared: processes taking from one limiter admit within 1% of ideal",
        [(f"{run['processes']} processes: error %", run["error_pct"], lambda v: abs(v) <= 1)] if run else [],
    )
    windows: list[Part | None] = []
    if run:
        short = run["short_window_s"]
        windows = [
            (f"most in 1 s (limit {run['limit_1s']:g})", run["most_in_1s"], _at_most(run["limit_1s"])),
            (
                f"most in {short * 1e3:g} ms (limit {run['short_window_limit']:g})",
                run["most_in_short_window"],
                _at_most(run["short_window_limit"]),
            ),
        ]
    add("shared: processes taking from one limiter: no window above rate x window + burst", windows)


def _asyncio_targets(
    results: dict[str, Any], out: list[dict[str, Any]], add: Callable[[str, list[Part | None]], None]
) -> None:
    """The targets of section 8, appended to `out` (`add` appends there too)."""
    ours = _one(results, "asyncio", part="concurrency", impl="omnilimit", call=ASYNC_WITH)
    semaphore = _one(results, "asyncio", part="concurrency", impl="asyncio.Semaphore")
    add(
        "asyncio concurrency: omnilimit `async with` throughput ≥ 0.5x asyncio.Semaphore's",
        [("x", ours["tasks_per_s"] / semaphore["tasks_per_s"], lambda v: v >= 0.5)] if ours and semaphore else [],
    )
    mine = _rows(results, "asyncio", part="rate", impl="omnilimit")
    add(
        "asyncio rate: achieved rate within 1% of the configured rate",
        [(f"burst {r['burst']}: error %", r["error_pct"], lambda v: abs(v) <= 1) for r in mine],
    )
    window = f"{mine[0]['window_s']:g}-s" if mine else "1-s"
    windows: list[Part | None] = []
    for r in mine:
        limit = r["window_limit"]
        label = f"burst {r['burst']}: most in {r['window_s']:g} s (limit {limit:g})"
        windows.append((label, r["most_in_window"], _at_most(limit)))
    add(f"asyncio rate: no {window} window above rate x window + burst", windows)

    target = "asyncio rate: CPU per admission ≤ aiolimiter's (same burst)"
    compared, left_out, met = [], [], True
    for r in mine:
        rivals = _rows(results, "asyncio", part="rate", burst=r["burst"])
        peer = next((p for p in rivals if p["impl"].startswith("aiolimiter")), None)
        if peer is None:
            continue
        if not (peer["complete"] and r["complete"]):
            left_out.append(f"burst {r['burst']}: not compared (a run was cut off)")
            continue
        ratio = r["cpu_us_per_admitted"] / peer["cpu_us_per_admitted"]
        compared.append(f"burst {r['burst']}: ours/aiolimiter {ratio:.3g}")
        met = met and ratio <= 1
    measured = "; ".join(compared + left_out) or "not measured in this run"
    out.append({"target": target, "measured": measured, "met": met if compared else None})


# --- printing ------------------------------------------------------------------------------------


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
        "  " + "  ".join(h.ljust(w) if i < left else h.rjust(w) for i, ((_, h), w) in enumerate(zip(columns, widths))),
        file=out,
    )
    for c in cells:
        print(
            "  " + "  ".join(v.ljust(w) if i < left else v.rjust(w) for i, (v, w) in enumerate(zip(c, widths))),
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
    ("impl", "implementation"),
    ("call", "call"),
    ("tasks_per_s", "tasks/s"),
    ("vs_semaphore", "x asyncio.Semaphore"),
    ("wall_ms", "wall ms"),
    ("cpu_us_per_task", "CPU µs/task"),
    ("limiter_cpu_us_per_task", "over tasks only"),
    ("peak_in_flight", "peak in flight"),
]


def _async_rate_columns(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    window = f"{rows[0]['window_s']:g} s" if rows else "window"
    short = f"{rows[0]['short_window_s'] * 1e3:g} ms" if rows else "short window"
    return [
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
        semaphore = _one({"x": concurrency}, "x", impl="asyncio.Semaphore")
        trials = len(concurrency[0]["trials"])
        print(
            f"  concurrency: each task `async with lim: await asyncio.sleep(0)`, max_concurrent="
            f"{concurrency[0]['max_concurrent']}; median of {trials} trial(s)",
            file=out,
        )
        with_ratio = [
            {**r, "vs_semaphore": r["tasks_per_s"] / semaphore["tasks_per_s"] if semaphore else float("nan")}
            for r in concurrency
        ]
        _table(with_ratio, ASYNC_CONCURRENCY_COLUMNS, out)
    rate = [r for r in rows if r["part"] == "rate"]
    if rate:
        print(
            f"  rate: each task `async with lim:` at {rate[0]['rate_per_s']:,}/s; the limit of a window is"
            " rate x window + burst; worst of the runs",
            file=out,
        )
        shown = [{**r, "admitted": r["admitted"] if r["complete"] else f"{r['admitted']:,} (cut off)"} for r in rate]
        _table(shown, _async_rate_columns(rate), out)


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


def _pyplot() -> Any:
    import matplotlib  # ImportError without it: main() checks before the run

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot(data: dict[str, Any], path: str) -> None:
    """Throughput and p99 acquire latency against thread count, one line per implementation."""
    plt = _pyplot()
    rows = data["results"].get("contention")
    if not rows:
        raise SystemExit("--plot draws the contention section: run it (leave out --only, or add --only contention)")
    counts = sorted({r["threads"] for r in rows})
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for impl in dict.fromkeys(r["impl"] for r in rows):
        mine = sorted((r for r in rows if r["impl"] == impl), key=lambda r: r["threads"])
        xs = [r["threads"] for r in mine]
        left.plot(xs, [r["cycles_per_s"] for r in mine], marker="o", label=impl)
        right.plot(xs, [r["p99_us"] for r in mine], marker="o", label=impl)
    for axis, title, unit in (
        (left, "throughput", "acquire/release cycles per s"),
        (right, "p99 acquire latency", "µs"),
    ):
        axis.set_xscale("log", base=2)
        axis.set_xticks(counts, [str(n) for n in counts])
        axis.xaxis.set_minor_locator(plt.NullLocator())
        axis.set_yscale("log")
        axis.set_xlabel("threads")
        axis.set_ylabel(unit)
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
    left.legend()
    fig.suptitle(f"max_concurrent=4 · {data['info']['machine']}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _shown(arg: str) -> str:
    """A command-line argument as the report shows it: a Redis URL without its password."""
    option, equals, value = arg.partition("=")
    if equals and option == "--redis":
        return f"--redis={redact(value)}"
    return redact(arg) if arg.startswith(SCHEMES) else arg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="omnilimit bench",
        description="Run the benchmark suite: omnilimit against the standard library's locks, OmniGen's own "
        "limiter and the peer libraries installed (pip install 'omnilimit[bench]' brings them; the others are listed "
        "as skipped), section by section, then the project's performance targets, each met or not, with this run's "
        "figures. About 45 s; --full takes a few minutes. Progress "
        "goes to stderr, the report to stdout.",
    )
    parser.add_argument("--full", action="store_true", help="longer runs and more trials (a few minutes)")
    parser.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # the suite's own tests
    parser.add_argument(
        "--only", nargs="+", choices=list(SECTIONS), metavar="SECTION", help=f"run only these: {', '.join(SECTIONS)}"
    )
    parser.add_argument(
        "--redis",
        metavar="URL",
        help=f"run section 10 (redis) against the Redis server at URL, e.g. redis://localhost:6379/0 (default:"
        f" ${REDIS_ENV_VAR}; without either it is skipped); the run should be the server's only client",
    )
    parser.add_argument("--json", metavar="FILE", help="write every figure to FILE as JSON")
    parser.add_argument(
        "--plot", metavar="FILE.png", help="draw throughput and p99 latency against threads (needs omnilimit[plot])"
    )
    args = parser.parse_args(argv)
    settings = SETTINGS["smoke" if args.smoke else "full" if args.full else "short"]
    sections = args.only or list(SECTIONS)
    if args.plot:
        try:
            _pyplot()  # fail now, not after the run
        except ImportError as error:
            parser.error(f"--plot needs matplotlib: pip install 'omnilimit[plot]' ({error})")
        if args.only and "contention" not in args.only:
            parser.error("--plot draws the contention section: add contention to --only")
    redis_url = args.redis or os.environ.get(REDIS_ENV_VAR) or None
    if "redis" in sections and (redis_url or args.only):  # asked for: fail now, not after the run
        problem = redis_problem(redis_url)
        if problem is not None:
            parser.error(f"section redis: {problem}")
    command = shlex.join(["omnilimit", "bench", *map(_shown, sys.argv[1:] if argv is None else argv)])
    if redis_url and not args.redis:
        command = f"{REDIS_ENV_VAR}={shlex.quote(redact(redis_url))} {command}"
    data = run(settings, sections, command, progress=sys.stderr, redis_url=redis_url)
    print_report(data)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=2, ensure_ascii=False)
            out.write("\n")
        print(f"\nwrote {args.json}")
    if args.plot:
        plot(data, args.plot)
        print(f"wrote {args.plot}")
    return 0
