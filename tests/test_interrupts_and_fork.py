"""A blocked acquire stays interruptible (SIGINT), and a forked child's limiters work."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import pytest
from helpers import start_thread, wait_until

from omnilimit import ConcurrencyLimiter, RateLimiter

# The child raises KeyboardInterrupt on SIGINT even when started from a background job, which
# inherits SIGINT ignored (and Python then installs no handler of its own).
CHILD_PREAMBLE = """
import signal, sys, threading, time
signal.signal(signal.SIGINT, signal.default_int_handler)
from omnilimit import ConcurrencyLimiter, RateLimiter
def ready():
    print("waiting", flush=True)
"""


def run_interrupted(body):
    """Runs `body` in a child whose main thread blocks; sends SIGINT once it says "waiting".
    Returns (seconds from the signal to the KeyboardInterrupt, the child's report lines)."""
    script = CHILD_PREAMBLE + textwrap.dedent(body)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "waiting", child.stderr.read()
        # The main thread waits in 50 ms slices; a signal just after a slice begins is the worst
        # case, so send it just after the fourth one begins.
        time.sleep(0.205)
        sent = time.monotonic()
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=30)
    finally:
        child.kill()
    assert child.returncode == 0, err
    lines = out.strip().splitlines()
    assert lines and lines[0].startswith("interrupted "), out
    interrupted_at = float(lines[0].split()[1])  # time.monotonic() is system-wide on Linux
    return interrupted_at - sent, lines[1:]


@pytest.mark.timeout(60)
def test_sigint_interrupts_a_blocked_concurrency_acquire_and_leaves_no_waiter():
    latency, report = run_interrupted(
        """
        limiter = ConcurrencyLimiter(1)
        limiter.acquire()  # held by the main thread; nobody will release it
        ready()
        try:
            limiter.acquire(timeout=None)
        except KeyboardInterrupt:
            print("interrupted", time.monotonic(), flush=True)
        print(limiter.waiting, limiter.active_calls)
        limiter.release()
        print(limiter.acquire(timeout=0))
        """
    )
    assert latency < 0.1
    assert report == ["0 1", "True"]


@pytest.mark.timeout(60)
def test_sigint_interrupts_a_concurrency_acquire_with_a_timeout():
    latency, report = run_interrupted(
        """
        limiter = ConcurrencyLimiter(1)
        holder = threading.Thread(target=limiter.acquire)
        holder.start(); holder.join()
        ready()
        try:
            limiter.acquire(timeout=30)
        except KeyboardInterrupt:
            print("interrupted", time.monotonic(), flush=True)
        print(limiter.waiting, limiter.active_calls, limiter.blocked_count)
        """
    )
    assert latency < 0.1
    assert report == ["0 1 0"]


@pytest.mark.timeout(60)
def test_sigint_interrupts_a_rate_wait_and_refunds_the_reservation():
    latency, report = run_interrupted(
        """
        limiter = RateLimiter(requests_per_minute=60, burst_size=1)  # one token per second
        limiter.acquire()
        ready()
        try:
            limiter.acquire(timeout=None)  # reserves the token 1 s away, then sleeps
        except KeyboardInterrupt:
            print("interrupted", time.monotonic(), flush=True)
        # Refunded: the next reservation is again the one 1 s after the first, not 2 s.
        print(limiter.tokens_available(), limiter.total_requests)
        print(limiter.acquire(timeout=1.2))
        """
    )
    assert latency < 0.1
    assert report == ["0 1", "True"]


@pytest.mark.timeout(60)
def test_sigint_takes_a_queued_token_budget_caller_out_of_the_queue():
    latency, report = run_interrupted(
        """
        import threading
        limiter = RateLimiter(6000, tokens_per_minute=600, token_burst=10)  # 10 tokens a second
        limiter.acquire(tokens=10)
        ready()
        try:
            limiter.acquire(timeout=None, tokens=10)  # queued: its tokens come 1 s after the first's
        except KeyboardInterrupt:
            print("interrupted", time.monotonic(), flush=True)
        # It left the queue holding nothing: a caller from another thread is next, and goes as
        # soon as the first call's tokens have refilled.
        print(limiter.waiting)
        out = []
        t0 = time.monotonic()
        worker = threading.Thread(target=lambda: out.append(limiter.acquire(timeout=2, tokens=10)))
        worker.start()
        worker.join()
        print(out[0], limiter.total_requests, round(time.monotonic() - t0 + 0.2) <= 1)
        """
    )
    assert latency < 0.1
    assert report == ["0", "True 2 True"]


@pytest.mark.timeout(60)
def test_a_signal_handler_that_does_not_raise_lets_the_wait_continue():
    script = CHILD_PREAMBLE + textwrap.dedent(
        """
        import signal
        seen = []
        signal.signal(signal.SIGUSR1, lambda *_: seen.append(1))
        limiter = ConcurrencyLimiter(1)
        limiter.acquire()
        threading.Timer(0.5, limiter.release).start()
        ready()
        print(limiter.acquire(timeout=5), seen)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "waiting"
    time.sleep(0.1)
    child.send_signal(signal.SIGUSR1)
    out, _ = child.communicate(timeout=30)
    assert out.strip() == "True [1]"


@pytest.mark.timeout(60)
def test_forked_child_gets_working_limiters_while_parent_threads_hold_and_wait():
    concurrency = ConcurrencyLimiter(2)
    rate = RateLimiter(requests_per_minute=600, burst_size=2)
    concurrency.acquire()
    start_thread(concurrency.acquire, 30)  # takes the second slot
    wait_until(lambda: concurrency.active_calls == 2)
    waiter = start_thread(concurrency.acquire, 30)  # queued in the parent
    wait_until(lambda: concurrency.waiting == 1)
    churn_stop = []

    def churn():  # keeps the rate limiter's and the queue's state changing during the fork
        while not churn_stop:
            rate.acquire(timeout=0)
            concurrency.get_stats()

    churner = start_thread(churn)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        pid = os.fork()
    if pid == 0:  # the child: only this thread exists
        code = 1
        try:
            ok = concurrency.active_calls == 0 and concurrency.waiting == 0
            ok = ok and concurrency.acquire(timeout=1) and concurrency.acquire(timeout=1)
            ok = ok and concurrency.acquire(timeout=0) is False
            concurrency.release()
            concurrency.release()
            ok = ok and concurrency.over_release_count == 0
            ok = ok and rate.acquire(timeout=1)
            code = 0 if ok else 1
        finally:
            os._exit(code)
    churn_stop.append(True)
    deadline = time.monotonic() + 20
    while (result := os.waitpid(pid, os.WNOHANG))[0] == 0:  # a deadlocked child fails, not hangs
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            pytest.fail("the forked child deadlocked")
        time.sleep(0.01)
    status = result[1]
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    # The parent is untouched by the child's re-initialisation.
    assert concurrency.active_calls == 2 and concurrency.waiting == 1
    concurrency.release()
    waiter.join(5)
    churner.join(5)
    assert concurrency.active_calls == 2 and concurrency.waiting == 0


def test_a_forked_child_counts_none_of_the_parents_sleepers():
    limiter = RateLimiter(60, provider_name="fork")  # one a second
    assert limiter.acquire(timeout=0)
    sleepers = [threading.Thread(target=limiter.acquire, args=(10,)) for _ in range(3)]
    for thread in sleepers:
        thread.start()
    wait_until(lambda: limiter.waiting == 3)  # booked 1, 2 and 3 s ahead
    assert limiter.predicted_wait() > 3.5
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the parent's threads are not here
        m = limiter.metrics()
        os.write(write, json.dumps([limiter.waiting, m["waiting"], m["predicted_wait_s"]]).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        waiting, metric_waiting, predicted = json.loads(f.read())
    os.waitpid(pid, 0)
    assert waiting == 0 and metric_waiting == 0
    assert predicted <= 1.0  # the turn after the parent's first admission, not after its sleepers
    for thread in sleepers:
        thread.join(10)
