"""The project's performance targets, each checked against one run's results: ``targets(results)``
says, per target, what this run measured and whether it was met (None when the run lacks what the
target compares)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .suite import ASYNC_WITH, CONCURRENCY_PAIR, IN_PROCESS, RATE_DECISION, SHM, TOKEN_DECISION


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
    _redis_targets(results, add)
    return out


LEASE = "omnilimit, coordination lease"


def _redis_targets(results: dict[str, Any], add: Callable[[str, list[Part | None]], None]) -> None:
    """The target of section 10: a lease-mode decision against every Redis rate decision."""
    leased = _one(results, "redis", part="decision", call=RATE_DECISION, impl=LEASE)
    strict = [r for r in _rows(results, "redis", part="decision", call=RATE_DECISION) if r["impl"] != LEASE]
    add(
        "redis: a decision in lease mode ≥100x faster than strict mode and than pyrate-limiter's and limits' Redis "
        "limiters",
        [(r["impl"] + ": x", r["min_ns"] / leased["min_ns"], lambda v: v >= 100) for r in strict] if leased else [],
    )


def _shared_targets(results: dict[str, Any], add: Callable[[str, list[Part | None]], None]) -> None:
    """The targets of section 9."""

    def decision(call: str, shared: str) -> dict[str, Any] | None:
        return _one(results, "shared", part="decision", call=call, impl="omnilimit", shared=shared)

    parts: list[Part | None] = []
    for call in (RATE_DECISION, TOKEN_DECISION, CONCURRENCY_PAIR):
        shm, alone = decision(call, SHM), decision(call, IN_PROCESS)
        parts.append(
            None if shm is None or alone is None else (f"{call}: x", shm["min_ns"] / alone["min_ns"], _at_most(3))
        )
    add(
        "shared: a decision in shared memory within 3x of in-process (rate decision, token decision, concurrency pair)",
        parts,
    )
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
    throughput: list[Part | None] = []
    cpu: list[Part | None] = []
    concurrency = _rows(results, "asyncio", part="concurrency")
    for semaphore in [r for r in concurrency if r["impl"] == "asyncio.Semaphore"]:
        loop = semaphore.get("loop", "asyncio")
        ours = next(
            (
                r
                for r in concurrency
                if r["impl"] == "omnilimit" and r["call"] == ASYNC_WITH and r.get("loop", "asyncio") == loop
            ),
            None,
        )
        if ours:
            throughput.append((f"{loop}: x", ours["tasks_per_s"] / semaphore["tasks_per_s"], lambda v: v >= 0.9))
            cpu.append((f"{loop}: x", ours["cpu_us_per_task"] / semaphore["cpu_us_per_task"], lambda v: v <= 1.2))
    add("asyncio concurrency: omnilimit `async with` throughput ≥ 0.9x asyncio.Semaphore's (each loop)", throughput)
    add("asyncio concurrency: omnilimit `async with` CPU per task ≤ 1.2x asyncio.Semaphore's (each loop)", cpu)
    sustained = _rows(results, "asyncio", part="sustained", impl="omnilimit")
    add(
        "asyncio rate, sustained run: achieved rate within 1% of the configured rate (each loop)",
        [
            (f"{r['loop']}, {r['seconds']:g} s, burst {r['burst']}: error %", r["error_pct"], lambda v: abs(v) <= 1)
            for r in sustained
        ],
    )
    mine = _rows(results, "asyncio", part="rate", impl="omnilimit")
    window = f"{mine[0]['window_s']:g}-s" if mine else "1-s"
    windows: list[Part | None] = []
    for r in mine + sustained:
        limit = r["window_limit"]
        run = "" if r["part"] == "rate" else f"{r['loop']}, sustained, "
        label = f"{run}burst {r['burst']}: most in {r['window_s']:g} s (limit {limit:g})"
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
