"""pause(): what a provider's 429 turns into. Nothing is admitted before the pause ends, every
waiter (queued or already holding a reservation) waits for the end plus a small jitter, pauses
extend and never shorten, and a caller whose timeout ends inside the pause fails at once."""

import math
import threading
import time

import pytest
from helpers import start_thread, wait_until

from omnilimit import ConcurrencyLimiter, RateLimiter

SLACK = 0.25  # scheduling slack on a loaded 2-core machine; a real bug is off by a whole pause


def timed(call):
    t0 = time.monotonic()
    result = call()
    return result, time.monotonic() - t0


@pytest.mark.parametrize("make", [lambda: ConcurrencyLimiter(4), lambda: RateLimiter(6000, burst_size=10)])
def test_nothing_is_admitted_until_the_pause_ends(make):
    limiter = make()
    assert limiter.paused_for == 0.0 and limiter.pauses == 0
    assert limiter.pause(0.4) == pytest.approx(0.4, abs=0.01)
    assert 0.3 < limiter.paused_for <= 0.4
    assert limiter.acquire(timeout=0) is False
    ok, waited = timed(lambda: limiter.acquire(timeout=5))
    assert ok is True
    assert 0.38 <= waited <= 0.4 + 0.05 + SLACK  # the end, plus a jitter of at most 1/8 of the pause
    assert limiter.paused_for == 0.0
    assert limiter.pauses == 1


@pytest.mark.parametrize("make", [lambda: ConcurrencyLimiter(4), lambda: RateLimiter(6000, burst_size=10)])
def test_a_timeout_inside_the_pause_waits_the_timeout_out_and_keeps_nothing(make):
    limiter = make()
    limiter.pause(2.0)
    ok, waited = timed(lambda: limiter.acquire(timeout=0.5))
    assert ok is False
    assert 0.5 <= waited <= 0.6  # False only once the timeout has passed: no call during the pause
    assert limiter.blocked_count == 1 and limiter.denied_count == 0
    if isinstance(limiter, ConcurrencyLimiter):
        assert limiter.active_calls == 0 and limiter.total_requests == 0
    ok, waited = timed(lambda: limiter.acquire(timeout=0))
    assert ok is False and waited < 0.05  # a try answers at once
    if isinstance(limiter, RateLimiter):
        ok, waited = timed(lambda: limiter.acquire(timeout=0.5, fail_fast=True))
        assert ok is False and waited < 0.05


def test_pauses_extend_and_never_shorten():
    limiter = RateLimiter(60)
    limiter.pause(1.0)
    assert limiter.pause(0.1) == pytest.approx(1.0, abs=0.02)  # the longer one stays in effect
    assert limiter.pauses == 1
    assert limiter.pause(1.5) == pytest.approx(1.5, abs=0.02)
    assert limiter.pauses == 2
    assert limiter.pause(0) == pytest.approx(1.5, abs=0.02)


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, -math.inf])
def test_a_bad_pause_length_is_refused(bad):
    for limiter in (ConcurrencyLimiter(1), RateLimiter(60)):
        with pytest.raises(ValueError, match="finite"):
            limiter.pause(bad)
        assert limiter.paused_for == 0.0


def test_after_a_pause_the_rate_limiter_starts_from_an_empty_bucket():
    limiter = RateLimiter(600, burst_size=20)  # one every 0.1 s, bursts of 20
    limiter.pause(0.3)
    assert limiter.acquire(timeout=2)  # the first at the end of the pause
    assert limiter.tokens_available() == 0  # the provider said the budget was spent: no burst
    _, waited = timed(lambda: limiter.acquire(timeout=2))
    assert 0.05 <= waited <= 0.1 + SLACK  # then the pace


def test_a_reservation_made_before_the_pause_waits_for_its_end():
    limiter = RateLimiter(60, burst_size=1)  # one per second
    assert limiter.acquire()
    returned = []
    t0 = time.monotonic()
    waiter = start_thread(lambda: returned.append((limiter.acquire(timeout=10), time.monotonic() - t0)))
    time.sleep(0.2)  # the waiter holds the slot at t0 + 1 s and sleeps
    limiter.pause(1.5)  # the provider says: nothing before t0 + 1.7 s
    waiter.join(10)
    [(ok, at)] = returned
    assert ok is True
    assert 1.7 - 0.02 <= at <= 1.7 + 1.5 / 8 + SLACK


def test_queued_waiters_keep_their_order_and_go_after_the_end_with_a_jitter():
    limiter = ConcurrencyLimiter(20)
    limiter.pause(0.8)
    t0 = time.monotonic()
    returned = []
    lock = threading.Lock()

    def call():
        assert limiter.acquire(timeout=10)
        with lock:
            returned.append(time.monotonic() - t0)

    threads = [start_thread(call) for _ in range(20)]
    for thread in threads:
        thread.join(10)
    assert len(returned) == 20
    assert min(returned) >= 0.8 - 0.02
    assert max(returned) <= 0.8 + 0.1 + SLACK  # jitter at most 1/8 of the pause
    assert max(returned) - min(returned) > 0.002  # not all in the same millisecond
    assert limiter.active_calls == 20


def test_a_slot_handed_over_during_a_pause_is_used_after_it():
    limiter = ConcurrencyLimiter(1)
    assert limiter.acquire()
    returned = []
    t0 = time.monotonic()
    waiter = start_thread(lambda: returned.append((limiter.acquire(timeout=10), time.monotonic() - t0)))
    wait_until(lambda: limiter.waiting == 1)
    limiter.pause(0.5)
    limiter.release()  # handed to the waiter, which must still wait for the end
    waiter.join(10)
    [(ok, at)] = returned
    assert ok is True and at >= 0.5 - 0.02
    assert limiter.active_calls == 1


def test_a_waiter_whose_timeout_ends_in_the_pause_passes_its_slot_on():
    limiter = ConcurrencyLimiter(1)
    assert limiter.acquire()
    results = []
    waiter = start_thread(lambda: results.append(limiter.acquire(timeout=0.3)))
    wait_until(lambda: limiter.waiting == 1)
    limiter.pause(5.0)
    limiter.release()  # handed over, but the pause outlasts the waiter's timeout
    waiter.join(10)
    assert results == [False]
    assert limiter.active_calls == 0  # the slot went back: nothing leaked
    assert limiter.over_release_count == 0
