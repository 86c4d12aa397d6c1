"""Shared limiters (backend="shm"): one budget for every process that opens the same name, with
real processes."""

import asyncio
import bisect
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pytest
from helpers import common_start, finish, run_children, spawn, wait_until

from omnilimit import ConcurrencyLimiter, LimiterClosed, RateLimiter, SharedStateError, remove_shared

pytestmark = pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="this machine has no /dev/shm")


@pytest.fixture
def name():
    shared = f"test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    yield shared
    remove_shared(shared)


def test_eight_processes_of_eight_threads_share_600_rpm(name):
    start = common_start(8)  # system-wide on Linux: one start for all, after their imports
    seconds = 6.0
    stamps_per_child = run_children(
        8,
        """
        import json, threading, time
        from omnilimit import RateLimiter
        limiter = RateLimiter(600, provider_name="shared", backend="shm://{name}")
        start, end = {start}, {start} + {seconds}
        stamps, lock = [], threading.Lock()

        def work():
            while time.monotonic() < start:
                time.sleep(0.001)
            while (left := end - time.monotonic()) > 0:
                if not limiter.acquire(timeout=left):
                    break
                now = time.monotonic()
                if now >= end:  # an instant on the run's end: outside [start, end), as the ideal counts
                    break
                with lock:
                    stamps.append(now)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(json.dumps(stamps))
        """,
        name=name,
        start=start,
        seconds=seconds,
    )
    stamps = sorted(t for child in stamps_per_child for t in child)
    # Burst 1, then one every 0.1 s: the instants in [start, start + 6 s) are 0, 0.1, ..., 5.9 s
    # after the first admission (the one at 6.0 s falls on the end, and is not counted).
    ideal = 1 + int(seconds * 10 - 1e-9)
    print(f"[shm-600rpm] admitted={len(stamps)} ideal={ideal} per_process={[len(c) for c in stamps_per_child]}")
    assert abs(len(stamps) - ideal) <= 0.01 * ideal, (len(stamps), ideal)
    assert sum(1 for child in stamps_per_child if child) >= 6  # the budget was shared, not won by one
    for i, first in enumerate(stamps):  # no 1-s window above the rate + 1
        assert bisect.bisect_right(stamps, first + 1.0) - i <= 11
    shared = RateLimiter(600, provider_name="shared", backend=f"shm://{name}")
    assert len(stamps) <= shared.total_requests <= len(stamps) + 8  # every process (+ one on the end each)


def test_concurrent_creation_gives_one_segment(name):
    start = time.monotonic() + 2.0  # after every child has imported omnilimit
    results = run_children(
        8,
        """
        import json, time
        from omnilimit import RateLimiter
        while time.monotonic() < {start}:
            pass
        limiter = RateLimiter(1, burst_size=8, provider_name="c", backend="shm://{name}")  # no refill in a minute
        print(json.dumps(limiter.acquire(timeout=0)))
        """,
        name=name,
        start=start,
    )
    assert results == [True] * 8  # the burst of 8 was shared, and nobody started a second bucket
    limiter = RateLimiter(1, burst_size=8, provider_name="c", backend=f"shm://{name}")
    assert limiter.total_requests == 8 and limiter.acquire(timeout=0) is False


def test_other_limits_apply_to_every_process_and_are_logged(name, caplog):
    first = RateLimiter(600, provider_name="a", backend=f"shm://{name}")
    with caplog.at_level(logging.WARNING, logger="omnilimit"):
        second = RateLimiter(300, burst_size=2, provider_name="a", backend=f"shm://{name}")
    assert "ran at 600 RPM with burst 1: it now runs at this limiter's 300 RPM with burst 2" in caplog.text
    assert first.interval_ns == second.interval_ns == 200_000_000 and first.burst_size == 2
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="omnilimit"):
        RateLimiter(300, burst_size=2, provider_name="a", backend=f"shm://{name}")
    assert caplog.text == ""  # the same limits: nothing to say
    cap = ConcurrencyLimiter(2, name="c", backend=f"shm://{name}-cap")
    try:
        with caplog.at_level(logging.WARNING, logger="omnilimit"):
            ConcurrencyLimiter(3, name="c", backend=f"shm://{name}-cap")
        assert cap.max_concurrent == 3 and "allowed 2 concurrent calls: it now allows 3" in caplog.text
    finally:
        remove_shared(f"{name}-cap")


def test_a_segment_that_does_not_fit_is_refused_with_a_way_out(name):
    RateLimiter(600, provider_name="a", backend=f"shm://{name}")
    with pytest.raises(SharedStateError, match=f"another kind.*omnilimit shm remove {name}"):
        ConcurrencyLimiter(3, backend=f"shm://{name}")
    foreign = f"{name}-foreign"
    with open(os.open(f"/dev/shm/omnilimit.{foreign}", os.O_CREAT | os.O_WRONLY, 0o600), "wb") as f:
        f.write(b"\0" * 4096)
    try:
        with pytest.raises(SharedStateError, match="not an omnilimit segment"):
            RateLimiter(600, backend=f"shm://{foreign}")
    finally:
        remove_shared(foreign)
    truncated = f"{name}-truncated"
    with open(os.open(f"/dev/shm/omnilimit.{truncated}", os.O_CREAT | os.O_WRONLY, 0o600), "wb") as f:
        f.write(b"OMNI")
    try:
        with pytest.raises(SharedStateError, match="truncated"):
            RateLimiter(600, backend=f"shm://{truncated}")
    finally:
        remove_shared(truncated)


def test_names_backends_and_removal(name):
    for bad in ("shm://", "shm://a/b", "shm://.hidden", "redis:/x", "postgres://x", "SHM", 5):
        with pytest.raises(ValueError):
            RateLimiter(600, backend=bad)
    RateLimiter(600, backend=f"shm://{name}-tokens", tokens_per_minute=1000)  # its segment stays
    try:  # a limiter with a token budget and one without are different kinds: neither opens the other's
        with pytest.raises(SharedStateError, match="another kind"):
            RateLimiter(600, backend=f"shm://{name}-tokens")
    finally:
        remove_shared(f"{name}-tokens")
    limiter = RateLimiter(600, provider_name=name, backend="shm")  # the name defaults to provider_name
    with pytest.raises(SharedStateError, match="another kind"):
        RateLimiter(600, backend=f"shm://{name}", tokens_per_minute=1000)
    assert limiter.shared_name == name and RateLimiter(600).shared_name is None
    assert os.stat(f"/dev/shm/omnilimit.{name}").st_mode & 0o777 == 0o600
    assert limiter.acquire(timeout=0)
    assert remove_shared(name) is True and remove_shared(name) is False
    assert limiter.acquire(timeout=0) is False  # the process keeps its mapping: the same bucket
    fresh = RateLimiter(600, provider_name=name, backend="shm")
    assert fresh.acquire(timeout=0) is True  # a fresh segment after removal
    out = subprocess.run(
        [sys.executable, "-m", "omnilimit", "shm", "list"], capture_output=True, text=True, check=True
    ).stdout
    assert name in out
    removed = subprocess.run([sys.executable, "-m", "omnilimit", "shm", "remove", name], capture_output=True, text=True)
    assert removed.returncode == 0 and "removed" in removed.stdout


def test_a_pause_and_a_forked_child_share_the_budget(name):
    limiter = RateLimiter(60, provider_name="p", backend=f"shm://{name}")  # one a second
    assert limiter.acquire(timeout=0)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the same segment, not a fresh bucket
        os.close(read)
        os.write(write, b"1" if limiter.acquire(timeout=0) else b"0")
        os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"0"
    os.waitpid(pid, 0)
    other = run_children(
        1,
        """
        import json, time
        from omnilimit import RateLimiter
        limiter = RateLimiter(60, provider_name="p", backend="shm://{name}")
        print(json.dumps([limiter.paused_for > 0, limiter.rate_limited_count]))
        """,
        name=name,
    )
    assert other == [[False, 0]]
    limiter.on_rate_limited(retry_after=5)
    other = run_children(
        1,
        """
        import json
        from omnilimit import RateLimiter
        limiter = RateLimiter(60, provider_name="p", backend="shm://{name}")
        print(json.dumps([limiter.paused_for > 3, limiter.acquire(timeout=0.5)]))
        """,
        name=name,
    )
    assert other == [[True, False]]  # another process sees the pause and waits for its end


# ------------------------------------------------------------------------------------------------
# Concurrency limiters


def _cap_worker(name, counter, lock, seconds):
    import threading as _threading

    from omnilimit import ConcurrencyLimiter

    limiter = ConcurrencyLimiter(4, name="cap", backend=f"shm://{name}")
    end = time.monotonic() + seconds

    def work():
        while time.monotonic() < end:
            assert limiter.acquire(timeout=10)
            with lock:
                counter[0] += 1
                counter[1] = max(counter[1], counter[0])
                counter[2] += 1
            time.sleep(0.002)
            with lock:
                counter[0] -= 1
            limiter.release()

    threads = [_threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_eight_processes_never_exceed_a_shared_cap_of_four(name):
    import multiprocessing

    context = multiprocessing.get_context("fork")
    lock = context.Lock()
    counter = context.Array("q", 3, lock=False)  # in flight, peak, calls
    workers = [context.Process(target=_cap_worker, args=(name, counter, lock, 2.0)) for _ in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
        assert w.exitcode == 0
    in_flight, peak, calls = counter[:]
    assert in_flight == 0 and peak == 4 and calls > 100
    limiter = ConcurrencyLimiter(4, name="cap", backend=f"shm://{name}")
    assert limiter.active_calls == 0 and limiter.waiting == 0
    assert limiter.total_requests == calls  # counted over every process
    assert limiter.over_release_count == 0


def test_the_slots_of_a_killed_holder_come_back(name):
    limiter = ConcurrencyLimiter(2, name="k", backend=f"shm://{name}")
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from omnilimit import ConcurrencyLimiter
                limiter = ConcurrencyLimiter(2, name="k", backend="shm://{name}")
                assert limiter.acquire(timeout=0) and limiter.acquire(timeout=0)
                print("holding", flush=True)
                time.sleep(60)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "holding"
        assert limiter.active_calls == 2 and limiter.acquire(timeout=0) is False
        child.kill()  # SIGKILL: it releases nothing
        child.wait()
        t0 = time.monotonic()
        assert limiter.acquire(timeout=5)  # a waiter finds the holder gone and takes its slots back
        waited = time.monotonic() - t0
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    assert waited < 1.0 + 0.5  # within the reclaim bound (0.5 s) and slack
    assert limiter.active_calls == 1  # the dead process's two slots are gone; this one holds one
    limiter.release()
    assert limiter.active_calls == 0


def test_a_waiter_in_another_process_is_woken_by_a_release(name):
    limiter = ConcurrencyLimiter(1, name="w", backend=f"shm://{name}")
    assert limiter.acquire(timeout=0)
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import time
                from omnilimit import ConcurrencyLimiter
                limiter = ConcurrencyLimiter(1, name="w", backend="shm://{name}")
                print("waiting", flush=True)
                cpu = time.process_time()
                ok = limiter.acquire(timeout=10)
                print(ok, time.monotonic(), time.process_time() - cpu, flush=True)
                limiter.release()
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline().strip() == "waiting"
    wait_until(lambda: limiter.waiting == 1)
    time.sleep(1.0)  # the child sleeps in the queue meanwhile
    released_at = time.monotonic()
    limiter.release()
    ok, woke_at, cpu = child.stdout.readline().split()
    child.wait(10)
    child.stdout.close()
    assert ok == "True" and float(woke_at) - released_at < 0.2
    assert float(cpu) < 0.1  # it slept: a futex wait, not a polling loop
    assert limiter.active_calls == 0


def test_what_a_shared_concurrency_limiter_does_not_do_yet(name):
    limiter = ConcurrencyLimiter(2, name="n", backend=f"shm://{name}")
    assert limiter.shared_name == name
    with pytest.raises(ValueError, match="coroutines"):
        asyncio.run(limiter.acquire_async())
    with pytest.raises(SharedStateError, match="another kind"):
        RateLimiter(600, backend=f"shm://{name}")
    limiter.release()  # holds none: counted, never capacity
    assert limiter.over_release_count == 1 and limiter.active_calls == 0


def test_close_closes_a_shared_limiter_in_this_process_only(name):
    mine = ConcurrencyLimiter(1, name="n", backend=f"shm://{name}")
    assert mine.acquire(timeout=0)
    mine.close()
    with pytest.raises(LimiterClosed):
        mine.acquire(timeout=0)
    mine.release()  # a holder may still release
    [took] = run_children(
        1,
        """
        import json
        from omnilimit import ConcurrencyLimiter
        print(json.dumps(ConcurrencyLimiter(1, name="n", backend="shm://{name}").acquire(timeout=1)))
        """,
        name=name,
    )
    assert took is True  # another process: open, and the slot released after close() is free


# ------------------------------------------------------------------------------------------------
# The YAML key


def test_rate_limit_backend_in_the_yaml(name):
    from omnilimit import ConfigError, ProviderRateLimitManager

    config = {
        "providers": {
            "user": {"name": "openai", "rate_limit_rpm": 600, "rate_limit_backend": f"shm://{name}"},
            "assistant": {
                "name": "anthropic",
                "model": "claude 3.5",  # a space: the key is not a valid segment name as it is
                "max_concurrent_calls": 3,
                "rate_limit_backend": "shm",
            },
            "judge": {"name": "openai", "rate_limit_rpm": 60, "rate_limit_backend": "memory"},
        }
    }
    manager = ProviderRateLimitManager.from_config(config)
    user, assistant, judge = (manager.limiter_for(role) for role in ("user", "assistant", "judge"))
    try:
        assert user.shared_name == name and judge.shared_name is None
        assert assistant.shared_name.startswith("anthropic_claude_3.5_assistant-")  # the key, made a valid name
        other = ProviderRateLimitManager.from_config(config)  # another process would build the same
        assert other.limiter_for("assistant").shared_name == assistant.shared_name
        assert user.acquire(timeout=0) and other.limiter_for("user").acquire(timeout=0) is False  # one budget
        for bad, match in (
            ("postgres://x", "must be 'memory', 'shm', 'shm://NAME'"),
            ("redis://:6379/0", "names no host"),
            ("redis://h:6379/x", "must be a number"),
            ("shm://a/b", "must be 'memory'"),
            (5, "must be 'memory'"),
        ):
            with pytest.raises(ConfigError, match=match):
                ProviderRateLimitManager.from_config({"providers": {"r": {"rate_limit_backend": bad}}})
        # A token budget in the YAML is shared too: what one manager takes, the other does not have.
        tokens_config = {
            "providers": {
                "r": {
                    "rate_limit_rpm": 60,
                    "rate_limit_burst": 5,
                    "rate_limit_tpm": 1000,
                    "rate_limit_token_burst": 600,
                    "rate_limit_backend": f"shm://{name}-tpm",
                }
            }
        }
        first, second = (ProviderRateLimitManager.from_config(tokens_config).limiter_for("r") for _ in range(2))
        try:
            assert first.shared_name == second.shared_name == f"{name}-tpm"
            assert first.acquire(tokens=600, timeout=0)
            assert second.token_budget_available() < 600 and second.acquire(tokens=600, timeout=0) is False
            assert second.acquire(tokens=0, timeout=0)  # the requests are not spent: only the tokens
        finally:
            remove_shared(f"{name}-tpm")
        with pytest.raises(ConfigError, match="different rate_limit_backend"):
            ProviderRateLimitManager.from_config(
                {
                    "providers": {
                        "a": {"rate_limit_shared_key": "k", "rate_limit_backend": "shm"},
                        "b": {"rate_limit_shared_key": "k"},
                    }
                }
            )
        changes = manager.reload(
            {
                **config,
                "providers": {
                    **config["providers"],
                    "judge": {"name": "openai", "rate_limit_rpm": 60, "rate_limit_backend": f"shm://{name}-judge"},
                },
            }
        )
        assert any("judge" in change and "replaced" in change for change in changes)
        assert manager.limiter_for("judge").shared_name == f"{name}-judge"
    finally:
        remove_shared(assistant.shared_name)
        remove_shared(f"{name}-judge")


SLEEPER = """
import asyncio, sys, time
from omnilimit import RateLimiter
limiter = RateLimiter({rpm}, provider_name="r", backend="shm://{name}")
print("ready", flush=True)
sys.stdin.readline()
if {coroutine}:
    went = asyncio.run(limiter.acquire_async(timeout=30))
else:
    went = limiter.acquire(timeout=30)
print(went, time.monotonic(), flush=True)
"""


@pytest.mark.parametrize("coroutine", [False, True], ids=["thread", "coroutine"])
def test_a_new_rate_moves_the_sleepers_of_other_processes(name, coroutine):
    """A caller of another process asleep on its booked instant follows set_rate made here: what
    is left of its wait is rescaled as the bucket's debt is (x 1/100: it goes at once; x 10: it
    waits ten times longer). Without this it would keep the instant booked at the old pace."""
    for rpm, new_rpm in ((6, 600), (60, 6)):
        remove_shared(name)
        limiter = RateLimiter(rpm, provider_name="r", backend=f"shm://{name}")
        assert limiter.acquire(timeout=0)  # the next instant: one interval away (10 s, then 1 s)
        child = spawn(SLEEPER, rpm=rpm, name=name, coroutine=coroutine)
        try:
            assert child.stdout.readline().strip() == "ready"
            child.stdin.write("\n")
            child.stdin.flush()
            interval = 60 / rpm
            wait_until(lambda lim=limiter, after=interval: lim.predicted_wait() > after)  # it booked the next instant
            left = limiter.predicted_wait() - interval  # what is left of the sleeper's wait
            changed = time.monotonic()
            limiter.set_rate(new_rpm)
            out, err = child.communicate(timeout=30)
        finally:
            finish(child)
        went, at = out.split()
        assert went == "True", err
        waited, expected = float(at) - changed, left * rpm / new_rpm
        shown = f"{left:.3f} s left became {waited:.3f} (x{rpm / new_rpm:g}: {expected:.3f})"
        print(f"\n[shm-set-rate] {rpm} -> {new_rpm} RPM: {shown}")
        assert expected - 0.1 <= waited <= expected + 0.5, (rpm, new_rpm, left, waited)


def test_a_process_killed_while_changing_the_rate_does_not_wedge_the_others(name):
    """A process killed inside set_rate leaves the bucket's config lock held by a dead pid and its
    sequence counter odd. Simulated by writing those two words into the segment (the layout: a
    64-byte header, then GcraWords: tat, interval, burst, sequence at +24, owner at +32): the next
    decision must notice the dead writer and carry on, and so must the next set_rate."""
    import mmap
    import struct

    limiter = RateLimiter(6000, burst_size=10, provider_name="cfg", backend=f"shm://{name}")
    assert limiter.acquire(timeout=0)
    corpse = subprocess.Popen([sys.executable, "-c", "pass"])
    corpse.wait()  # a pid that no longer exists
    with open(f"/dev/shm/omnilimit.{name}", "r+b") as f, mmap.mmap(f.fileno(), 0) as segment:
        (sequence,) = struct.unpack_from("<Q", segment, 64 + 24)
        struct.pack_into("<Q", segment, 64 + 24, sequence + 1)  # a change under way...
        struct.pack_into("<q", segment, 64 + 32, corpse.pid)  # ...by a process that is gone
        t0 = time.monotonic()
        assert limiter.acquire(timeout=1)  # recovers instead of spinning forever
        assert time.monotonic() - t0 < 1.0
        (sequence_after,) = struct.unpack_from("<Q", segment, 64 + 24)
        assert sequence_after % 2 == 0
        struct.pack_into("<q", segment, 64 + 32, corpse.pid)  # the lock alone, held by the dead
        limiter.set_rate(3000)  # takes the lock over
        assert limiter.interval_ns == 20_000_000
        (owner,) = struct.unpack_from("<q", segment, 64 + 32)
        assert owner == 0


# ------------------------------------------------------------------------------------------------
# A peer stopped (SIGSTOP) while it holds the segment's mutex

HOLD_THE_MUTEX = """
import ctypes, mmap, os, signal, sys
libc = ctypes.CDLL(None, use_errno=True)
with open("/dev/shm/omnilimit.{name}", "r+b") as f:
    segment = mmap.mmap(f.fileno(), 0)
mutex = ctypes.c_void_p(ctypes.addressof(ctypes.c_char.from_buffer(segment, 64)))  # after the 64-byte header
assert libc.pthread_mutex_lock(mutex) == 0
print("locked", flush=True)
os.kill(os.getpid(), signal.SIGSTOP)  # a debugger, py-spy, docker pause, the cgroup freezer
"""


def _stopped(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()[0] == "T"


def test_a_peer_stopped_holding_the_mutex_costs_a_caller_its_timeout_at_most(name):
    limiter = ConcurrencyLimiter(1, name="n", backend=f"shm://{name}")
    peer = subprocess.Popen([sys.executable, "-c", HOLD_THE_MUTEX.format(name=name)], stdout=subprocess.PIPE, text=True)
    try:
        assert peer.stdout.readline().strip() == "locked"
        wait_until(lambda: _stopped(peer.pid))
        ticks = []
        ticker = threading.Thread(target=lambda: [ticks.append(time.sleep(0.005)) for _ in range(100)])
        ticker.start()
        started = time.monotonic()
        assert limiter.acquire(timeout=0.5) is False
        waited = time.monotonic() - started
        assert 0.5 <= waited <= 0.7  # the timeout is honoured
        assert len(ticks) >= 50  # the other threads ran meanwhile (the GIL was released)
        started = time.monotonic()
        assert limiter.acquire(timeout=0) is False  # a try answers at once
        stats = limiter.get_stats()  # never blocks
        assert time.monotonic() - started < 0.05 and stats["active_calls"] == 0
        assert limiter.blocked_count == 2
        ticker.join()

        waiter = subprocess.Popen(
            [
                sys.executable,
                "-c",
                textwrap.dedent(
                    f"""
                    import time
                    from omnilimit import ConcurrencyLimiter
                    limiter = ConcurrencyLimiter(1, name="n", backend="shm://{name}")
                    print("waiting", flush=True)
                    try:
                        limiter.acquire(timeout=None)
                    except KeyboardInterrupt:
                        print("interrupted", flush=True)
                    """
                ),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert waiter.stdout.readline().strip() == "waiting"
        time.sleep(0.5)
        interrupted_at = time.monotonic()
        waiter.send_signal(signal.SIGINT)  # Ctrl-C works, whatever the peer does
        out, err = waiter.communicate(timeout=5)
        assert time.monotonic() - interrupted_at < 0.5, err
        assert "interrupted" in out, err
    finally:
        peer.send_signal(signal.SIGCONT)
        peer.kill()  # it dies holding the mutex: the robust mutex hands it on
        peer.wait()
        peer.stdout.close()
    # (5 s: a CI run under the whole suite's load once got False within 1 s; not reproduced alone)
    assert limiter.acquire(timeout=5) is True
    limiter.release()
    assert limiter.active_calls == 0


def test_a_refused_constructor_changes_nothing_shared(name, caplog):
    first = RateLimiter(600, provider_name="r", backend=f"shm://{name}")
    with pytest.raises(SharedStateError, match="another kind"):  # one with a token budget: another kind
        RateLimiter(1, burst_size=3, provider_name="r", backend=f"shm://{name}", tokens_per_minute=1000)
    with caplog.at_level(logging.WARNING, logger="omnilimit"):
        again = RateLimiter(600, provider_name="r", backend=f"shm://{name}")
    assert caplog.records == []  # the segment still runs at 600 RPM, burst 1: nothing to announce
    assert first.interval_ns == again.interval_ns == 100_000_000 and first.burst == 1


@pytest.mark.parametrize(
    "make",
    [lambda: RateLimiter(60, provider_name="", backend="shm"), lambda: ConcurrencyLimiter(1, name="", backend="shm")],
)
def test_shm_with_an_empty_name_is_refused_not_in_process(make):
    with pytest.raises(ValueError, match="empty"):
        make()


def test_another_users_segment_or_other_permissions_are_refused_saying_whose(name):
    RateLimiter(600, provider_name="a", backend=f"shm://{name}")
    path = f"/dev/shm/omnilimit.{name}"
    os.chmod(path, 0o666)  # what another user's, or a careless, segment looks like
    with pytest.raises(SharedStateError, match=r"mode 0666.*not used"):
        RateLimiter(600, provider_name="a", backend=f"shm://{name}")
    os.chmod(path, 0o600)
    if os.geteuid() == 0:  # root can make a file another user's
        os.chown(path, 65534, 65534)
        with pytest.raises(SharedStateError, match=r"belongs to user .*uid 65534.*have its owner remove it"):
            ConcurrencyLimiter(2, name="a", backend=f"shm://{name}")
    old = os.umask(0o277)  # a umask that would leave our own segments unreadable: the mode is set anyway
    try:
        RateLimiter(600, provider_name="b", backend=f"shm://{name}-umask")
        assert os.stat(f"/dev/shm/omnilimit.{name}-umask").st_mode & 0o7777 == 0o600
    finally:
        os.umask(old)
        remove_shared(f"{name}-umask")


def test_the_prefix_of_segment_names_can_be_chosen(name, tmp_path):
    env = dict(os.environ, OMNILIMIT_SHM_PREFIX="mine.")
    script = f"from omnilimit import RateLimiter; RateLimiter(60, backend='shm://{name}'); print('made')"
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.stdout.strip() == "made", done.stderr
    try:
        assert os.path.exists(f"/dev/shm/mine.{name}") and not os.path.exists(f"/dev/shm/omnilimit.{name}")
        listed = subprocess.run(
            [sys.executable, "-m", "omnilimit", "shm", "list"], env=env, capture_output=True, text=True
        )
        assert name in listed.stdout
    finally:
        os.unlink(f"/dev/shm/mine.{name}")
    env["OMNILIMIT_SHM_PREFIX"] = "../etc/"
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode != 0 and "OMNILIMIT_SHM_PREFIX" in done.stderr


def test_a_config_change_left_half_done_by_a_process_whose_pid_was_reused_is_recovered(name):
    # A process died in the middle of set_rate (the sequence word odd, the lock word naming it);
    # its pid now belongs to another, live process. Readers must see that the owner is gone
    # (another start time) and end the change, not spin forever.
    import mmap
    import struct

    RateLimiter(600, provider_name="r", backend=f"shm://{name}")
    with open(f"/proc/{os.getpid()}/stat") as f:
        my_start = int(f.read().rpartition(")")[2].split()[19])
    impostor = ((my_start + 1) << 22) | os.getpid()  # this pid, another start time: a reused pid
    with open(f"/dev/shm/omnilimit.{name}", "r+b") as f, mmap.mmap(f.fileno(), 0) as segment:
        sequence = struct.unpack_from("<Q", segment, 64 + 24)[0]
        struct.pack_into("<Qq", segment, 64 + 24, sequence + 1, impostor)  # odd: a change under way
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from omnilimit import RateLimiter\n"
            f"limiter = RateLimiter(600, provider_name='r', backend='shm://{name}')\n"
            f"print(limiter.acquire(timeout=1))\n"
            f"limiter.set_rate(1200)\n"
            f"print(limiter.acquire(timeout=1))",
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.stdout.split() == ["True", "True"], done.stderr
