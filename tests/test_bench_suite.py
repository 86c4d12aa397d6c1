"""The benchmark suite's own logic: its arithmetic, its verdicts, and that `omnilimit bench` runs
every section and says what it skipped. Timings are never asserted here (they are the suite's
output, not its correctness)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from omnilimit.bench import report, suite
from omnilimit.cli import main as cli


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


def test_bench_smoke_run_writes_every_section(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    assert cli(["bench", "--smoke", "--json", str(out)]) == 0
    data = json.loads(out.read_text(encoding="utf-8"))
    assert set(data["results"]) == set(suite.SECTIONS)
    for section, rows in data["results"].items():
        assert any(r["impl"] == "omnilimit" for r in rows), section
    assert len(data["targets"]) == 16
    accuracy = next(r for r in data["results"]["rate_accuracy"] if r["impl"] == "omnilimit")
    assert 0 < accuracy["admitted"] <= accuracy["ideal"] + 1
    printed = capsys.readouterr().out
    assert "targets (this run):" in printed
    assert "1. Uncontended pair" in printed


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
    pytest.importorskip("matplotlib")
    png = tmp_path / "bench.png"
    assert cli(["bench", "--smoke", "--only", "contention", "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_contention_is_refused_before_running(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    with pytest.raises(SystemExit):
        cli(["bench", "--only", "uncontended", "--plot", "x.png"])
    assert "add contention to --only" in capsys.readouterr().err


def test_plot_without_matplotlib_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    with pytest.raises(SystemExit, match=r"omnilimit\[plot\]"):
        cli(["bench", "--only", "contention", "--plot", "x.png"])


def test_bench_is_an_installed_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "omnilimit", "bench", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "--json" in done.stdout and "--plot" in done.stdout


# --- 8. asyncio ---------------------------------------------------------------------------------

ASYNC_TARGETS = (
    "asyncio concurrency: omnilimit `async with` throughput ≥ 0.5x asyncio.Semaphore's",
    "asyncio rate: achieved rate within 1% of the configured rate",
    "asyncio rate: no 1-s window above rate x window + burst",
    "asyncio rate: CPU per admission ≤ aiolimiter's (same burst)",
)


def _async_rows(
    ours_per_s: float = 50e3,
    semaphore_per_s: float = 90e3,
    error_pct: float = -0.05,
    most: int = 6001,
    cpu: float = 30.0,
    peer_cpu: float | None = 45.0,
    peer_complete: bool = True,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [
        {"part": "concurrency", "impl": "tasks only (no limiter)", "call": "x", "tasks_per_s": 160e3},
        {"part": "concurrency", "impl": "omnilimit", "call": suite.ASYNC_WITH, "tasks_per_s": ours_per_s},
        {"part": "concurrency", "impl": "omnilimit", "call": suite.NO_TIMEOUT, "tasks_per_s": 1.0},  # not this one
        {"part": "concurrency", "impl": "asyncio.Semaphore", "call": suite.ASYNC_WITH, "tasks_per_s": semaphore_per_s},
    ]
    for burst in (1, 10):
        rate = {"part": "rate", "burst": burst, "window_s": 1.0, "window_limit": 6000 + burst}
        ours = {"impl": "omnilimit", "error_pct": error_pct, "most_in_window": most + burst - 1, "complete": True}
        rows.append({**rate, **ours, "cpu_us_per_admitted": cpu})
        if peer_cpu is not None:
            peer = {"impl": "aiolimiter 1.3.0", "error_pct": -2.0, "most_in_window": 5000}
            rows.append({**rate, **peer, "cpu_us_per_admitted": peer_cpu, "complete": peer_complete or burst == 10})
    return rows


def test_asyncio_targets_compare_the_right_rows() -> None:
    verdicts = _verdicts({"asyncio": _async_rows()})
    assert [verdicts[t] for t in ASYNC_TARGETS] == [True, True, True, True]
    # 0.4x the semaphore; 1.5% slow; 2 over the limit at each burst; more CPU than aiolimiter
    verdicts = _verdicts({"asyncio": _async_rows(ours_per_s=36e3, error_pct=-1.5, most=6003, cpu=50.0)})
    assert [verdicts[t] for t in ASYNC_TARGETS] == [False, False, False, False]


def test_asyncio_targets_say_what_they_measured() -> None:
    found = {t["target"]: t for t in report.targets({"asyncio": _async_rows(peer_complete=False)})}
    assert found[ASYNC_TARGETS[0]]["measured"] == "x 0.556"  # 50k / 90k, the `async with` row
    assert found[ASYNC_TARGETS[2]]["measured"] == (
        "burst 1: most in 1 s (limit 6001) 6,001; burst 10: most in 1 s (limit 6010) 6,010"
    )
    # a run cut off (aiolimiter at burst 1) is left out of the CPU comparison, and says so
    cpu = found[ASYNC_TARGETS[3]]
    assert cpu["met"] is True
    assert cpu["measured"] == "burst 10: ours/aiolimiter 0.667; burst 1: not compared (a run was cut off)"


def test_asyncio_cpu_target_without_aiolimiter_is_not_measured() -> None:
    verdicts = _verdicts({"asyncio": _async_rows(peer_cpu=None)})
    assert verdicts[ASYNC_TARGETS[3]] is None
    assert verdicts[ASYNC_TARGETS[1]] is True
    assert all(_verdicts({})[t] is None for t in ASYNC_TARGETS[:3])


def _bench_asyncio(tmp_path: Path) -> dict[str, Any]:
    out = tmp_path / "bench.json"
    assert cli(["bench", "--smoke", "--only", "asyncio", "--json", str(out)]) == 0
    data: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    assert set(data["results"]) == {"asyncio"}
    return data


def test_asyncio_smoke_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("aiolimiter")
    data = _bench_asyncio(tmp_path)
    tasks = suite.SETTINGS["smoke"].async_tasks
    rows = data["results"]["asyncio"]
    concurrency = {(r["impl"], r["call"]): r for r in rows if r["part"] == "concurrency"}
    assert set(concurrency) == {(impl, call) for impl, call, _ in suite.ASYNC_CONCURRENCY}
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
    assert all(targets[t] is not None for t in ASYNC_TARGETS[:2])
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
    cpu = next(t for t in data["targets"] if t["target"] == ASYNC_TARGETS[3])
    assert cpu["met"] is None and cpu["measured"] == "not measured in this run"
    printed = capsys.readouterr().out
    assert "aiolimiter: not installed; pip install 'omnilimit[bench]'" in printed
