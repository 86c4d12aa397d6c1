"""on_rate_limited / on_response / manager.report_rate_limited: a provider's answers turned into
one pause of the whole limiter, or a bucket capped at the provider's remaining budget."""

import logging
import math
import threading
import time

import pytest

from omnilimit import ConcurrencyLimiter, ProviderRateLimitManager, RateLimiter
from omnilimit.feedback import DEFAULT_PAUSE_S

LIMITERS = [lambda: ConcurrencyLimiter(4, name="c"), lambda: RateLimiter(6000, provider_name="r")]


@pytest.mark.parametrize("make", LIMITERS)
def test_retry_after_given_as_seconds_or_as_header_text(make):
    limiter = make()
    assert limiter.on_rate_limited(retry_after=0.5) == pytest.approx(0.5, abs=0.01)
    assert limiter.on_rate_limited(retry_after="3") == pytest.approx(3.0, abs=0.01)
    assert 2.9 < limiter.paused_for <= 3.0
    assert limiter.acquire(timeout=0) is False


@pytest.mark.parametrize("make", LIMITERS)
@pytest.mark.parametrize("bad", [-1, math.nan, math.inf, True, object(), [1]])
def test_a_bad_retry_after_argument_is_an_error(make, bad):
    limiter = make()
    with pytest.raises(ValueError, match="retry_after"):
        limiter.on_rate_limited(retry_after=bad)
    assert limiter.paused_for == 0.0


@pytest.mark.parametrize("make", LIMITERS)
def test_headers_decide_the_pause(make):
    limiter = make()
    assert limiter.on_rate_limited(headers={"Retry-After": "2"}) == pytest.approx(2.0, abs=0.01)
    limiter = make()
    exhausted = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1.5s"}
    assert limiter.on_rate_limited(headers=exhausted) == pytest.approx(1.5, abs=0.01)
    limiter = make()
    assert limiter.on_rate_limited(headers={"retry-after-ms": "250", "retry-after": "9"}) == pytest.approx(
        0.25, abs=0.01
    )


@pytest.mark.parametrize("make", LIMITERS)
def test_a_429_that_says_nothing_usable_pauses_the_default_and_warns_once_per_bad_header(make, caplog):
    limiter = make()
    with caplog.at_level(logging.INFO, logger="omnilimit"):
        assert limiter.on_rate_limited(headers={"retry-after": "soon", "x-ratelimit-reset-requests": "1 minute"}) == (
            pytest.approx(DEFAULT_PAUSE_S, abs=0.01)
        )
    bad = [r for r in caplog.records if r.levelno == logging.WARNING and "Ignoring" in r.getMessage()]
    assert len(bad) == 2
    assert any("without a usable retry time" in r.getMessage() for r in caplog.records)
    limiter = make()
    assert limiter.on_rate_limited(retry_after="garbage") == pytest.approx(DEFAULT_PAUSE_S, abs=0.01)


def test_a_storm_of_429s_pauses_once_and_says_so_once(caplog):
    limiter = ConcurrencyLimiter(64, name="storm")
    gate = threading.Barrier(32)

    def report():
        gate.wait()
        limiter.on_rate_limited(retry_after=1.0)

    with caplog.at_level(logging.WARNING, logger="omnilimit"):
        threads = [threading.Thread(target=report) for _ in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    # Each call asks for "1 s from my now": a few may extend the end by microseconds; never 32 times
    # the pause, and the pause in effect is one second, not 32.
    assert 1 <= limiter.pauses <= 32
    assert 0.9 < limiter.paused_for <= 1.0
    said = [r for r in caplog.records if "pausing" in r.getMessage()]
    assert len(said) == limiter.pauses


def test_a_successful_response_caps_the_rate_limiter_at_the_providers_remaining_budget():
    limiter = RateLimiter(6000, burst_size=100)
    assert limiter.tokens_available() == 100
    assert limiter.on_response(200, {"x-ratelimit-remaining-requests": "3"}) == 0.0
    assert limiter.tokens_available() == 3
    assert limiter.on_response(200, {"x-ratelimit-remaining-requests": "50"}) == 0.0
    assert limiter.tokens_available() == 3  # never adds tokens the bucket did not have
    assert limiter.paused_for == 0.0


def test_a_successful_response_reporting_an_exhausted_budget_pauses_for_one_units_worth():
    # The providers' reset is the time until the budget is full again; one request comes back
    # after reset / limit.
    limiter = ConcurrencyLimiter(4)
    headers = {"x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "0"}
    assert limiter.on_response(200, {**headers, "x-ratelimit-reset-requests": "30s"}) == pytest.approx(0.5, abs=0.01)
    limiter = ConcurrencyLimiter(4)
    anthropic = {
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": "2099-01-01T00:00:00Z",
    }
    assert limiter.on_response(200, anthropic) > 3600  # no limit given: the whole reset
    limiter = ConcurrencyLimiter(4)
    assert limiter.on_response(200, {"x-ratelimit-remaining-requests": "2", "x-ratelimit-reset-requests": "9s"}) == 0.0


def test_a_rate_limiter_paces_an_exhausted_budget_with_its_own_buckets_instead_of_pausing():
    limiter = RateLimiter(600, burst_size=10, tokens_per_minute=60_000)  # one request per 0.1 s
    headers = {
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "60s",
        "x-ratelimit-limit-requests": "600",
    }
    assert (
        limiter.on_response(200, {**headers, "x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "1s"})
        == 0.0
    )
    assert limiter.paused_for == 0.0
    assert limiter.tokens_available() == 0 and limiter.token_budget_available() == 0
    ok, waited = _timed(lambda: limiter.acquire(timeout=2))
    assert ok and 0.05 <= waited <= 0.35  # the next request at the pace, not after a 60-s "reset"
    plain = RateLimiter(600)  # no token budget: an exhausted token budget pauses one token's worth
    assert plain.on_response(
        200, {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "2s", "x-ratelimit-limit-tokens": "4"}
    ) == (pytest.approx(0.5, abs=0.01))


def _timed(call):
    t0 = time.monotonic()
    return call(), time.monotonic() - t0


@pytest.mark.parametrize("make", LIMITERS)
def test_other_responses_change_nothing(make):
    limiter = make()
    for status in (500, 503, 404, 301):
        assert limiter.on_response(status, {"retry-after": "5", "x-ratelimit-remaining-requests": "0"}) == 0.0
    assert limiter.on_response(200, None) == 0.0
    assert limiter.on_response(200, {"x-ratelimit-remaining-requests": "many"}) == 0.0  # warned, ignored
    assert limiter.paused_for == 0.0 and limiter.pauses == 0
    assert limiter.acquire(timeout=0)


@pytest.mark.parametrize("status", ["429", 429.0, True, None])
def test_on_response_wants_an_int_status(status):
    with pytest.raises(ValueError, match="status"):
        RateLimiter(60).on_response(status, {})


def test_the_manager_pauses_every_role_sharing_the_key_and_no_other():
    manager = ProviderRateLimitManager.from_config(
        {
            "providers": {
                "writer": {"name": "openai", "rate_limit_shared_key": "k", "max_concurrent_calls": 8},
                "critic": {"name": "openai", "rate_limit_shared_key": "k", "max_concurrent_calls": 8},
                "judge": {"name": "anthropic", "max_concurrent_calls": 8},
            }
        }
    )
    assert manager.report_rate_limited("writer", headers={"Retry-After": "2"}) == pytest.approx(2.0, abs=0.01)
    assert manager.limiter_for("critic").paused_for > 1.9
    assert manager.limiter_for("critic").acquire(timeout=0) is False
    assert manager.limiter_for("judge").paused_for == 0.0
    assert manager.limiter_for("judge").acquire(timeout=0) is True
    with pytest.raises(KeyError, match="unknown role"):
        manager.report_rate_limited("nobody", retry_after=1)


def test_a_rate_limiter_follows_a_lower_limit_the_provider_reports_and_never_a_higher_one(caplog):
    limiter = RateLimiter(600, provider_name="r", tokens_per_minute=100_000)
    with caplog.at_level(logging.WARNING, logger="omnilimit"):
        limiter.on_response(200, {"x-ratelimit-limit-requests": "300", "x-ratelimit-limit-tokens": "40000"})
    assert limiter.rpm == 300 and limiter.tpm == 40_000
    assert sum("the provider reports" in r.getMessage() for r in caplog.records) == 2
    limiter.on_response(200, {"x-ratelimit-limit-requests": "3000"})  # higher: the configuration stands
    assert limiter.rpm == 300
    limiter.on_rate_limited(headers={"x-ratelimit-limit-requests": "120", "retry-after": "0"})  # on a 429 too
    assert limiter.rpm == 120
    concurrency = ConcurrencyLimiter(4)
    concurrency.on_response(200, {"x-ratelimit-limit-requests": "1"})  # nothing to follow
    assert concurrency.max_concurrent == 4
