"""RateLimiter: the guide's API, burst default, the timeout contract, accuracy in real time."""

import asyncio
import itertools
import logging
import math
import threading
import time

import pytest
from helpers import start_thread

from omnilimit import DEFAULT_BURST, LimiterTimeout, RateLimiter

GUIDE_KEYS = [
    "provider",
    "rpm_limit",
    "current_rpm",
    "tokens_available",
    "total_requests",
    "blocked_count",
    "utilization",
]


def test_stats_have_exactly_the_guides_keys_and_types():
    limiter = RateLimiter(requests_per_minute=500, burst_size=9, provider_name="openai_user_followup")
    for _ in range(3):
        assert limiter.acquire(timeout=120)
        limiter.record_request()
    stats = limiter.get_stats()
    assert list(stats) == GUIDE_KEYS
    assert stats["provider"] == "openai_user_followup"
    assert stats["rpm_limit"] == 500 and type(stats["rpm_limit"]) is int
    assert stats["current_rpm"] == 3 and type(stats["current_rpm"]) is int
    assert stats["tokens_available"] == 9 - 3 and type(stats["tokens_available"]) is int
    assert stats["total_requests"] == 3 and stats["blocked_count"] == 0
    assert stats["utilization"] == pytest.approx(3 / 500 * 100) and type(stats["utilization"]) is float
    assert limiter.get_rpm() == limiter.get_current_rpm() == 3


@pytest.mark.parametrize("rpm", [60, 500, 6000, 0.5, 61, 3500])
def test_default_burst_is_strict_pacing(rpm):
    limiter = RateLimiter(rpm)
    assert limiter.burst_size == DEFAULT_BURST == 1
    assert [limiter.acquire(timeout=0) for _ in range(2)] == [True, False]


def test_a_fresh_limiter_admits_its_burst_then_none():
    limiter = RateLimiter(requests_per_minute=600, burst_size=5)
    assert limiter.requests_available() == limiter.tokens_available() == 5
    assert [limiter.acquire(timeout=0) for _ in range(7)] == [True] * 5 + [False] * 2
    assert limiter.blocked_count == 2 and limiter.total_requests == 5
    assert limiter.requests_available() == 0


def test_a_fresh_6000_rpm_limiter_does_not_release_a_minute_at_once():
    limiter = RateLimiter(requests_per_minute=6000, burst_size=100)
    admitted = 0
    while limiter.acquire(timeout=0):
        admitted += 1
    assert 100 <= admitted <= 102  # the burst (plus what refilled meanwhile), not 6000


def test_rpm_limit_is_shown_as_given():
    assert RateLimiter(0.5).get_stats()["rpm_limit"] == 0.5
    assert RateLimiter(50.0).get_stats()["rpm_limit"] == 50.0
    assert RateLimiter(300).rpm == 300


@pytest.mark.parametrize("value", [0, -1, math.nan, math.inf, True, "60", None])
def test_bad_rate_raises_value_error_naming_it(value):
    with pytest.raises(ValueError, match="requests_per_minute"):
        RateLimiter(requests_per_minute=value)


@pytest.mark.parametrize("value", [0, -5, 2.5, math.nan, True, "5"])
def test_bad_burst_raises_value_error_naming_it(value):
    with pytest.raises(ValueError, match="burst_size"):
        RateLimiter(60, burst_size=value)


def test_provider_name_must_be_a_string():
    with pytest.raises(ValueError, match="provider_name"):
        RateLimiter(60, provider_name=None)


def test_has_no_release_attribute():
    # omnigen's generators pick release() or record_request() with hasattr(limiter, "release").
    assert not hasattr(RateLimiter(60), "release")
    assert not hasattr(RateLimiter, "release")


def test_waits_exactly_until_its_turn():
    limiter = RateLimiter(requests_per_minute=600, burst_size=1)  # one token per 100 ms
    assert limiter.acquire()
    started = time.monotonic()
    assert limiter.acquire(timeout=1)
    elapsed = time.monotonic() - started
    assert 0.09 <= elapsed < 0.3


def test_a_turn_beyond_the_timeout_waits_the_timeout_out_books_nothing_and_is_logged(caplog):
    limiter = RateLimiter(requests_per_minute=60, burst_size=1, provider_name="openai_user_followup")
    assert limiter.acquire()
    caplog.set_level(logging.WARNING, logger="omnilimit")
    started = time.monotonic()
    assert limiter.acquire(timeout=0.5) is False  # the next token is a second away
    assert 0.5 <= time.monotonic() - started <= 0.5 + 0.1  # False only once the timeout has passed
    assert [r.getMessage() for r in caplog.records] == ["Rate limit timeout after 0.5s for openai_user_followup"]
    assert limiter.blocked_count == 1 and limiter.denied_count == 0
    started = time.monotonic()
    assert limiter.acquire(timeout=1)  # nothing was booked for the caller that gave up
    assert time.monotonic() - started < 0.6  # the token due 1 s after the first, not a second one


def test_fail_fast_answers_at_once_and_takes_nothing(caplog):
    limiter = RateLimiter(requests_per_minute=600, burst_size=1)
    assert limiter.acquire()
    caplog.set_level(logging.DEBUG, logger="omnilimit")
    started = time.monotonic()
    for _ in range(50):
        assert limiter.acquire(timeout=0.01, fail_fast=True) is False  # the turn is 0.1 s away
    assert time.monotonic() - started < 0.1
    assert limiter.denied_count == 50 and limiter.blocked_count == 50
    assert caplog.records == []  # a refusal without a wait is not a timeout
    assert 0.05 < limiter.predicted_wait() <= 0.1  # the wait it would have faced
    started = time.monotonic()
    assert limiter.acquire(timeout=1, fail_fast=True)  # within reach: it books and sleeps
    assert time.monotonic() - started < 0.2  # still the next token, not the 51st
    with pytest.raises(ValueError, match="fail_fast"):
        limiter.acquire(fail_fast="yes")


def test_timeout_zero_tries_once_and_logs_nothing(caplog):
    limiter = RateLimiter(requests_per_minute=1, burst_size=1)
    limiter.acquire()
    caplog.set_level(logging.DEBUG, logger="omnilimit")
    started = time.monotonic()
    assert limiter.acquire(timeout=0) is False  # the reference waits forever here
    assert time.monotonic() - started < 0.1
    assert caplog.records == []


@pytest.mark.parametrize("timeout", [-1, math.nan, True, "1", object()])
def test_bad_timeouts_raise_value_error(timeout):
    with pytest.raises(ValueError, match="timeout"):
        RateLimiter(60).acquire(timeout=timeout)


def test_context_manager_records_the_request():
    limiter = RateLimiter(requests_per_minute=0.5, burst_size=1)  # one token per two minutes
    with limiter as entered:
        assert entered is limiter
    assert limiter.get_current_rpm() == 1
    assert isinstance(LimiterTimeout("x"), TimeoutError)


def test_with_blocks_wait_out_the_default_timeout_then_raise():
    # The guide's 60 s, for real: the next token is 120 s away, so `with limiter:` and
    # `async with limiter:` (from another thread, at the same time) each wait 60 s, then raise.
    limiter = RateLimiter(requests_per_minute=0.5, burst_size=1, provider_name="slow")
    assert limiter.acquire()
    outcomes = {}

    def sync_block():
        started = time.monotonic()
        try:
            with limiter:
                outcomes["sync"] = "entered"
        except LimiterTimeout as error:
            outcomes["sync"] = (str(error), time.monotonic() - started)

    async def async_block():
        started = time.monotonic()
        try:
            async with limiter:
                return "entered"
        except LimiterTimeout as error:
            return str(error), time.monotonic() - started

    thread = threading.Thread(target=sync_block)
    thread.start()
    outcomes["async"] = asyncio.run(async_block())
    thread.join(10)
    for kind in ("sync", "async"):
        message, waited = outcomes[kind]
        assert message == "Rate limit timeout after 60s for slow"
        assert 60.0 <= waited <= 61.0
    assert limiter.get_current_rpm() == 0 and limiter.blocked_count == 2  # no block was entered, none recorded


def test_get_stats_does_not_wait_for_a_sleeping_waiter():
    limiter = RateLimiter(requests_per_minute=60, burst_size=1)
    limiter.acquire()
    waiter = start_thread(limiter.acquire, 5)  # sleeps about a second
    time.sleep(0.05)
    started = time.monotonic()
    stats = limiter.get_stats()
    assert time.monotonic() - started < 0.1
    assert stats["tokens_available"] == 0
    waiter.join(5)
    assert limiter.total_requests == 2


@pytest.mark.timeout(60)
def test_many_threads_are_held_to_burst_plus_rate(tiny_switch_interval):
    rpm, burst, total = 3000, 5, 100  # 50 per second: the last of 100 goes 1.9 s after the first
    limiter = RateLimiter(requests_per_minute=rpm, burst_size=burst)
    tickets = itertools.count()
    stamps = []
    guard = threading.Lock()

    def worker():
        while next(tickets) < total:
            assert limiter.acquire(timeout=None)
            now = time.monotonic()
            with guard:
                stamps.append(now)

    started = time.monotonic()
    threads = [start_thread(worker) for _ in range(32)]
    for thread in threads:
        thread.join(30)
    assert len(stamps) == total
    stamps.sort()
    # A stamp is taken after acquire() returns, never before the admitted instant, so at every
    # stamp the admissions so far are within the bucket's bound however the threads were scheduled.
    for admitted, stamp in enumerate(stamps, start=1):
        assert admitted <= burst + rpm / 60 * (stamp - started) + 1
    # And the limiter kept up: the last admission came when it was due, not much later.
    assert stamps[-1] - started < (total - burst) / (rpm / 60) + 1.0
