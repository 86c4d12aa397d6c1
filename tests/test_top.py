"""``omnilimit top``: the shared limiters of another process read from their segments (read-only:
nothing changes), a program's Prometheus endpoint, the refusals, and the live view in a real
terminal (tmux): started, showing the live figures, quit with ``q``."""

import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest
from helpers import finish, need, spawn, wait_until

from omnilimit import RateLimiter, _core

CHILD = """
import sys, threading, time
import omnilimit
rate = omnilimit.RateLimiter(600, burst_size=1, provider_name="{name}-rate", backend="shm://{name}-rate")
slots = omnilimit.ConcurrencyLimiter(2, name="{name}-slots", backend="shm://{name}-slots")
for _ in range(5):
    rate.acquire()
    rate.record_request()
slots.acquire(); slots.acquire()
threading.Thread(target=slots.acquire, args=(120,), daemon=True).start()   # waits: both slots held
while slots.waiting != 1:
    time.sleep(0.01)
tokens = omnilimit.RateLimiter(6000, burst_size=1, provider_name="{name}-tokens", tokens_per_minute=60000,
                               token_burst=1000, backend="shm://{name}-tokens")
def steady():
    while True:
        rate.acquire()
        rate.record_request()
def spend():
    while True:
        tokens.acquire(tokens=1000)
        tokens.record_request(tokens=1000)
threading.Thread(target=steady, daemon=True).start()
threading.Thread(target=spend, daemon=True).start()
while tokens.tokens_admitted == 0:
    time.sleep(0.01)
print("ready", flush=True)
sys.stdin.readline()
"""


@pytest.fixture
def prefix(monkeypatch):
    """A segment prefix of this test's own, so that other tests' segments are not shown."""
    chosen = f"omnitop{os.getpid()}{uuid.uuid4().hex[:6]}."
    monkeypatch.setenv("OMNILIMIT_SHM_PREFIX", chosen)
    yield chosen
    for entry in os.listdir("/dev/shm"):
        if entry.startswith(chosen):
            os.unlink(os.path.join("/dev/shm", entry))


def top(*args, timeout=60):
    return subprocess.run(
        [sys.executable, "-m", "omnilimit", "top", *args], capture_output=True, text=True, timeout=timeout
    )


def line_of(output, name):
    found = [line for line in output.splitlines() if line.startswith(name)]
    assert len(found) == 1, output
    return found[0].split()


def test_once_shows_another_process_shared_limiters_and_changes_nothing(prefix):
    child = spawn(CHILD, name="job")
    try:
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        shown = top("--once")
        assert shown.returncode == 0, shown.stderr
        slots = line_of(shown.stdout, "job-slots")
        assert slots[1:5] == ["concurrency", "shm", "2", "slots"]
        assert slots[5] == "2"  # admitted
        assert slots[slots.index("100%") : slots.index("100%") + 3] == ["100%", "slots", "1"]  # one caller waiting
        rate = line_of(shown.stdout, "job-rate")
        assert rate[1:5] == ["rate", "shm", "600", "rpm"]
        assert int(rate[5].replace(",", "")) >= 5
        assert rate[rate.index("rpm", 5) + 1] == "-"  # a rate limiter's sleepers are each process's: not in the segment
        tokens = line_of(shown.stdout, "job-tokens")
        assert tokens[1:7] == ["rate", "shm", "6,000", "rpm", "60k", "tpm"]
        assert tokens[tokens.index("tpm", 7) - 1].endswith("%")  # the token budget is the limit in use
        # Read-only: the segment's figures are the child's own, and they keep moving.
        figures = _core._peek_segment("job-rate")
        assert figures["rpm_limit"] == pytest.approx(600) and figures["burst"] == 1
        admitted = figures["admitted"]
        wait_until(lambda: _core._peek_segment("job-rate")["admitted"] > admitted)
        assert _core._peek_segment("job-slots")["waiting"] == 1
    finally:
        finish(child)


def test_a_segment_that_cannot_be_read_gets_a_line_saying_why(prefix):
    with open(f"/dev/shm/{prefix}garbage", "wb") as squatter:  # not an omnilimit segment
        squatter.write(b"\0" * 4096)
    with pytest.raises(_core.SharedStateError, match="not built"):
        _core._peek_segment("garbage")
    if os.geteuid() == 0:  # root can make a file another user's
        RateLimiter(60, backend="shm://theirs")
        os.chown(f"/dev/shm/{prefix}theirs", 65534, 65534)
        with pytest.raises(_core.SharedStateError, match="another user"):
            _core._peek_segment("theirs")
    shown = top("--once")
    assert shown.returncode == 0, shown.stderr
    assert "garbage" in shown.stdout and "cannot be read" in shown.stdout and "not built" in shown.stdout
    if os.geteuid() == 0:
        assert "belongs to another user (uid 65534)" in shown.stdout
    with pytest.raises(FileNotFoundError):
        _core._peek_segment("nothing-here")


def test_once_reads_a_program_prometheus_endpoint():
    need("prometheus_client", "prometheus")
    from omnilimit import ConcurrencyLimiter
    from omnilimit.prometheus import serve

    rate = RateLimiter(1200, provider_name="served-rate")
    for _ in range(7):
        rate.acquire()
        rate.record_request()
    slots = ConcurrencyLimiter(4, name="served-slots")
    slots.acquire()
    server = serve([rate, slots], port=0)
    try:
        shown = top("--once", "--url", server.url)
    finally:
        server.close()
    assert shown.returncode == 0, shown.stderr
    line = line_of(shown.stdout, "served-rate")
    assert line[1:6] == ["rate", "memory", "1,200", "rpm", "7"]
    line = line_of(shown.stdout, "served-slots")
    assert line[1:6] == ["concurrency", "memory", "4", "slots", "1"]
    assert "25%" in line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--url", "ftp://example.com/metrics"], "--url must be an http:// or https:// URL"),
        (["--url", "http://127.0.0.1:1/metrics", "--once"], "http://127.0.0.1:1/metrics: "),
        (["--interval", "0"], "--interval must be between 0.05 and 3600 seconds"),
        (["--interval", "nan"], "--interval must be between"),
        ([], "the live view needs a terminal"),
    ],
)
def test_refusals_are_one_line_with_status_2(args, message, prefix):
    shown = top(*args)
    assert shown.returncode == 2
    assert shown.stderr.startswith("omnilimit top: error: ") and message in shown.stderr
    assert shown.stderr.count("\n") == 1


def test_the_live_view_in_a_real_terminal(prefix):
    """tmux runs ``omnilimit top`` in a 160x20 terminal: the shared limiters of another process
    appear with their live figures (the admissions per minute of the last second among them), the
    screen is captured, and ``q`` ends it with status 0."""
    if shutil.which("tmux") is None:
        if os.environ.get("CI"):
            pytest.fail("tmux is not installed: CI must run every test (.ci/run installs it)")
        pytest.skip("tmux is not installed (apt-get install tmux)")
    child = spawn(CHILD, name="live")
    socket = f"omnitop{os.getpid()}"
    tmux = ["tmux", "-L", socket]
    try:
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        # The shell tells how top ended (tmux's own pane_dead_status is not always set).
        command = f"env OMNILIMIT_SHM_PREFIX={prefix} {sys.executable} -m omnilimit top; echo top-exited-$?; sleep 60"
        subprocess.run([*tmux, "new-session", "-d", "-s", "top", "-x", "160", "-y", "20", command], check=True)

        def screen():
            return subprocess.run(
                [*tmux, "capture-pane", "-p", "-t", "top"], capture_output=True, text=True, check=True
            ).stdout

        def live():
            text = screen()
            lines = [line.split() for line in text.splitlines() if line.startswith("live-rate")]
            return bool(lines) and lines[0][6].replace(",", "").isdigit()  # NOW/MIN after a second look

        deadline = time.monotonic() + 30
        while not live():
            assert time.monotonic() < deadline, f"no live figures within 30 s; the screen:\n{screen()}"
            time.sleep(0.2)
        captured = screen()
        print(captured)
        assert "omnilimit top  shared memory (/dev/shm)" in captured
        rate = next(line.split() for line in captured.splitlines() if line.startswith("live-rate"))
        assert rate[1:5] == ["rate", "shm", "600", "rpm"]
        assert 300 <= int(rate[6].replace(",", "")) <= 1300  # ~600 a minute (one second's sample)
        slots = next(line.split() for line in captured.splitlines() if line.startswith("live-slots"))
        assert slots[1:5] == ["concurrency", "shm", "2", "slots"] and "100%" in slots
        tokens = next(line.split() for line in captured.splitlines() if line.startswith("live-tokens"))
        share = tokens[tokens.index("tpm", 7) - 1]
        assert 50 <= int(share.rstrip("%")) <= 130  # ~60,000 tokens a minute of 60,000: the token budget binds
        subprocess.run([*tmux, "send-keys", "-t", "top", "q"], check=True)

        deadline = time.monotonic() + 10
        while "top-exited-" not in screen():
            assert time.monotonic() < deadline, f"top did not end within 10 s of q; the screen:\n{screen()}"
            time.sleep(0.1)
        assert "top-exited-0" in screen()
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)
        finish(child)


def test_once_reads_the_limiters_a_redis_server_holds(redis_url):
    """Every host's figures, read with plain reads from the server: a rate limiter, one with a
    token budget, and a concurrency limiter with two slots held."""
    tag = f"t{uuid.uuid4().hex[:8]}"
    from omnilimit import ConcurrencyLimiter

    rate = RateLimiter(600, burst_size=3, provider_name=f"{tag}-rate", backend=redis_url)
    tokens = RateLimiter(
        600, burst_size=2, provider_name=f"{tag}-tokens", tokens_per_minute=60_000, token_burst=5000, backend=redis_url
    )
    slots = ConcurrencyLimiter(3, name=f"{tag}-slots", backend=redis_url)
    try:
        for _ in range(3):
            assert rate.acquire()
            rate.record_request()
        assert tokens.acquire(tokens=1000)
        tokens.record_request(tokens=800)
        assert slots.acquire() and slots.acquire()
        shown = top("--once", "--redis", redis_url)
        assert shown.returncode == 0, shown.stderr
        line = line_of(shown.stdout, f"{tag}-rate")
        assert line[1:6] == ["rate", "redis", "600", "rpm", "3"]
        assert line[-4:-2] == ["-", "-"]  # waiting and the p99 wait are each process's: not in Redis
        line = line_of(shown.stdout, f"{tag}-tokens")
        assert line[1:8] == ["rate", "redis", "600", "rpm", "60k", "tpm", "1"]
        line = line_of(shown.stdout, f"{tag}-slots")
        assert line[1:6] == ["concurrency", "redis", "3", "slots", "2"]
        assert "67%" in line and line[line.index("67%") + 2] == "0"  # nobody waiting
    finally:
        for limiter in (rate, tokens, slots):
            limiter.close()


def test_a_redis_that_hangs_or_refuses_is_one_error_line():
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections, never answers
    try:
        started = time.monotonic()
        shown = top("--once", "--redis", f"redis://127.0.0.1:{silent.getsockname()[1]}/0")
        assert shown.returncode == 2 and time.monotonic() - started < 30
        assert shown.stderr.startswith("omnilimit top: error: redis://127.0.0.1:") and "imeout" in shown.stderr
    finally:
        silent.close()
    shown = top("--once", "--redis", "redis://127.0.0.1:1/0")
    assert shown.returncode == 2 and "omnilimit top: error: redis://127.0.0.1:1/0: " in shown.stderr
    shown = top("--once", "--redis", "http://127.0.0.1:1/0")
    assert shown.returncode == 2 and "--redis must be a redis://" in shown.stderr
    shown = top("--once", "--redis", "redis://:secret@127.0.0.1:1/0")
    assert shown.returncode == 2 and "secret" not in shown.stderr
