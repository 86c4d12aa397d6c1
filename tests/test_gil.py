"""Blocked callers release the GIL: other Python threads keep their speed."""

import contextlib
import time

import pytest
from conftest import start_thread, wait_until
from omnilimit import ConcurrencyLimiter, LimiterClosed, RateLimiter


def python_loop_seconds(iterations=300_000):
    started = time.perf_counter()
    total = 0
    for i in range(iterations):
        total += i * i % 7
    return time.perf_counter() - started


def best_of(runs=5):
    return min(python_loop_seconds() for _ in range(runs))


@pytest.mark.timeout(120)
def test_python_runs_at_full_speed_while_64_threads_wait():
    alone = best_of()
    concurrency = ConcurrencyLimiter(1)
    concurrency.acquire()
    rate = RateLimiter(requests_per_minute=1, burst_size=1)
    rate.acquire()

    def blocked_on_slot():
        with contextlib.suppress(LimiterClosed):
            concurrency.acquire(timeout=None)

    def blocked_on_token():
        rate.acquire(timeout=None)  # reserves a token minutes away and sleeps (daemon thread)

    threads = [start_thread(blocked_on_slot) for _ in range(56)]
    wait_until(lambda: concurrency.waiting == 56)
    threads += [start_thread(blocked_on_token) for _ in range(8)]
    wait_until(lambda: rate.tokens_available() == 0 and rate.total_requests == 1)
    time.sleep(0.2)
    crowded = best_of()
    concurrency.close()
    # A waiter that polled with the GIL, or woke up in a loop, would slow this thread down a lot;
    # the bound only catches that (measured: within a few percent).
    assert crowded < alone * 1.5, (alone, crowded)
    for thread in threads[:56]:
        thread.join(5)
