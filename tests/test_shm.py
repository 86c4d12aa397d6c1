"""Shared limiters (backend="shm"): one budget for every process that opens the same name, with
real processes."""

import bisect
import json
import os
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from omnilimit import RateLimiter, SharedStateError, remove_shared

pytestmark = pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="this machine has no /dev/shm")


@pytest.fixture
def name():
    shared = f"test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    yield shared
    remove_shared(shared)


def run_children(count, body, **values):
    """Starts `count` Python processes running `body` (formatted with `values`); returns their
    stdout, parsed as JSON, once all have finished."""
    script = textwrap.dedent(body).format(**values)
    children = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(count)
    ]
    results = []
    for child in children:
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
        results.append(json.loads(out))
    return results


def test_eight_processes_of_eight_threads_share_600_rpm(name):
    start = time.monotonic() + 1.0  # time.monotonic() is system-wide on Linux: one start for all
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
                with lock:
                    stamps.append(time.monotonic())

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
    ideal = 1 + seconds * 10  # burst 1, then 10 a second
    print(f"[shm-600rpm] admitted={len(stamps)} ideal={ideal} per_process={[len(c) for c in stamps_per_child]}")
    assert abs(len(stamps) - ideal) <= max(1.0, 0.01 * ideal), (len(stamps), ideal)
    assert sum(1 for child in stamps_per_child if child) >= 6  # the budget was shared, not won by one
    for i, first in enumerate(stamps):  # no 1-s window above the rate + 1
        assert bisect.bisect_right(stamps, first + 1.0) - i <= 11
    shared = RateLimiter(600, provider_name="shared", backend=f"shm://{name}")
    assert shared.total_requests == len(stamps)  # the counters count every process


def test_concurrent_creation_gives_one_segment(name):
    start = time.monotonic() + 0.5
    results = run_children(
        8,
        """
        import json, time
        from omnilimit import RateLimiter
        while time.monotonic() < {start}:
            pass
        limiter = RateLimiter(60, burst_size=8, provider_name="c", backend="shm://{name}")
        print(json.dumps(limiter.acquire(timeout=0)))
        """,
        name=name,
        start=start,
    )
    assert results == [True] * 8  # the burst of 8 was shared, and nobody started a second bucket
    limiter = RateLimiter(60, burst_size=8, provider_name="c", backend=f"shm://{name}")
    assert limiter.total_requests == 8 and limiter.acquire(timeout=0) is False


def test_a_segment_that_does_not_fit_is_refused_with_a_way_out(name):
    RateLimiter(600, provider_name="a", backend=f"shm://{name}")
    with pytest.raises(SharedStateError, match=f"other limits.*omnilimit shm remove {name}"):
        RateLimiter(300, provider_name="a", backend=f"shm://{name}")
    foreign = f"{name}-foreign"
    with open(f"/dev/shm/omnilimit.{foreign}", "wb") as f:
        f.write(b"\0" * 4096)
    try:
        with pytest.raises(SharedStateError, match="not an omnilimit segment"):
            RateLimiter(600, backend=f"shm://{foreign}")
    finally:
        remove_shared(foreign)
    truncated = f"{name}-truncated"
    with open(f"/dev/shm/omnilimit.{truncated}", "wb") as f:
        f.write(b"OMNI")
    try:
        with pytest.raises(SharedStateError, match="truncated"):
            RateLimiter(600, backend=f"shm://{truncated}")
    finally:
        remove_shared(truncated)


def test_names_backends_and_removal(name):
    for bad in ("shm://", "shm://a/b", "shm://.hidden", "redis://x", "SHM", 5):
        with pytest.raises(ValueError):
            RateLimiter(600, backend=bad)
    with pytest.raises(ValueError, match="token budget"):
        RateLimiter(600, backend=f"shm://{name}", tokens_per_minute=1000)
    limiter = RateLimiter(600, provider_name=name, backend="shm")  # the name defaults to provider_name
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
