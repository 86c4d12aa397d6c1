"""metrics(): counters, the wait distribution, who waits now and the predicted wait, next to the
guide's get_stats() keys (which stay exactly as they are)."""

import math
import time

import pytest
from helpers import start_thread, wait_until
from hypothesis import given, settings
from hypothesis import strategies as st

from omnilimit import CombinedLimiter, ConcurrencyLimiter, RateLimiter
from omnilimit._core import WaitHistogram
from omnilimit.backends.redis_waits import WaitRecorder

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
    "wait_max_s",
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
    assert 0.07 < m["wait_p99_s"] == m["wait_max_s"] < 0.1 + 0.05  # p99 of 5: the longest
    assert 0.0 < m["predicted_wait_s"] <= 0.1
    assert m["waiting"] == 0 and m["rate_limited"] == 0


def test_nobody_waited_means_zero_quantiles():
    limiter = RateLimiter(6000, burst_size=100)
    for _ in range(50):
        assert limiter.acquire()
    m = limiter.metrics()
    assert m["wait_p50_s"] == 0.0 and m["wait_p99_s"] == 0.0 and m["predicted_wait_s"] == 0.0
    assert m["wait_max_s"] == 0.0
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
    took = []
    waiter = start_thread(lambda: took.append(timed(limiter.acquire, 5)))
    wait_until(lambda: limiter.waiting == 1)
    time.sleep(0.2)
    limiter.release()
    waiter.join(5)
    m = limiter.metrics()
    assert (m["admitted"], m["waiting"]) == (2, 0)
    # One wait, longer than the sleep and shorter than the waiter's own acquire() call: the maximum
    # and p99 (the waiter: the top of 2) are exactly it; p50 is the first caller's, who took a free slot.
    assert 0.2 <= m["wait_max_s"] <= took[0]
    assert m["wait_p99_s"] == m["wait_max_s"] and m["wait_p50_s"] == 0.0
    assert m["predicted_wait_s"] == pytest.approx(60.0, rel=0.01)  # 1 ahead, 1 release in the last minute
    assert limiter.acquire(timeout=0) is False
    assert limiter.metrics()["denied"] == 1


# ---- the wait distribution: quantiles within 5% of the exact ones, the maximum exact ----------


def timed(call, *args):
    """Seconds `call(*args)` took (asserting it returned True), on the core's clock."""
    started = time.monotonic()
    assert call(*args)
    return time.monotonic() - started


def exact_quantile(waits, q, idle=0):
    """The nearest-rank q-quantile of `waits` and `idle` callers that did not wait (0)."""
    ordered = [0] * idle + sorted(waits)
    return ordered[max(1, math.ceil(q * len(ordered) - 1e-9)) - 1]


def assert_within_5_percent(histogram, waits, idle=0):
    total = len(waits) + idle
    assert histogram.max_ns == max(waits)
    for q in (0.01, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0):
        exact = exact_quantile(waits, q, idle)
        got = histogram.quantile(q, total)
        assert abs(got - exact) <= 0.05 * exact, (q, got, exact)
        assert got <= histogram.max_ns, (q, got, histogram.max_ns)
    assert histogram.quantile(1.0, total) == max(waits)


def test_the_issues_waits_are_reported_within_5_percent_and_a_lone_wait_exactly():
    lone = WaitHistogram()  # was 2.147483648 s: the upper edge of its 25% bucket
    lone.record(1_900_000_000)
    assert lone.quantile(0.5) == lone.quantile(0.99) == lone.max_ns == 1_900_000_000
    around = WaitHistogram()  # waits of ~6.4 s, all reported as 6.442450944 s
    waits = [6_300_000_000 + k * 1_000_000 for k in range(200)]  # 6.3 s to 6.499 s
    for wait in waits:
        around.record(wait)
    assert_within_5_percent(around, waits)
    assert abs(around.quantile(0.5) - 6_399_000_000) <= 2_000_000  # interpolated: within 0.05%
    assert WaitHistogram().quantile(0.5, 10) == 0 and WaitHistogram().max_ns == 0
    with pytest.raises(ValueError):
        lone.quantile(0)


SCALES_NS = [1_024, 3_000, 10**5, 7 * 10**6, 10**8, 1_900_000_000, 6_400_000_000, 60 * 10**9, 3600 * 10**9]


@pytest.mark.parametrize("scale", SCALES_NS)
def test_quantiles_are_within_5_percent_at_every_scale(scale):
    shapes = {
        "equal": [scale] * 100,
        # Bunched at the bottom of a bucket, the top ones far above: interpolation's worst case.
        "bunched": [scale] * 95 + [3 * scale] * 5,
        "spread": [scale + scale * k // 250 for k in range(250)],
        "two": [scale, scale * 21 // 20],
    }
    for name, waits in shapes.items():
        for idle in (0, len(waits) // 2, 3 * len(waits)):
            histogram = WaitHistogram()
            for wait in waits:
                histogram.record(wait)
            try:
                assert_within_5_percent(histogram, waits, idle)
            except AssertionError as error:
                raise AssertionError(f"{name} waits from {scale} ns, {idle} idle: {error}") from None


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(1_024, 2**44 - 1), min_size=1, max_size=60),
    st.integers(0, 60),
)
def test_quantiles_of_any_waits_are_within_5_percent_and_never_above_the_maximum(waits, idle):
    histogram = WaitHistogram()
    for wait in waits:
        histogram.record(wait)
    assert histogram.recorded == len(waits)
    assert_within_5_percent(histogram, waits, idle)


def test_a_rate_limiters_waits_measured_from_outside():
    limiter = RateLimiter(600, burst_size=1)  # one every 0.1 s
    assert limiter.acquire()  # the burst: no wait
    took = sorted(timed(limiter.acquire, 2) for _ in range(5))  # ~0.1 s each
    m = limiter.metrics()
    # Each wait the core measured lies within its acquire() call, less a few ms spent around it
    # (generous): so do the k-th longest of them, and the quantiles are within 5% of those.
    slack = 0.01
    waits = [0.0, *took]  # the 6 admitted callers, the first without a wait
    p50 = exact_quantile(waits, 0.5)
    assert (p50 - slack) * 0.95 <= m["wait_p50_s"] <= p50 * 1.05
    assert took[-1] - slack <= m["wait_max_s"] <= took[-1]
    assert m["wait_p99_s"] == m["wait_max_s"]  # the top of 6


def test_combined_limiters_report_both_maxima():
    limiter = CombinedLimiter(max_concurrent=1, requests_per_minute=600, burst_size=1)
    m = limiter.metrics()
    assert m["rate_wait_max_s"] == 0.0 and m["concurrency_wait_max_s"] == 0.0
    with limiter:
        pass
    took = timed(limiter.acquire, 2)  # waits ~0.1 s for the rate
    m = limiter.metrics()
    assert 0.05 <= m["rate_wait_max_s"] <= took
    assert m["rate_wait_p99_s"] == m["rate_wait_max_s"]


def test_the_redis_limiters_recorder_keeps_exact_samples_and_the_maximum_of_all():
    recorder = WaitRecorder(capacity=4)
    assert recorder.quantile(0.5) == 0.0 and recorder.maximum() == 0.0
    recorder.record(1.9)
    assert recorder.quantile(0.5) == recorder.quantile(0.99) == recorder.maximum() == 1.9
    for wait in (0.1, 0.2, 0.3, 0.4):  # the latest 4: 1.9 s leaves the window, not the maximum
        recorder.record(wait)
    assert recorder.maximum() == 1.9
    assert [recorder.quantile(q) for q in (0.25, 0.5, 0.75, 0.99, 1.0)] == [0.1, 0.2, 0.3, 0.4, 0.4]
    recorder.record(-0.001)  # a clock step: no negative wait
    assert recorder.quantile(0.25) == 0.0
    for q in (0, -0.5, 1.5):
        with pytest.raises(ValueError):
            recorder.quantile(q)
