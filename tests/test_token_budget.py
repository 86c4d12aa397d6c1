"""The token budget (tokens per minute): reserved with the request at one instant or not at all,
settled after the call, in debt rather than refused, and read from the YAML as rate_limit_tpm."""

import bisect
import random
import threading
import time

import pytest
from helpers import start_thread

from omnilimit import ConfigError, ProviderRateLimitManager, RateLimiter

SLACK = 0.25


def budget(**kwargs):
    # 6000 RPM (burst 100) and 60,000 TPM: 1000 tokens a second, bursts of 1000 tokens.
    kwargs = {"burst_size": 100, "token_burst": 1000, **kwargs}
    return RateLimiter(6000, provider_name="llm", tokens_per_minute=60_000, **kwargs)


def test_defaults_and_validation():
    limiter = RateLimiter(6000, tokens_per_minute=60_000)
    assert limiter.has_token_budget and limiter.tpm == 60_000
    assert limiter.token_burst == 1 == limiter.burst_size  # strict pacing by default
    assert limiter.token_budget_available() == 1
    assert budget(token_burst=5000).token_burst == 5000
    assert not RateLimiter(60).has_token_budget and RateLimiter(60).tpm is None
    for bad in (0, -5, float("nan"), float("inf"), True, "1000"):
        with pytest.raises(ValueError, match="tokens_per_minute"):
            RateLimiter(60, tokens_per_minute=bad)
    with pytest.raises(ValueError, match="token_burst"):
        RateLimiter(60, token_burst=10)  # a burst of a budget that does not exist
    with pytest.raises(ValueError, match="token_burst"):
        budget(token_burst=0)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "10", 2**63])
def test_token_counts_are_whole_numbers(bad):
    limiter = budget()
    with pytest.raises(ValueError, match="tokens"):
        limiter.acquire(tokens=bad)
    with pytest.raises(ValueError, match="tokens"):
        limiter.record_request(tokens=bad)
    assert limiter.total_requests == 0 and limiter.token_budget_available() == 1000


def test_a_reservation_takes_the_request_and_its_tokens_together():
    limiter = budget()
    assert limiter.acquire(timeout=0, tokens=600)
    assert limiter.tokens_available() == 99 and limiter.token_budget_available() == 400


def test_not_enough_tokens_in_time_takes_no_request_either():
    limiter = budget()
    assert limiter.acquire(timeout=0, tokens=1000)  # the token budget is empty now
    ok, waited = _timed(lambda: limiter.acquire(timeout=0.2, tokens=500, fail_fast=True))  # needs 0.5 s
    assert ok is False and waited < 0.05  # the fail-fast form answers at once
    assert limiter.tokens_available() == 99  # the request bucket lost nothing
    assert limiter.token_budget_available() <= 50
    ok, waited = _timed(lambda: limiter.acquire(timeout=0.2, tokens=500))
    assert ok is False and 0.2 <= waited <= 0.2 + SLACK  # stood by for its timeout, holding nothing
    assert limiter.token_budget_available() <= 300  # what refilled meanwhile, nothing more
    assert limiter.acquire(timeout=1, tokens=500)  # its turn came ~0.5 s after the first call


def test_no_request_in_time_takes_no_tokens_either():
    limiter = RateLimiter(60, burst_size=1, tokens_per_minute=60_000, token_burst=1000)  # one request a second
    assert limiter.acquire(timeout=0, tokens=10)
    assert limiter.acquire(timeout=0.2, tokens=10) is False  # the request would come in 1 s
    assert limiter.token_budget_available() >= 990  # the tokens stayed


def test_a_call_larger_than_the_token_burst_waits_in_proportion_and_is_never_refused_forever():
    limiter = budget()
    ok, waited = _timed(lambda: limiter.acquire(timeout=5, tokens=1500))  # 500 beyond the burst
    assert ok is True
    assert 0.45 <= waited <= 0.5 + SLACK
    assert limiter.token_budget_available() <= 100  # spent: only what refilled since it went


def test_settling_gives_back_or_charges_the_difference():
    limiter = budget()
    assert limiter.acquire(timeout=0, tokens=800)
    limiter.record_request(tokens=100)  # used less: 700 back
    assert limiter.token_budget_available() == 900
    assert limiter.get_current_tpm() == 100
    assert limiter.acquire(timeout=0, tokens=100)
    limiter.record_request(tokens=700)  # used more: 600 charged
    assert limiter.token_budget_available() == 200
    assert limiter.get_current_tpm() == 800
    limiter.record_request(tokens=50)  # nothing reserved any more: all 50 are charged
    assert limiter.token_budget_available() == 150


def test_record_request_without_tokens_counts_what_was_reserved():
    limiter = budget()
    assert limiter.acquire(timeout=0, tokens=300)
    limiter.record_request()
    assert limiter.token_budget_available() == 700  # nothing settled
    assert limiter.get_current_tpm() == 300
    with limiter:  # acquire() reserves no tokens; the exit records the request
        pass
    assert limiter.get_current_tpm() == 300 and limiter.get_current_rpm() == 2


def test_a_reservation_is_settled_in_the_thread_that_made_it_or_detached_for_another():
    limiter = budget()
    handed = []
    worker = threading.Thread(target=lambda: handed.append((limiter.acquire(tokens=500), limiter.detach_reservation())))
    worker.start()
    worker.join()
    [(ok, reservation)] = handed
    assert ok and reservation.tokens == 500
    assert limiter.token_budget_available() == 500
    reservation.settle(200)  # from this thread
    assert limiter.token_budget_available() == 800
    assert limiter.get_current_tpm() == 200
    with pytest.raises(RuntimeError, match="already settled"):
        reservation.settle(200)
    with pytest.raises(KeyError):
        limiter.detach_reservation()  # this thread made none
    with pytest.raises(ValueError, match="used"):
        limiter.acquire(tokens=10) and limiter.detach_reservation().settle(-3)


def test_threads_keep_their_own_reservations():
    limiter = budget(token_burst=10_000)
    barrier = threading.Barrier(8)

    def call(i):
        assert limiter.acquire(timeout=5, tokens=1000)
        barrier.wait()  # every thread holds its reservation before any settles
        limiter.record_request(tokens=i * 10)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert limiter.get_current_tpm() == sum(i * 10 for i in range(8))
    assert limiter.token_budget_available() >= 10_000 - sum(i * 10 for i in range(8)) - 5  # refills meanwhile


def test_many_threads_through_the_queue_keep_both_budgets(tiny_switch_interval):
    """32 threads ask for 1-100 tokens with short timeouts (some give up, some are refused at once),
    settle with what they "used", while the main thread gives tokens back and changes the token
    rate: no second holds more requests than the rate allows, the tokens taken stay within the
    burst plus what refilled at the fastest rate set, and nobody is left queued."""
    limiter = RateLimiter(3000, burst_size=5, tokens_per_minute=60_000, token_burst=200)  # 50 req/s, 1000 tok/s
    admitted: list[tuple[float, int]] = []  # (when, tokens used)
    lock = threading.Lock()
    stop = time.monotonic() + 2.0
    refused = [0]

    def work(seed):
        rng = random.Random(seed)
        while time.monotonic() < stop:
            tokens = rng.randint(1, 100)
            if limiter.acquire(timeout=rng.choice([0, 0.05, 0.3, 1.0]), tokens=tokens):
                used = rng.randint(0, tokens)
                with lock:
                    admitted.append((time.monotonic(), used))
                limiter.record_request(tokens=used)
            else:
                with lock:
                    refused[0] += 1
                time.sleep(0.01)

    threads = [start_thread(work, i) for i in range(32)]
    t0 = time.monotonic()
    fast = False
    while time.monotonic() < stop:
        limiter.set_tokens_per_minute(120_000 if fast else 60_000)
        fast = not fast
        time.sleep(0.05)
    for thread in threads:
        thread.join(10)
    elapsed = time.monotonic() - t0
    stamps = sorted(t for t, _ in admitted)
    assert refused[0] > 0 and len(stamps) > 50
    for i, start in enumerate(stamps):  # every 1-s window: burst + 50 (+1 for the window's edges)
        assert bisect.bisect_right(stamps, start + 1.0) - i <= 5 + 50 + 1
    # What the calls used (settled: the rest went back) stays within the token burst plus the
    # refill at the fastest rate set, plus one call reserved at the very end.
    assert sum(n for _, n in admitted) <= 200 + 2000 * elapsed + 100
    assert limiter.waiting == 0


def test_stats_gain_the_token_keys_only_with_a_budget():
    limiter = budget()
    assert limiter.acquire(tokens=250)
    limiter.record_request(tokens=250)
    stats = limiter.get_stats()
    assert stats["tpm_limit"] == 60_000 and stats["current_tpm"] == 250
    assert "tpm_limit" not in RateLimiter(60).get_stats()


def test_a_providers_remaining_tokens_cap_the_budget():
    limiter = budget()
    limiter.on_response(200, {"x-ratelimit-remaining-tokens": "123"})
    assert limiter.token_budget_available() == 123


def test_a_pause_empties_the_token_budget_too():
    limiter = budget()
    limiter.pause(0.2)
    assert limiter.acquire(timeout=2, tokens=1)
    assert limiter.token_budget_available() <= 30  # 1 at the end, plus what refilled during the jitter


def test_the_yaml_key_rate_limit_tpm():
    manager = ProviderRateLimitManager.from_config(
        {
            "providers": {
                "writer": {"name": "openai", "rate_limit_rpm": 500, "rate_limit_tpm": 200_000},
                "critic": {
                    "name": "openai",
                    "rate_limit_rpm": 500,
                    "rate_limit_tpm": 90_000,
                    "rate_limit_shared_key": "k",
                },
                "judge": {
                    "name": "openai",
                    "rate_limit_rpm": 500,
                    "rate_limit_tpm": 150_000,
                    "rate_limit_shared_key": "k",
                },
                "pool": {"name": "anthropic", "max_concurrent_calls": 8, "rate_limit_tpm": 100_000},
            }
        }
    )
    writer = manager.limiter_for("writer")
    assert writer.tpm == 200_000 and writer.get_stats()["tpm_limit"] == 200_000
    assert manager.limiter_for("critic").tpm == 90_000  # a shared limiter takes the smallest budget
    assert manager.limiter_for("critic") is manager.limiter_for("judge")
    assert any("rate_limit_tpm 100000 is ignored" in w for w in manager.config.warnings)
    with pytest.raises(ConfigError, match="rate_limit_tpm"):
        ProviderRateLimitManager.from_config({"providers": {"w": {"name": "openai", "rate_limit_tpm": -1}}})


def test_get_limiter_builds_the_budget_from_omnigens_call():
    manager = ProviderRateLimitManager()
    config = {"name": "openai", "rate_limit_rpm": 300, "rate_limit_tpm": 40_000}
    limiter = manager.get_limiter("openai", config, role="writer")
    assert limiter.tpm == 40_000
    assert manager.get_limiter("openai", config, role="writer") is limiter


def _timed(call):
    t0 = time.monotonic()
    return call(), time.monotonic() - t0
