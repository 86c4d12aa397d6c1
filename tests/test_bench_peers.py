"""omnilimit_bench.peers: the third-party limiters the benchmark compares against behave as limiters
configured as asked, and a missing one is reported rather than raised."""

import asyncio
import importlib
import importlib.metadata
import importlib.util
import multiprocessing
import os
import subprocess
import sys
import threading
import time
import tracemalloc

import pytest
from helpers import need, wait_until, with_the_suite

from omnilimit_bench import peers
from omnilimit_bench.peers import (
    EXTRA,
    AsyncRatePeer,
    RateDecider,
    SharedRatePeer,
    Skipped,
    async_rate_limiters,
    base,
    in_process,
    rate_deciders,
    shared_rate_peers,
)

# module -> (name in Skipped and at the start of RateDecider.name, distribution, variants built)
PEERS = {
    "pyrate_limiter": ("pyrate-limiter", "pyrate-limiter", ["(InMemoryBucket)", "(StateBucket, TokenBucket)"]),
    "limits": ("limits", "limits", ["fixed window (memory)", "moving window (memory)"]),
    "token_bucket": ("token-bucket", "token-bucket", [""]),
}


def built(module, per_minute, burst):
    """The deciders of the peer imported as `module` (skipping the test if it is not installed),
    with the full list to close."""
    need(module)
    deciders, skipped = rate_deciders(per_minute, burst)
    prefix = PEERS[module][0] + " "
    assert all(not s.name.startswith(PEERS[module][0]) for s in skipped), skipped
    return [d for d in deciders if d.name.startswith(prefix)], deciders


def close_all(deciders):
    for decider in deciders:
        decider.close()


@pytest.mark.parametrize("module", sorted(PEERS))
def test_names_carry_the_installed_version_and_variant(module):
    mine, every = built(module, 60, 5)
    try:
        name, distribution, variants = PEERS[module]
        version = importlib.metadata.version(distribution)
        assert sorted(d.name for d in mine) == sorted(f"{name} {version} {v}".rstrip() for v in variants)
        assert all(isinstance(d, RateDecider) and callable(d.decide) and callable(d.close) for d in mine)
    finally:
        close_all(every)


@pytest.mark.parametrize("module", sorted(PEERS))
def test_admits_the_burst_then_refuses_at_once(module):
    mine, every = built(module, 60, 5)  # 5 at once, then one a second (one 5-second window for limits)
    try:
        for decider in mine:
            started = time.monotonic()
            decisions = [decider.decide() for _ in range(10)]
            # Refusals must be immediate (non-blocking), not waits until the bucket refills.
            assert time.monotonic() - started < 0.5, decider.name
            assert decisions == [True] * 5 + [False] * 5, decider.name
            assert all(type(d) is bool for d in decisions), decider.name
    finally:
        close_all(every)


@pytest.mark.parametrize("module", sorted(PEERS))
def test_refills_at_the_rate(module):
    # 2 at once, 2 a second: a token bucket is full again after 1 s; the window limiters get a
    # 1-second window of 2 (limits' unit is the second; pyrate's window is 1000 ms).
    mine, every = built(module, 120, 2)
    try:
        for decider in mine:
            assert [decider.decide() for _ in range(4)] == [True, True, False, False], decider.name
        time.sleep(1.1)
        for decider in mine:
            # Refilled, but never above the burst.
            assert [decider.decide() for _ in range(4)] == [True, True, False, False], decider.name
    finally:
        close_all(every)


@pytest.mark.parametrize("module", sorted(PEERS))
def test_huge_limits_admit_everything(module):
    mine, every = built(module, 10**12, 10**12)  # what the timing benchmark uses
    try:
        for decider in mine:
            assert all(decider.decide() for _ in range(2000)), decider.name
    finally:
        close_all(every)


@pytest.mark.parametrize("module", sorted(PEERS))
def test_deciders_are_independent(module):
    # Two calls build two sets of limiters: exhausting one leaves the other full.
    first, every_first = built(module, 60, 3)
    second, every_second = built(module, 60, 3)
    try:
        for decider in first:
            assert [decider.decide() for _ in range(4)] == [True, True, True, False], decider.name
        for decider in first + second:
            assert decider.decide() is (decider in second), decider.name
    finally:
        close_all(every_first + every_second)


@pytest.mark.parametrize(
    ("per_minute", "burst", "units_per_minute", "expected"),
    [
        (60, 5, 60, (5, 5)),  # 5 per 5 s: exact
        (60, 5, 60_000, (5, 5000)),  # 5 per 5000 ms
        (10**12, 10**12, 60, (10**12, 60)),  # huge: a 1-minute window, exact in integers
        (120, 2, 60, (2, 1)),
        (40, 5, 60, (5, 8)),  # 7.5 s rounds to 8; 40/min * 8 s = 5.33 -> 5
        (7000, 100, 60, (117, 1)),  # 0.86 s rounds to 1 s; the rate decides: 116.7 -> 117
        (6000, 10, 60, (100, 1)),  # 0.1 s is under half a unit: 1 s, at the rate (100 > burst)
        (1, 1, 60_000, (1, 60_000)),
    ],
)
def test_window_approximation(per_minute, burst, units_per_minute, expected):
    amount, window = base._window(per_minute, burst, units_per_minute)
    assert (amount, window) == expected
    # the long-run rate is kept within half an amount unit per window
    assert abs(amount * units_per_minute - per_minute * window) * 2 <= units_per_minute


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, None])
def test_rejects_bad_configurations(bad):
    with pytest.raises(ValueError, match="per_minute"):
        rate_deciders(bad, 5)
    with pytest.raises(ValueError, match="burst"):
        rate_deciders(60, bad)


@pytest.mark.parametrize("module", sorted(PEERS))
def test_a_missing_peer_is_skipped_with_the_extra_named(module, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # "import module" now raises ModuleNotFoundError
    deciders, skipped = rate_deciders(60, 5)
    try:
        name = PEERS[module][0]
        assert Skipped(name, f"not installed; pip install 'omnilimit[{EXTRA}]'") in skipped
        assert [s.name for s in skipped].count(name) == 1
        assert not [d for d in deciders if d.name.startswith(name + " ")]
        # the others are still built (when installed)
        for other in set(PEERS) - {module}:
            if importlib.util.find_spec(other) is not None:
                assert [d for d in deciders if d.name.startswith(PEERS[other][0] + " ")]
    finally:
        close_all(deciders)


def test_all_peers_missing(monkeypatch):
    for module in PEERS:
        monkeypatch.setitem(sys.modules, module, None)
    deciders, skipped = rate_deciders(60, 5)
    assert deciders == []
    assert [s.name for s in skipped] == ["pyrate-limiter", "limits", "token-bucket"]
    assert all("omnilimit[bench]" in s.reason for s in skipped)


def test_broken_peer_dependency_and_failing_import_are_skipped(monkeypatch):
    real_import = importlib.import_module

    def fake_import(name, package=None):
        if name == "limits":  # installed, but one of its own dependencies is missing
            raise ModuleNotFoundError("No module named 'deprecated'", name="deprecated")
        if name == "token_bucket":  # installed, but fails to import (e.g. syntax from a newer Python)
            raise TypeError("unsupported operand type(s) for |")
        return real_import(name, package)

    monkeypatch.setattr(importlib, "import_module", fake_import)
    deciders, skipped = rate_deciders(60, 5)
    close_all(deciders)
    reasons = {s.name: s.reason for s in skipped}
    assert "deprecated" in reasons["limits"] and "omnilimit[bench]" in reasons["limits"]
    assert "TypeError" in reasons["token-bucket"] and "unsupported operand" in reasons["token-bucket"]
    assert not [d for d in deciders if d.name.startswith(("limits ", "token-bucket "))]


def test_a_failing_build_closes_what_was_built_and_raises(monkeypatch):
    need("token_bucket")
    closed = []

    def fake_build(per_minute, burst):
        return [RateDecider("fake 1.0", lambda: True, lambda: closed.append("fake"))]

    def failing_build(per_minute, burst):
        raise RuntimeError("bad configuration")

    monkeypatch.setattr(
        in_process, "_PEERS", (("fake", "token_bucket", fake_build), ("failing", "token_bucket", failing_build))
    )
    with pytest.raises(RuntimeError, match="bad configuration"):
        rate_deciders(60, 5)
    assert closed == ["fake"]


def test_importing_peers_imports_no_peer():
    code = (
        "import sys, omnilimit_bench.peers\n"
        "peers = ('pyrate_limiter', 'limits', 'token_bucket', 'aiolimiter', 'redis')\n"
        "print(sorted(m for m in peers if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=with_the_suite(), capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(("module", "variant"), [("pyrate_limiter", "(InMemoryBucket)"), ("limits", "moving window")])
def test_close_frees_the_log_of_admissions(module, variant):
    # These two keep one entry per admission for a whole window (a minute with huge limits).
    mine, every = built(module, 10**12, 10**12)
    close_all(d for d in every if variant not in d.name)
    (decider,) = [d for d in mine if variant in d.name]
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        assert all(decider.decide() for _ in range(20_000))
        grown = tracemalloc.get_traced_memory()[0] - base
        assert grown > 20_000 * 40  # an object per admission at least
        decider.close()
        assert tracemalloc.get_traced_memory()[0] - base < grown / 10
    finally:
        tracemalloc.stop()
        decider.close()


def test_close_leaves_no_foreground_thread_running():
    # limits' MemoryStorage re-arms a non-daemon threading.Timer on every hit; pyrate's Leaker is a
    # daemon thread that notices close() only after its current 10 s sleep.
    need("limits")
    before = set(threading.enumerate())
    deciders, _ = rate_deciders(60, 5)
    for decider in deciders:
        decider.decide()
    close_all(deciders)

    def started_and_blocking_exit():
        return [t for t in set(threading.enumerate()) - before if t.is_alive() and not t.daemon]

    wait_until(lambda: not started_and_blocking_exit(), timeout=1.0)


# --- asyncio peers (section 8) ---------------------------------------------------------------------


def aiolimiter_peer(per_second, burst):
    need("aiolimiter")
    found, skipped = async_rate_limiters(per_second, burst)
    assert skipped == []
    [peer] = found
    return peer


def admission_times(peer, count):
    """When each of `count` tasks, started at once on a fresh loop, got into ``async with``."""

    async def main():
        limiter = peer.make()
        times = []

        async def task():
            async with limiter:
                times.append(time.monotonic())

        started = time.monotonic()
        await asyncio.gather(*(task() for _ in range(count)))
        return [t - started for t in sorted(times)]

    return asyncio.run(main())


def test_aiolimiter_is_named_with_its_version_and_configuration():
    peer = aiolimiter_peer(6000, 1)
    assert isinstance(peer, AsyncRatePeer)
    assert peer.name == f"aiolimiter {importlib.metadata.version('aiolimiter')}"
    assert peer.config == "AsyncLimiter(1, 1/6000)"
    limiter = peer.make()
    assert (limiter.max_rate, limiter.time_period) == (1, 1 / 6000)
    assert peer.make() is not limiter  # a fresh one each time: one per event loop


def test_aiolimiter_admits_the_burst_then_paces():
    # 3 at once, then 20 a second: the 4th waits about 50 ms, the 6th about 150 ms.
    times = admission_times(aiolimiter_peer(20, 3), 6)
    assert times[2] < 0.03
    assert 0.04 <= times[3] < 0.2
    assert 0.14 <= times[5] < 0.4


def test_a_missing_async_peer_is_skipped_with_the_extra_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "aiolimiter", None)
    assert async_rate_limiters(6000, 1) == (
        [],
        [Skipped("aiolimiter", f"not installed; pip install 'omnilimit[{EXTRA}]'")],
    )


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), True, None, "6000"])
def test_async_peers_reject_a_bad_rate(bad):
    with pytest.raises(ValueError, match="per_second"):
        async_rate_limiters(bad, 1)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, None])
def test_async_peers_reject_a_bad_burst(bad):
    with pytest.raises(ValueError, match="burst"):
        async_rate_limiters(6000, bad)


# --- peers shared between processes (section 9) ------------------------------------------------------

SPAWN = multiprocessing.get_context("spawn")  # as the suite starts its processes


def shared_peers(per_minute, burst):
    """The shared peers (skipping the test without pyrate-limiter), to close after the test."""
    need("pyrate_limiter")
    found, skipped = shared_rate_peers(per_minute, burst, SPAWN)
    assert [p.name.split(" (")[1] for p in found] == ["MultiprocessBucket)", "SQLiteBucket, file lock)"][: len(found)]
    return found, skipped


def decide_in_another_process(handle, count):
    """`count` decisions of open_shared(handle), made in a fresh (spawned) process."""
    out = SPAWN.Queue()
    child = SPAWN.Process(target=decide_and_report, args=(handle, count, out))
    child.start()
    try:
        return out.get(timeout=60)
    finally:
        child.join(timeout=10)


def decide_and_report(handle, count, out):
    taker = peers.open_shared(handle)
    try:
        out.put([taker.decide() for _ in range(count)])
    finally:
        taker.close()


def test_shared_peers_are_named_with_the_version_and_configured_as_the_window_peers():
    found, _ = shared_peers(60, 5)
    try:
        version = importlib.metadata.version("pyrate-limiter")
        assert found and all(p.name.startswith(f"pyrate-limiter {version} (") for p in found)
        assert {p.config for p in found} == {"Rate(5, 5000 ms)"}  # as _window(60, 5, 60_000)
        assert all(isinstance(p, SharedRatePeer) and p.shared_through for p in found)
        manager = found[0]
        assert len(manager.helper_pids) == 1  # the Manager's server process, whose CPU counts too
    finally:
        close_all(found)


def test_shared_peers_admit_the_burst_then_refuse_at_once():
    found, _ = shared_peers(60, 5)
    try:
        for peer in found:
            taker = peers.open_shared(peer.handle)
            try:
                started = time.monotonic()
                assert [taker.decide() for _ in range(7)] == [True] * 5 + [False] * 2, peer.name
                assert taker.take(0) is False, peer.name
                assert time.monotonic() - started < 2, peer.name  # refusals are not waited out
            finally:
                taker.close()
    finally:
        close_all(found)


def test_shared_peers_share_one_budget_between_processes():
    found, _ = shared_peers(60, 5)
    try:
        for peer in found:
            assert decide_in_another_process(peer.handle, 3) == [True, True, True], peer.name
            taker = peers.open_shared(peer.handle)
            try:
                assert [taker.decide() for _ in range(3)] == [True, True, False], peer.name
            finally:
                taker.close()
            assert decide_in_another_process(peer.handle, 1) == [False], peer.name
    finally:
        close_all(found)


def test_shared_peers_take_waits_for_the_window():
    found, _ = shared_peers(120, 2)  # 2 per second
    try:
        for peer in found:
            taker = peers.open_shared(peer.handle)
            try:
                assert [taker.take(0), taker.take(0), taker.take(0)] == [True, True, False], peer.name
                started = time.monotonic()
                assert taker.take(3) is True, peer.name
                assert 0.5 < time.monotonic() - started < 2.5, peer.name
            finally:
                taker.close()
    finally:
        close_all(found)


def test_closing_shared_peers_removes_what_they_made():
    found, _ = shared_peers(60, 5)
    manager, *others = found
    for peer in found:
        taker = peers.open_shared(peer.handle)
        taker.decide()
        taker.close()
    close_all(found)
    [pid] = manager.helper_pids
    wait_until(lambda: not os.path.exists(f"/proc/{pid}"), timeout=5.0)  # shut down and reaped
    for peer in others:  # the SQLite file, its WAL and its lock file, in their folder
        assert not os.path.exists(os.path.dirname(peer.handle.db_path))


def test_shared_peers_without_pyrate_limiter_or_filelock_are_skipped(monkeypatch):
    monkeypatch.setitem(sys.modules, "filelock", None)
    found, skipped = shared_peers(60, 5)
    close_all(found)
    assert [p.name.split(" (")[1] for p in found] == ["MultiprocessBucket)"]
    assert Skipped(peers.SQLITE_NAME, "not installed; pip install filelock") in skipped
    monkeypatch.setitem(sys.modules, "pyrate_limiter", None)
    found, skipped = shared_rate_peers(60, 5, SPAWN)
    assert found == []
    assert Skipped("pyrate-limiter", f"not installed; pip install 'omnilimit[{EXTRA}]'") in skipped


def test_limits_is_listed_as_having_no_shared_storage_without_a_server():
    need("limits")
    found, skipped = shared_rate_peers(60, 5, SPAWN)
    close_all(found)
    [entry] = [s for s in skipped if s.name.startswith("limits")]
    assert "server" in entry.reason


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, None])
def test_shared_peers_reject_bad_configurations(bad):
    with pytest.raises(ValueError, match="per_minute"):
        shared_rate_peers(bad, 5)
    with pytest.raises(ValueError, match="burst"):
        shared_rate_peers(60, bad)


def test_open_shared_refuses_what_is_not_a_handle():
    with pytest.raises(TypeError, match="handle"):
        peers.open_shared(("multiprocess", 1))
