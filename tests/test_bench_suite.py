"""The benchmark suite's own logic: its arithmetic, its verdicts, and that `omnilimit bench` runs
every section and says what it skipped. Timings are never asserted here (they are the suite's
output, not its correctness)."""

from __future__ import annotations

import io
import json
import math
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import need, with_the_suite

from omnilimit.cli import main as cli
from omnilimit_bench import peers, report, suite
from omnilimit_bench.suite import processes, redis_hosts

WITH_SUITE = with_the_suite()  # a child process finds the suite's package, as pytest does


def test_most_in_window_counts_half_open_windows() -> None:
    assert suite.most_in_window([], 1.0) == 0
    assert suite.most_in_window([0.0, 0.5, 0.99, 1.0, 1.5], 1.0) == 3  # [0, 1) and [0.5, 1.5)
    assert suite.most_in_window([0.0, 1.0, 2.0, 3.0], 1.0) == 1
    assert suite.most_in_window([0.0, 0.1, 0.2, 5.0, 5.01, 5.02, 5.03], 0.5) == 4


def _pair_rows(ours: float, lock: float, ref: float | None) -> list[dict[str, Any]]:
    rows = []
    for call in ("acquire(); release()", "acquire(timeout=120); release()"):
        rows += [
            {"call": call, "impl": "omnilimit", "min_ns": ours},
            {"call": call, "impl": "_thread.lock", "min_ns": lock},
        ]
        if ref is not None:
            rows.append({"call": call, "impl": "reference", "min_ns": ref})
    return rows


def _verdicts(results: dict[str, Any]) -> dict[str, bool | None]:
    return {t["target"]: t["met"] for t in report.targets(results)}


def test_targets_compare_the_right_rows() -> None:
    verdicts = _verdicts({"uncontended": _pair_rows(ours=70, lock=60, ref=1600)})
    assert verdicts["concurrency pair ≥10x faster than the reference (both forms)"] is True
    assert verdicts["concurrency pair within 1.5x of _thread.lock (both forms)"] is True
    verdicts = _verdicts({"uncontended": _pair_rows(ours=200, lock=60, ref=1600)})
    assert verdicts["concurrency pair ≥10x faster than the reference (both forms)"] is False  # 8x
    assert verdicts["concurrency pair within 1.5x of _thread.lock (both forms)"] is False  # 3.3x


def test_a_target_without_its_rows_is_not_measured_rather_than_met() -> None:
    verdicts = _verdicts({"uncontended": _pair_rows(ours=70, lock=60, ref=None)})
    assert verdicts["concurrency pair ≥10x faster than the reference (both forms)"] is None
    assert verdicts["rate decision ≥5x faster than the reference"] is None
    assert all(v is None for k, v in verdicts.items() if "contention" in k or "accuracy" in k)


def test_contention_targets_use_the_most_threads_and_the_reference() -> None:
    def row(impl: str, threads: int, fairness: float, p99: float, cycles: float) -> dict[str, Any]:
        return {"impl": impl, "threads": threads, "fairness": fairness, "p99_us": p99, "cycles_per_s": cycles}

    results = {
        "contention": [
            row("omnilimit", 8, 0.1, 1.0, 1e6),  # ignored: not the largest thread count
            row("omnilimit", 256, 0.9, 4000.0, 50e3),
            row("reference", 256, 0.02, 200e3, 16e3),
        ]
    }
    verdicts = _verdicts(results)
    assert verdicts["contention at 256 threads: fairness min/max ≥ 0.5"] is True
    assert verdicts["contention at 256 threads: p99 acquire latency ≤ 1/5 of the reference's"] is True
    assert verdicts["contention at 256 threads: throughput ≥ 2x the reference's"] is True
    results["contention"][2]["cycles_per_s"] = 30e3
    assert _verdicts(results)["contention at 256 threads: throughput ≥ 2x the reference's"] is False


def test_bench_smoke_run_writes_every_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(suite.REDIS_ENV_VAR, raising=False)  # no Redis server: section 10 says it is skipped
    out = tmp_path / "bench.json"
    assert cli(["bench", "--smoke", "--json", str(out)]) == 0
    data = json.loads(out.read_text(encoding="utf-8"))
    assert set(data["results"]) == set(suite.SECTIONS) - {"redis"}
    for section, rows in data["results"].items():
        assert any(r["impl"] == "omnilimit" for r in rows), section
    assert len(data["targets"]) == 22
    accuracy = next(r for r in data["results"]["rate_accuracy"] if r["impl"] == "omnilimit")
    assert 0 < accuracy["admitted"] <= accuracy["ideal"] + 1
    [redis] = [s for s in data["skipped"] if s["name"] == report.TITLES["redis"]]
    assert redis["reason"].startswith("no Redis server given: omnilimit bench --redis ")
    printed = capsys.readouterr()
    assert "targets (this run):" in printed.out
    assert "1. Uncontended pair" in printed.out
    assert f"{report.TITLES['redis']}: no Redis server given" in printed.out
    assert "skipping redis: no Redis server given" in printed.err


def test_a_missing_reference_is_listed_as_skipped_with_how_to_get_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMNILIMIT_REFERENCE", str(tmp_path / "missing.py"))
    out = tmp_path / "bench.json"
    assert cli(["bench", "--smoke", "--only", "uncontended", "--json", str(out)]) == 0
    data = json.loads(out.read_text(encoding="utf-8"))
    assert {r["impl"] for r in data["results"]["uncontended"]} == {
        "omnilimit",
        "_thread.lock",
        "threading.Semaphore",
        "threading.BoundedSemaphore",
    }
    [skipped] = [s for s in data["skipped"] if s["name"].startswith("reference")]
    assert "omnigen-usf==0.1.18" in skipped["reason"]
    assert "skipped:" in capsys.readouterr().out


def test_plot_draws_a_png(tmp_path: Path) -> None:
    need("matplotlib")
    png = tmp_path / "bench.png"
    assert cli(["bench", "--smoke", "--only", "contention", "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_contention_is_refused_before_running(capsys: pytest.CaptureFixture[str]) -> None:
    need("matplotlib")
    with pytest.raises(SystemExit):
        cli(["bench", "--only", "uncontended", "--plot", "x.png"])
    assert "add contention to --only" in capsys.readouterr().err


def test_plot_without_matplotlib_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    with pytest.raises(SystemExit) as exited:
        cli(["bench", "--only", "contention", "--plot", "x.png"])
    assert exited.value.code == 2
    assert "omnilimit bench: error: --plot needs matplotlib: pip install 'omnilimit[plot]'" in capsys.readouterr().err


def test_bench_is_an_installed_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "omnilimit", "bench", "--help"],
        env=WITH_SUITE,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "--json" in done.stdout and "--plot" in done.stdout and "--redis" in done.stdout


# --- 8. asyncio ---------------------------------------------------------------------------------

ASYNC_TARGETS = (
    "asyncio concurrency: omnilimit `async with` throughput ≥ 0.9x asyncio.Semaphore's (each loop)",
    "asyncio concurrency: omnilimit `async with` CPU per task ≤ 1.2x asyncio.Semaphore's (each loop)",
    "asyncio rate, sustained run: achieved rate within 1% of the configured rate (each loop)",
    "asyncio rate: no 1-s window above rate x window + burst",
    "asyncio rate: CPU per admission ≤ aiolimiter's (same burst)",
)


def _async_rows(
    ours_per_s: float = 85e3,
    semaphore_per_s: float = 90e3,
    ours_cpu: float = 14.0,
    error_pct: float = -0.05,
    most: int = 6001,
    cpu: float = 30.0,
    peer_cpu: float | None = 45.0,
    peer_complete: bool = True,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for loop in ("asyncio", "uvloop"):
        concurrency = {"part": "concurrency", "loop": loop}
        rows += [
            {
                **concurrency,
                "impl": "tasks only (no limiter)",
                "call": "x",
                "tasks_per_s": 160e3,
                "cpu_us_per_task": 6.0,
            },
            {
                **concurrency,
                "impl": "omnilimit",
                "call": suite.ASYNC_WITH,
                "tasks_per_s": ours_per_s,
                "cpu_us_per_task": ours_cpu,
            },
            {
                **concurrency,
                "impl": "asyncio.Semaphore",
                "call": suite.ASYNC_WITH,
                "tasks_per_s": semaphore_per_s,
                "cpu_us_per_task": 12.0,
            },
        ]
    rows.append(
        {
            "part": "concurrency",
            "loop": "asyncio",
            "impl": "omnilimit",
            "call": suite.NO_TIMEOUT,
            "tasks_per_s": 1.0,
            "cpu_us_per_task": 1.0,
        }
    )  # not this one
    for burst in (1, 10):
        rate = {"part": "rate", "loop": "asyncio", "burst": burst, "window_s": 1.0, "window_limit": 6000 + burst}
        ours = {"impl": "omnilimit", "error_pct": -3.0, "most_in_window": most + burst - 1, "complete": True}
        rows.append({**rate, **ours, "cpu_us_per_admitted": cpu})
        if peer_cpu is not None:
            peer = {"impl": "aiolimiter 1.3.0", "error_pct": -2.0, "most_in_window": 5000}
            rows.append({**rate, **peer, "cpu_us_per_admitted": peer_cpu, "complete": peer_complete or burst == 10})
        for loop in ("asyncio", "uvloop"):
            sustained = {**rate, "part": "sustained", "loop": loop, "seconds": 10.0, "tasks": 10_000}
            rows.append({**sustained, "impl": "omnilimit", "error_pct": error_pct, "most_in_window": 6000 + burst})
    return rows


def test_asyncio_targets_compare_the_right_rows() -> None:
    verdicts = _verdicts({"asyncio": _async_rows()})
    assert [verdicts[t] for t in ASYNC_TARGETS] == [True, True, True, True, True]
    # 0.8x the semaphore at 1.5x its CPU; 1.5% slow; 2 over the limit at each burst; more CPU than aiolimiter
    rows = _async_rows(ours_per_s=72e3, ours_cpu=18.0, error_pct=-1.5, most=6003, cpu=50.0)
    verdicts = _verdicts({"asyncio": rows})
    assert [verdicts[t] for t in ASYNC_TARGETS] == [False, False, False, False, False]


def test_asyncio_targets_say_what_they_measured() -> None:
    found = {t["target"]: t for t in report.targets({"asyncio": _async_rows(peer_complete=False)})}
    assert found[ASYNC_TARGETS[0]]["measured"] == "asyncio: x 0.944; uvloop: x 0.944"  # 85k / 90k
    assert found[ASYNC_TARGETS[1]]["measured"] == "asyncio: x 1.17; uvloop: x 1.17"  # 14 / 12 µs
    assert found[ASYNC_TARGETS[2]]["measured"] == (
        "asyncio, 10 s, burst 1: error % -0.05; uvloop, 10 s, burst 1: error % -0.05; "
        "asyncio, 10 s, burst 10: error % -0.05; uvloop, 10 s, burst 10: error % -0.05"
    )
    assert found[ASYNC_TARGETS[3]]["measured"].startswith(
        "burst 1: most in 1 s (limit 6001) 6,001; burst 10: most in 1 s (limit 6010) 6,010; "
        "asyncio, sustained, burst 1: most in 1 s (limit 6001) 6,001"
    )
    # a run cut off (aiolimiter at burst 1) is left out of the CPU comparison, and says so
    cpu = found[ASYNC_TARGETS[4]]
    assert cpu["met"] is True
    assert cpu["measured"] == "burst 10: ours/aiolimiter 0.667; burst 1: not compared (a run was cut off)"


def test_asyncio_cpu_target_without_aiolimiter_is_not_measured() -> None:
    verdicts = _verdicts({"asyncio": _async_rows(peer_cpu=None)})
    assert verdicts[ASYNC_TARGETS[4]] is None
    assert verdicts[ASYNC_TARGETS[2]] is True
    assert all(_verdicts({})[t] is None for t in ASYNC_TARGETS[:4])


def _bench_asyncio(tmp_path: Path) -> dict[str, Any]:
    out = tmp_path / "bench.json"
    assert cli(["bench", "--smoke", "--only", "asyncio", "--json", str(out)]) == 0
    data: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    assert set(data["results"]) == {"asyncio"}
    return data


def test_asyncio_smoke_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    need("aiolimiter")
    data = _bench_asyncio(tmp_path)
    tasks = suite.SETTINGS["smoke"].async_tasks
    rows = data["results"]["asyncio"]
    concurrency = {(r["impl"], r["call"]): r for r in rows if r["part"] == "concurrency" and r["loop"] == "asyncio"}
    assert set(concurrency) == {(impl, call) for impl, call, _ in suite.ASYNC_CONCURRENCY}
    on_uvloop = {(r["impl"], r["call"]) for r in rows if r["part"] == "concurrency" and r["loop"] == "uvloop"}
    assert on_uvloop == {
        (suite.TASKS_ONLY, "await asyncio.sleep(0)"),
        ("omnilimit", suite.ASYNC_WITH),
        ("asyncio.Semaphore", suite.ASYNC_WITH),
    }
    sustained = [r for r in rows if r["part"] == "sustained"]
    assert {(r["loop"], r["impl"].split()[0], r["burst"]) for r in sustained} == {
        ("asyncio", "omnilimit", 1),
        ("asyncio", "omnilimit", 10),
        ("uvloop", "omnilimit", 1),
        ("uvloop", "omnilimit", 10),
        ("asyncio", "aiolimiter", 10),
    }
    for row in sustained:
        assert row["admitted"] > 0 and row["most_in_window"] <= row["admitted"]
    for (impl, _), row in concurrency.items():
        assert row["tasks"] == tasks and len(row["trials"]) == 1
        assert row["tasks_per_s"] > 0 and row["cpu_us_per_task"] > 0
        # every task went through; the limiters held the limit (a timing-free fact)
        limit = tasks if impl == suite.TASKS_ONLY else suite.ASYNC_MAX_CONCURRENT
        assert 1 < row["peak_in_flight"] <= limit, impl
    rate = [r for r in rows if r["part"] == "rate"]
    assert sorted((r["impl"].split()[0], r["burst"]) for r in rate) == [
        ("aiolimiter", 1),
        ("aiolimiter", 10),
        ("omnilimit", 1),
        ("omnilimit", 10),
    ]
    for row in rate:
        keys = {"admitted", "achieved_per_s", "error_pct", "most_in_window", "window_limit", "cpu_us_per_admitted"}
        assert keys <= set(row), row["impl"]
        assert 0 < row["admitted"] <= tasks
        if row["impl"] == "omnilimit":
            assert row["complete"] and row["admitted"] == tasks
    targets = {t["target"]: t["met"] for t in data["targets"]}
    assert all(targets[t] is not None for t in ASYNC_TARGETS[:3])
    assert not [s for s in data["skipped"] if s["name"] == "aiolimiter"]
    printed = capsys.readouterr().out
    assert f"8. asyncio: {tasks:,} tasks on one event loop" in printed
    assert "x asyncio.Semaphore" in printed and "AsyncLimiter(1, 1/6000)" in printed


def test_asyncio_without_aiolimiter_lists_it_as_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "aiolimiter", None)  # import aiolimiter raises ImportError
    data = _bench_asyncio(tmp_path)
    rate = [r for r in data["results"]["asyncio"] if r["part"] == "rate"]
    assert {r["impl"] for r in rate} == {"omnilimit"}
    assert [s for s in data["skipped"] if s["name"] == "aiolimiter"] == [
        {"name": "aiolimiter", "reason": "not installed; pip install 'omnilimit[bench]'"}
    ]
    cpu = next(t for t in data["targets"] if t["target"] == ASYNC_TARGETS[4])
    assert cpu["met"] is None and cpu["measured"] == "not measured in this run"
    printed = capsys.readouterr().out
    assert "aiolimiter: not installed; pip install 'omnilimit[bench]'" in printed


# --- 9. shared between processes -------------------------------------------------------------------

SHARED_TARGETS = (
    "shared: a decision in shared memory within 3x of in-process (rate decision, token decision, concurrency pair)",
    "shared: rate decision in shared memory ≥10x faster than pyrate-limiter's multi-process buckets",
    "shared: processes taking from one limiter admit within 1% of ideal",
    "shared: processes taking from one limiter: no window above rate x window + burst",
)


def _shared_rows(
    rate: tuple[float, float] = (90.0, 88.0),  # (shm, in-process) ns
    tokens: tuple[float, float] = (170.0, 160.0),
    pair: tuple[float, float] = (170.0, 80.0),
    peers_ns: tuple[float, ...] = (150e3, 175e3),
    error_pct: float = -0.2,
    most: tuple[int, int] = (659, 119),
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for call, (shm, alone) in (
        (suite.RATE_DECISION, rate),
        (suite.TOKEN_DECISION, tokens),
        (suite.CONCURRENCY_PAIR, pair),
    ):
        for shared, ns in ((suite.IN_PROCESS, alone), (suite.SHM, shm)):
            rows.append({"part": "decision", "call": call, "impl": "omnilimit", "shared": shared, "min_ns": ns})
    for i, ns in enumerate(peers_ns):
        peer = {"impl": f"pyrate-limiter 4.5.1 (bucket {i})", "shared": "x", "min_ns": ns}
        rows.append({"part": "decision", "call": suite.RATE_DECISION, **peer})
    run = {"part": "processes", "processes": 4, "short_window_s": 0.1, "limit_1s": 660, "short_window_limit": 120}
    rows.append(
        {**run, "impl": "omnilimit", "shared": suite.SHM, "error_pct": error_pct, "most_in_1s": most[0]}
        | {"most_in_short_window": most[1]}
    )
    # the control row (one limiter per process) is far off, and is no target
    rows.append({**run, "impl": "omnilimit", "shared": suite.OWN_LIMITERS, "error_pct": 300.0, "most_in_1s": 2600})
    return rows


def test_shared_targets_compare_the_right_rows() -> None:
    verdicts = _verdicts({"shared": _shared_rows()})
    assert [verdicts[t] for t in SHARED_TARGETS] == [True, True, True, True]
    # the pair 3.1x in-process; a peer only 9x slower; 1.5% short; one over in 100 ms
    verdicts = _verdicts(
        {"shared": _shared_rows(pair=(250.0, 80.0), peers_ns=(810.0, 175e3), error_pct=-1.5, most=(660, 121))}
    )
    assert [verdicts[t] for t in SHARED_TARGETS] == [False, False, False, False]


def test_shared_targets_say_what_they_measured() -> None:
    found = {t["target"]: t for t in report.targets({"shared": _shared_rows(rate=(90.0, 30.0))})}
    assert found[SHARED_TARGETS[0]]["met"] is True  # the pair is within 3x...
    assert (
        found[SHARED_TARGETS[0]]["measured"] == "rate decision: x 3; token decision: x 1.06; concurrency pair: x 2.12"
    )
    assert found[SHARED_TARGETS[1]]["measured"] == (
        "pyrate-limiter 4.5.1 (bucket 0): x 1,667; pyrate-limiter 4.5.1 (bucket 1): x 1,944"
    )
    assert found[SHARED_TARGETS[2]]["measured"] == "4 processes: error % -0.2"
    assert found[SHARED_TARGETS[3]]["measured"] == "most in 1 s (limit 660) 659; most in 100 ms (limit 120) 119"
    over = {t["target"]: t for t in report.targets({"shared": _shared_rows(rate=(91.0, 30.0))})}
    assert over[SHARED_TARGETS[0]]["met"] is False  # ...and the rate decision 3.03x is not


def test_shared_targets_without_their_rows_are_not_measured() -> None:
    assert all(_verdicts({})[t] is None for t in SHARED_TARGETS)
    verdicts = _verdicts({"shared": _shared_rows(peers_ns=())})  # pyrate-limiter not installed
    assert verdicts[SHARED_TARGETS[1]] is None
    assert verdicts[SHARED_TARGETS[0]] is True and verdicts[SHARED_TARGETS[2]] is True


def _our_segments() -> list[str]:
    """The segments a benchmark run in this process would create (and must remove)."""
    try:
        return [n for n in os.listdir("/dev/shm") if n.startswith(f"omnilimit.bench-{os.getpid()}-")]
    except FileNotFoundError:
        return []


needs_shm = pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no /dev/shm on this machine")


def _bench_shared(tmp_path: Path) -> dict[str, Any]:
    out = tmp_path / "bench.json"
    assert cli(["bench", "--smoke", "--only", "shared", "--json", str(out)]) == 0
    data: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    assert set(data["results"]) == {"shared"}
    assert _our_segments() == []
    return data


@needs_shm
def test_shared_smoke_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    need("pyrate_limiter")
    need("filelock")
    data = _bench_shared(tmp_path)
    rows = data["results"]["shared"]
    decisions = {(r["call"], r["impl"].split(" (")[-1], r["shared"]) for r in rows if r["part"] == "decision"}
    assert decisions == {
        (suite.RATE_DECISION, "omnilimit", suite.IN_PROCESS),
        (suite.RATE_DECISION, "omnilimit", suite.SHM),
        (suite.TOKEN_DECISION, "omnilimit", suite.IN_PROCESS),
        (suite.TOKEN_DECISION, "omnilimit", suite.SHM),
        (suite.CONCURRENCY_PAIR, "omnilimit", suite.IN_PROCESS),
        (suite.CONCURRENCY_PAIR, "omnilimit", suite.SHM),
        (suite.RATE_DECISION, "MultiprocessBucket)", "Manager list + multiprocessing RLock"),
        (suite.RATE_DECISION, "SQLiteBucket, file lock)", "SQLite file (WAL) + FileLock"),
    }
    assert all(r["min_ns"] > 0 and r["median_ns"] >= r["min_ns"] for r in rows if r["part"] == "decision")
    smoke = suite.SETTINGS["smoke"]
    processes = {(r["impl"].split(" (")[-1], r["shared"]): r for r in rows if r["part"] == "processes"}
    assert set(processes) == {
        ("omnilimit", suite.SHM),
        ("omnilimit", suite.OWN_LIMITERS),
        ("MultiprocessBucket)", "Manager list + multiprocessing RLock"),
        ("SQLiteBucket, file lock)", "SQLite file (WAL) + FileLock"),
    }
    ideal = suite.SHARED_BURST + suite.SHARED_RATE_PER_S * smoke.shared_seconds
    for (impl, _), row in processes.items():
        keys = {"admitted", "ideal", "error_pct", "most_in_1s", "most_in_short_window", "cpu_us_per_admitted"}
        assert keys <= set(row), impl
        assert row["processes"] == smoke.shared_processes and row["ideal"] == ideal
        assert row["note"] == "" and len(row["runs"]) == smoke.shared_runs, row["note"]
        assert row["admitted"] > 0 and row["cpu_us_per_admitted"] > 0, impl
    # timing-free facts: one shared limiter never admits more than its budget (plus a wake-up's
    # worth of slack), and processes with a limiter each admit more than one budget between them
    shared = processes["omnilimit", suite.SHM]
    assert shared["admitted"] <= ideal + 1
    assert shared["most_in_short_window"] <= shared["short_window_limit"]
    assert processes["omnilimit", suite.OWN_LIMITERS]["admitted"] > shared["admitted"]
    targets = {t["target"]: t["met"] for t in data["targets"]}
    assert all(targets[t] is not None for t in SHARED_TARGETS)
    assert {s["name"] for s in data["skipped"]} <= {peers.LIMITS_SHARED}
    printed = capsys.readouterr().out
    assert "9. Shared between processes" in printed and "x omnilimit shm" in printed
    assert "none: one limiter per process" in printed


@needs_shm
def test_shared_without_pyrate_limiter_lists_it_as_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyrate_limiter", None)  # import pyrate_limiter raises ImportError
    data = _bench_shared(tmp_path)
    assert {r["impl"] for r in data["results"]["shared"]} == {"omnilimit"}
    assert [s for s in data["skipped"] if s["name"] == "pyrate-limiter"] == [
        {"name": "pyrate-limiter", "reason": "not installed; pip install 'omnilimit[bench]'"}
    ]
    verdicts = {t["target"]: t["met"] for t in data["targets"]}
    assert verdicts[SHARED_TARGETS[1]] is None
    assert "pyrate-limiter: not installed" in capsys.readouterr().out


@needs_shm
def test_a_missing_peer_is_skipped_once_when_two_sections_miss_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyrate_limiter", None)
    out = tmp_path / "bench.json"
    assert cli(["bench", "--smoke", "--only", "rate_decision", "shared", "--json", str(out)]) == 0
    skipped = json.loads(out.read_text(encoding="utf-8"))["skipped"]
    assert [s["name"] for s in skipped].count("pyrate-limiter") == 1


@needs_shm
@pytest.mark.parametrize("failing", ["_processes_run", "shared_rate_peers", "time_per_call"])
def test_shared_removes_its_segments_when_a_run_fails(failing: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    where = peers if failing == "shared_rate_peers" else processes
    real = getattr(where, failing)

    def fail(*args: Any, **kwargs: Any) -> Any:
        if failing == "time_per_call" and not _our_segments():
            return real(*args, **kwargs)  # the in-process limiter's: fail on the first in shared memory
        calls.append(_our_segments())  # what existed when it failed
        raise RuntimeError("failed on purpose")

    monkeypatch.setattr(where, failing, fail)
    impls = suite.Impls(None, "none", [])
    with pytest.raises(RuntimeError, match="on purpose"):
        if failing == "_processes_run":
            processes._shared_processes(impls, suite.SETTINGS["smoke"], multiprocessing.get_context("spawn"))
        else:
            processes.shared_processes(impls, suite.SETTINGS["smoke"])
    assert calls
    if failing != "shared_rate_peers":
        assert calls[0]  # a segment existed when the run failed...
    assert _our_segments() == []  # ...and none is left


def test_shared_process_cpu_reads_proc_or_says_nan() -> None:
    own = processes._cpu_of(os.getpid())
    assert own > 0 or not os.path.exists("/proc/self/stat")
    assert math.isnan(processes._cpu_of(2**22 + 7))  # no such process


def test_a_process_that_cannot_open_its_limiter_reports_why() -> None:
    # open_shared refuses what is not a handle: each process says so, and admits nothing
    spawn = multiprocessing.get_context("spawn")
    run = processes._processes_run(spawn, peers.open_shared, ("not", "a handle"), suite.SETTINGS["smoke"])
    assert run["times"] == []
    assert len(run["errors"]) == suite.SETTINGS["smoke"].shared_processes
    assert all(e.startswith("TypeError: not a shared peer's handle") for e in run["errors"])
    figures = processes._processes_figures(run, suite.SETTINGS["smoke"])
    assert figures["admitted"] == 0 and math.isnan(figures["cpu_us_per_admitted"])


# --- 10. Redis ------------------------------------------------------------------------------------


def _our_keys(url: str) -> list[bytes]:
    """The keys a benchmark run in this process would make on the server (and must delete)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        pid = os.getpid()
        return [
            *client.scan_iter(match=f"omnilimit-bench:{pid}:*"),
            *client.scan_iter(match=f"omnilimit:{{bench-{pid}-*"),
        ]
    finally:
        client.close()


def test_redis_smoke_run(redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    need("pyrate_limiter")
    need("limits")
    from importlib.metadata import version

    out = tmp_path / "bench.json"
    assert cli(["bench", "--smoke", "--only", "redis", "--redis", redis_url, "--json", str(out)]) == 0
    data = json.loads(out.read_text(encoding="utf-8"))
    assert set(data["results"]) == {"redis"}
    assert _our_keys(redis_url) == []
    smoke = suite.SETTINGS["smoke"]
    rows = data["results"]["redis"]
    decisions = {(r["call"], r["impl"]): r for r in rows if r["part"] == "decision"}
    pyrate, limits = version("pyrate-limiter"), version("limits")
    assert list(decisions) == [
        (suite.ROUND_TRIP, f"redis-py {version('redis')} {suite.NO_LIMITER}"),
        (suite.RATE_DECISION, "omnilimit"),
        (suite.RATE_DECISION, LEASE),
        (suite.TOKEN_DECISION, "omnilimit"),
        (suite.CONCURRENCY_PAIR, "omnilimit"),
        (suite.RATE_DECISION, f"pyrate-limiter {pyrate} ({peers.REDIS_LOG})"),
        (suite.RATE_DECISION, f"pyrate-limiter {pyrate} ({peers.REDIS_TOKEN_BUCKET})"),
        (suite.RATE_DECISION, f"limits {limits} fixed window (redis)"),
        (suite.RATE_DECISION, f"limits {limits} moving window (redis)"),
    ]
    # timing-free facts: omnilimit decides in one round trip (a script), a concurrency pair in two
    assert decisions[suite.RATE_DECISION, "omnilimit"]["round_trips"] == 1
    assert decisions[suite.TOKEN_DECISION, "omnilimit"]["round_trips"] == 1  # a request and its tokens: one script
    assert decisions[suite.CONCURRENCY_PAIR, "omnilimit"]["round_trips"] == 2
    assert decisions[suite.RATE_DECISION, "omnilimit"]["commands_by_name"]["evalsha"] >= 1
    leased = decisions[suite.RATE_DECISION, LEASE]  # decided in the process, on its leased share
    assert leased["round_trips"] == 0 and leased["commands"] < 0.01, leased
    for (_, impl), row in decisions.items():
        assert row["counted"] == smoke.redis_counted and row["refused"] == 0, impl
        if impl != LEASE:
            assert row["round_trips"] >= 1 and row["commands"] >= row["round_trips"], impl
        assert row["min_ns"] > 0 and row["median_ns"] >= row["min_ns"] and row["decisions_per_s"] > 0, impl
        assert row["server_cpu_us"] >= 0 and row["cpu_us"] >= 0, impl
        assert row["server"].startswith(SERVER_NAME) and redis_url.split("@")[-1] in row["server"], impl
    threads = [r for r in rows if r["part"] == "threads"]
    assert [(r["call"], r["impl"]) for r in threads] == list(decisions)
    for row in threads:
        assert row["threads"] == smoke.redis_threads and len(row["trials"]) == smoke.redis_trials
        assert row["decisions_per_s"] > 0 and row["vs_one_thread"] > 0, row["impl"]
        assert row["refused"] == 0 and row["errors"] == [], row["impl"]
    # pyrate-limiter's blocking=False refuses while another thread decides: its threads wait for the lock
    assert {r["api"] for r in threads if r["impl"].startswith("pyrate-limiter")} == {"try_acquire(key, 1)"}
    assert not [s for s in data["skipped"] if s["name"] in ("pyrate-limiter", "limits")]
    printed = capsys.readouterr().out
    assert f"{report.TITLES['redis']} ({SERVER_NAME}" in printed
    assert "round trips" in printed and "x one thread" in printed


LEASE = "omnilimit, coordination lease"  # the bench's row of a rate limiter in lease mode

SERVER_NAME = "Valkey " if os.environ.get("OMNILIMIT_TEST_SERVER") == "valkey" else "Redis "
"""How the bench names the server the Redis tests run against (conftest.server_under_test)."""


def test_the_bench_names_valkey_as_valkey() -> None:
    """Valkey answers a ``redis_version`` too (the Redis it is compatible with): the bench reported
    a Valkey 9.1.2 server as "Redis 7.2.4"."""
    valkey = {"server_name": "valkey", "valkey_version": "9.1.2", "redis_version": "7.2.4"}
    assert redis_hosts.server_label(valkey) == "Valkey 9.1.2"
    assert redis_hosts.server_label({"redis_version": "7.0.15"}) == "Redis 7.0.15"


def test_redis_peers_admit_the_burst_then_refuse_and_leave_no_keys(redis_url: str) -> None:
    need("pyrate_limiter")
    need("limits")
    deciders, skipped = peers.redis_rate_deciders(60, 5, redis_url)  # 5 at once, then one a second
    try:
        assert skipped == [] and len(deciders) == 4
        for decider in deciders:
            # pyrate-limiter's decision for threads waits for its lock (and for the limit: asked first here)
            assert (decider.decide_in_threads is not None) == decider.name.startswith("pyrate-limiter")
            first = (decider.decide_in_threads or decider.decide)()
            assert [first] + [decider.decide() for _ in range(6)] == [True] * 5 + [False] * 2, decider.name
        assert _our_keys(redis_url)
    finally:
        for decider in deciders:
            decider.close()
    assert _our_keys(redis_url) == []


def test_redis_without_a_server_is_skipped_and_says_why() -> None:
    stream = io.StringIO()
    data = report.run(suite.SETTINGS["smoke"], ["redis"], progress=stream)
    assert data["results"] == {}
    [skipped] = data["skipped"][-1:]
    assert skipped["name"] == report.TITLES["redis"]
    assert f"--redis redis://HOST:6379/0 (or {suite.REDIS_ENV_VAR}=URL)" in skipped["reason"]
    assert stream.getvalue() == f"  skipping redis: {skipped['reason']}\n"


def test_redis_asked_for_without_a_server_is_refused_before_running(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(suite.REDIS_ENV_VAR, raising=False)
    with pytest.raises(SystemExit):
        cli(["bench", "--only", "redis"])
    assert "section redis: no Redis server given" in capsys.readouterr().err
    need("redis")
    with pytest.raises(SystemExit):  # nothing listens on port 1; the password is not shown
        cli(["bench", "--only", "redis", "--redis", "redis://:secret@127.0.0.1:1/0"])
    assert "section redis: no Redis answering at redis://:***@127.0.0.1:1/0" in capsys.readouterr().err


@pytest.mark.parametrize("given", ["env", "--redis", "--redis="])
def test_the_redis_url_reaches_the_section_and_the_command_shows_no_password(
    given: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "redis://:secret@db.example:6379/0"
    seen = []

    def section(impls: suite.Impls, settings: suite.Settings) -> list[dict[str, Any]]:
        seen.append(impls.redis_url)
        return []

    monkeypatch.setitem(suite.SECTIONS, "redis", section)
    monkeypatch.setattr(report, "redis_problem", lambda url: None)  # no server is asked
    monkeypatch.delenv(suite.REDIS_ENV_VAR, raising=False)
    argv = ["bench", "--smoke", "--only", "redis", "--json", str(tmp_path / "bench.json")]
    if given == "env":
        monkeypatch.setenv(suite.REDIS_ENV_VAR, url)
    else:
        argv += ["--redis", url] if given == "--redis" else [f"--redis={url}"]
    assert cli(argv) == 0
    assert seen == [url]
    command = json.loads((tmp_path / "bench.json").read_text(encoding="utf-8"))["info"]["command"]
    assert "secret" not in command and "redis://:***@db.example:6379/0" in command
    assert command.startswith(f"{suite.REDIS_ENV_VAR}=") == (given == "env")
