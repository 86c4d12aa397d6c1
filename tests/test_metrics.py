"""metrics(): counters, the wait distribution, who waits now and the predicted wait, next to the
guide's get_stats() keys (which stay exactly as they are)."""

import time

import pytest
from conftest import start_thread, wait_until

from omnilimit import ConcurrencyLimiter, RateLimiter

SHARED = {
    "admitted",
    "timed_out",
    "denied",
    "rate_limited",
    "pauses",
    "paused_for",
    "waiting",
    "wait_p50_s",
    "wait_p99_s",
    "predicted_wait_s",
}


def test_the_guides_stats_keep_their_keys_and_metrics_add_the_rest():
    rate = RateLimiter(60)
    assert set(rate.get_stats()) == {
        "provider",
        "rpm_limit",
        "current_rpm",
        "tokens_available",
        "total_requests",
        "blocked_count",
        "utilization",
    }
    assert set(rate.metrics()) == set(rate.get_stats()) | SHARED
    concurrency = ConcurrencyLimiter(2)
    assert set(concurrency.get_stats()) == {"max_concurrent", "active_calls", "total_requests", "available_slots"}
    assert set(concurrency.metrics()) == set(concurrency.get_stats()) | SHARED


def test_rate_counters_and_the_wait_distribution():
    limiter = RateLimiter(600, burst_size=2)  # one every 0.1 s
    assert limiter.acquire() and limiter.acquire()  # the burst: no wait
    assert limiter.acquire(timeout=0) is False  # denied
    assert limiter.acquire(timeout=0.05, fail_fast=True) is False  # denied too: 0.1 s needed
    assert limiter.acquire(timeout=0.02) is False  # timed out (0.08 s still needed)
    for _ in range(3):
        assert limiter.acquire(timeout=1)  # each waits ~0.1 s
    m = limiter.metrics()
    assert (m["admitted"], m["denied"], m["timed_out"]) == (5, 2, 1)
    assert m["blocked_count"] == 3
    assert m["wait_p50_s"] > 0.06  # 3 of 5 waited (0.08 s, then 0.1 s each)
    assert 0.07 < m["wait_p99_s"] <= 0.1 * 1.25 + 0.05
    assert 0.0 < m["predicted_wait_s"] <= 0.1
    assert m["waiting"] == 0 and m["rate_limited"] == 0


def test_nobody_waited_means_zero_quantiles():
    limiter = RateLimiter(6000, burst_size=100)
    for _ in range(50):
        assert limiter.acquire()
    m = limiter.metrics()
    assert m["wait_p50_s"] == 0.0 and m["wait_p99_s"] == 0.0 and m["predicted_wait_s"] == 0.0
    with pytest.raises(ValueError):
        limiter.wait_quantile(0)
    with pytest.raises(ValueError):
        limiter.wait_quantile(1.5)


def test_waiting_counts_the_sleepers_of_a_rate_limiter():
    limiter = RateLimiter(120, burst_size=1)  # turns at 0.5, 1.0 and 1.5 s
    assert limiter.acquire()
    threads = [start_thread(lambda: limiter.acquire(timeout=5)) for _ in range(3)]
    wait_until(lambda: limiter.metrics()["waiting"] == 3)
    assert limiter.acquire(timeout=0.1) is False  # refused at once: never counted as waiting
    for thread in threads:
        thread.join(5)
    assert limiter.metrics()["waiting"] == 0
    assert limiter.metrics()["admitted"] == 4


def test_reported_429s_and_pauses():
    limiter = ConcurrencyLimiter(4)
    for _ in range(3):
        limiter.on_rate_limited(retry_after=1.0)
    m = limiter.metrics()
    assert m["rate_limited"] == 3
    assert 1 <= m["pauses"] <= 3
    assert 0.9 < m["paused_for"] <= 1.0
    assert m["predicted_wait_s"] == pytest.approx(m["paused_for"], abs=0.01)


def test_concurrency_waiters_and_prediction():
    limiter = ConcurrencyLimiter(1)
    assert limiter.metrics()["predicted_wait_s"] == 0.0
    assert limiter.acquire()
    assert limiter.metrics()["predicted_wait_s"] is None  # nothing released yet: no pace to go by
    waiter = start_thread(lambda: limiter.acquire(timeout=5))
    wait_until(lambda: limiter.waiting == 1)
    time.sleep(0.2)
    limiter.release()
    waiter.join(5)
    m = limiter.metrics()
    assert (m["admitted"], m["waiting"]) == (2, 0)
    assert 0.15 <= m["wait_p99_s"] <= 0.2 * 1.25 + 0.1
    assert m["predicted_wait_s"] == pytest.approx(60.0, rel=0.01)  # 1 ahead, 1 release in the last minute
    assert limiter.acquire(timeout=0) is False
    assert limiter.metrics()["denied"] == 1
