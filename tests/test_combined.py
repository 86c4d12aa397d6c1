"""rate_limit_mode: combined — concurrency, RPM and TPM enforced together, all-or-nothing."""

import threading
import time

import pytest
from helpers import start_thread, wait_until

from omnilimit import CombinedLimiter, ConfigError, ProviderRateLimitManager


def test_every_dimension_holds():
    limiter = CombinedLimiter(2, 600, name="c", burst_size=5, tokens_per_minute=60_000, token_burst=1000)
    assert limiter.acquire(timeout=0, tokens=100) and limiter.acquire(timeout=0, tokens=100)
    assert limiter.acquire(timeout=0) is False  # the concurrency cap
    limiter.release(tokens=50)
    assert limiter.active_calls == 1
    assert limiter.rate.get_current_tpm() == 50  # settled and recorded


def test_a_caller_that_times_out_on_the_rate_holds_no_slot():
    limiter = CombinedLimiter(4, 60, name="c", burst_size=1)  # one request a second
    assert limiter.acquire(timeout=0)
    t0 = time.monotonic()
    assert limiter.acquire(timeout=0.2) is False  # a slot is free, the rate is not
    assert 0.2 <= time.monotonic() - t0 <= 0.2 + 0.1  # False only once the timeout has passed
    assert limiter.active_calls == 1  # the slot taken for it was given back
    assert limiter.rate.tokens_available() == 0
    assert limiter.concurrency.total_requests == 1  # the slot given back is not counted as a call
    t0 = time.monotonic()
    assert limiter.acquire(timeout=0.2, fail_fast=True) is False
    assert time.monotonic() - t0 < 0.1


def test_a_caller_standing_by_on_the_rate_holds_no_slot_and_goes_when_its_turn_comes_within_reach():
    limiter = CombinedLimiter(1, 6, name="c")  # one request every 10 s, one slot
    assert limiter.acquire(timeout=0)
    limiter.release()
    outcome = {}

    def wait():
        t0 = time.monotonic()
        outcome["ok"] = limiter.acquire(timeout=5)
        outcome["after"] = time.monotonic() - t0
        limiter.release()

    thread = start_thread(wait)
    time.sleep(0.3)
    assert limiter.active_calls == 0  # standing by on the rate, not holding the only slot
    assert limiter.concurrency.acquire(timeout=0)  # which another caller can take meanwhile
    limiter.concurrency.release()
    limiter.set_rate(600)  # its turn (10 s away) comes within reach
    thread.join(5)
    assert outcome["ok"] is True and 0.3 <= outcome["after"] <= 0.5


def test_a_caller_that_times_out_on_the_slot_books_no_request():
    # Slow refills (a request a second, 10 tokens a second), so the figures hold still.
    limiter = CombinedLimiter(1, 60, name="c", burst_size=10, tokens_per_minute=600, token_burst=1000)
    assert limiter.acquire(tokens=10)
    assert limiter.acquire(timeout=0.1, tokens=500) is False
    assert limiter.rate.tokens_available() == 9
    assert 990 <= limiter.rate.token_budget_available() <= 992


def test_the_timeout_covers_both_waits():
    limiter = CombinedLimiter(1, 60, name="c", burst_size=1)
    assert limiter.acquire()
    start_thread(lambda: (time.sleep(0.3), limiter.release()))
    t0 = time.monotonic()
    # The slot comes after 0.3 s, the rate's next request 1 s after the first: beyond the 0.8 s
    # timeout, so the slot is passed on and the caller waits out its timeout holding nothing.
    assert limiter.acquire(timeout=0.8) is False
    assert 0.8 <= time.monotonic() - t0 <= 0.9
    assert limiter.active_calls == 0


def test_omnigens_release_after_a_failed_acquire_is_ignored():
    limiter = CombinedLimiter(1, 6000, name="c")
    assert limiter.acquire()
    results = []

    def generator_call():  # what omnigen's generators do
        results.append(limiter.acquire(timeout=0.05))
        limiter.release()

    thread = threading.Thread(target=generator_call)
    thread.start()
    thread.join()
    assert results == [False]
    assert limiter.active_calls == 1  # the holder's slot was not freed by the stray release
    assert limiter.over_release_count == 1
    limiter.release()
    assert limiter.active_calls == 0


def test_context_manager_and_stats():
    limiter = CombinedLimiter(1, 600, name="c", tokens_per_minute=6000)
    with limiter:
        assert limiter.active_calls == 1
        assert limiter.acquire(timeout=0) is False  # full
    assert limiter.active_calls == 0
    stats = limiter.get_stats()
    assert stats["max_concurrent"] == 1 and stats["rpm_limit"] == 600 and stats["tpm_limit"] == 6000
    assert stats["total_requests"] == 1 and stats["available_slots"] == 1
    assert "concurrency_waiting" in limiter.metrics() and "rate_wait_p99_s" in limiter.metrics()


def test_a_429_pauses_both_parts():
    limiter = CombinedLimiter(2, 6000, name="c")
    assert limiter.on_rate_limited(retry_after=0.5) == pytest.approx(0.5, abs=0.01)
    assert limiter.concurrency.paused_for > 0.4 and limiter.rate.paused_for > 0.4
    assert limiter.acquire(timeout=0) is False and limiter.active_calls == 0


def test_the_yaml_opt_in_and_the_default_precedence():
    manager = ProviderRateLimitManager.from_config(
        {
            "providers": {
                "both": {
                    "name": "openai",
                    "max_concurrent_calls": 8,
                    "rate_limit_rpm": 500,
                    "rate_limit_tpm": 90_000,
                    "rate_limit_mode": "combined",
                },
                "guide": {"name": "openai", "model": "m", "max_concurrent_calls": 8, "rate_limit_rpm": 500},
            }
        }
    )
    both = manager.limiter_for("both")
    assert isinstance(both, CombinedLimiter)
    assert (both.max_concurrent, both.rpm, both.tpm) == (8, 500, 90_000)
    guide = manager.limiter_for("guide")
    assert not isinstance(guide, CombinedLimiter) and guide.max_concurrent == 8  # concurrency wins
    assert any("rate_limit_rpm 500 is ignored" in w for w in manager.config.warnings)
    assert not any("providers.both:" in w and "ignored" in w for w in manager.config.warnings)
    with pytest.raises(ConfigError, match="rate_limit_mode"):
        ProviderRateLimitManager.from_config({"providers": {"x": {"name": "a", "rate_limit_mode": "both"}}})


def test_get_limiter_and_reload_with_combined_mode():
    manager = ProviderRateLimitManager()
    config = {"name": "openai", "max_concurrent_calls": 4, "rate_limit_rpm": 120, "rate_limit_mode": "combined"}
    limiter = manager.get_limiter("openai", config, role="w")
    assert isinstance(limiter, CombinedLimiter) and limiter.rpm == 120
    assert manager.get_limiter("openai", config, role="w") is limiter
    reloaded = ProviderRateLimitManager.from_config({"providers": {"w": config}})
    same = reloaded.limiter_for("w")
    changes = reloaded.reload({"providers": {"w": {**config, "max_concurrent_calls": 6, "rate_limit_rpm": 240}}})
    assert reloaded.limiter_for("w") is same and (same.max_concurrent, same.rpm) == (6, 240)
    assert changes == [
        "openai_w: combined: max_concurrent_calls 4 and 120 RPM -> combined: max_concurrent_calls 6 and 240 RPM"
    ]


def test_many_threads_never_exceed_any_dimension(tiny_switch_interval):
    limiter = CombinedLimiter(3, 3000, name="c", burst_size=5)  # 50 requests a second
    inside = []
    peak = []
    lock = threading.Lock()
    admitted = []
    stop = time.monotonic() + 1.0

    def work():
        while time.monotonic() < stop:
            if not limiter.acquire(timeout=0.2):
                continue
            with lock:
                inside.append(1)
                peak.append(len(inside))
                admitted.append(time.monotonic())
            time.sleep(0.001)
            with lock:
                inside.pop()
            limiter.release()

    threads = [start_thread(work) for _ in range(12)]
    for thread in threads:
        thread.join(10)
    wait_until(lambda: limiter.active_calls == 0)
    assert max(peak) <= 3
    assert len(admitted) <= 5 + 50 * 1.3 + 2  # burst + rate over the run (and the last waits)


def test_a_release_after_a_failed_acquire_is_ignored_and_counted_not_taken_from_another_thread():
    """omnigen releases in a `finally` even after a failed acquire. When the rate part refused
    (the slot was had, then given back), that release freed another thread's slot and counted
    nothing; it is now ignored and counted, as the concurrency limiter does."""
    limiter = CombinedLimiter(2, 1, name="finally")  # one request a minute: the second is refused
    holder = threading.Thread(target=lambda: limiter.acquire(timeout=0))
    holder.start()
    holder.join()
    assert limiter.active_calls == 1
    assert not limiter.acquire(timeout=0.05)  # a slot, then a rate turn a minute away: given back
    limiter.release()  # the caller's `finally`
    assert limiter.active_calls == 1  # the other thread's slot stays held
    assert limiter.over_release_count == 1
    assert limiter.rate.total_requests == 1  # no request recorded for it


def test_a_release_of_a_slot_another_thread_acquired_frees_it():
    limiter = CombinedLimiter(2, 600, name="handed-over")
    holder = threading.Thread(target=lambda: limiter.acquire(timeout=1))
    holder.start()
    holder.join()
    limiter.release()  # the work was handed to this thread, which releases it
    assert limiter.active_calls == 0 and limiter.over_release_count == 0
    limiter.release()  # nothing held anywhere: ignored and counted
    assert limiter.active_calls == 0 and limiter.over_release_count == 1
