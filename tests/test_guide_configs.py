"""Every configuration of the rate-limiting guide (examples/) behaves as the guide documents."""

import logging
from pathlib import Path

import pytest

from omnilimit import ConcurrencyLimiter, ProviderRateLimitManager, RateLimiter

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name):
    return ProviderRateLimitManager.from_yaml(EXAMPLES / name)


def hold(limiter, count):
    """Acquires `count` slots without waiting; returns how many it got."""
    got = sum(limiter.acquire(timeout=0) for _ in range(count))
    return got


def test_every_example_loads():
    for path in sorted(EXAMPLES.glob("*.yaml")):
        manager = ProviderRateLimitManager.from_yaml(path)
        assert manager.config is not None and manager.config.roles, path


def test_quick_start_options():
    concurrency = load("quickstart_concurrency.yaml").limiter_for("user_followup")
    assert isinstance(concurrency, ConcurrencyLimiter) and concurrency.max_concurrent == 50
    rate = load("quickstart_rpm.yaml").limiter_for("user_followup")
    assert isinstance(rate, RateLimiter) and rate.get_stats()["rpm_limit"] == 500


def test_example1_simple_concurrency_gives_each_role_fifty():
    manager = load("example1_simple_concurrency.yaml")
    a, b = manager.limiter_for("user_followup"), manager.limiter_for("assistant_response")
    assert a is not b
    assert a.name == "openai_gpt-4o-mini_user_followup" and b.name == "openai_gpt-4o-mini_assistant_response"
    assert (a.max_concurrent, b.max_concurrent) == (50, 50)
    assert manager.config.parallel_workers == 10


def test_example2_auto_detection():
    manager = load("example2_rpm_auto_detection.yaml")
    openai, anthropic = manager.limiter_for("user_followup"), manager.limiter_for("assistant_response")
    assert isinstance(openai, RateLimiter) and openai.rpm == 500  # gpt-4o-mini
    assert isinstance(anthropic, RateLimiter) and anthropic.rpm == 50  # claude-3-haiku
    assert set(manager.get_all_stats()) == {
        "openai_gpt-4o-mini_user_followup",
        "anthropic_claude-3-haiku_assistant_response",
    }


def test_example3_custom_rpm_overrides_the_default():
    manager = load("example3_custom_rpm.yaml")
    a, b = manager.limiter_for("user_followup"), manager.limiter_for("assistant_response")
    assert a is not b and a.rpm == b.rpm == 300


def test_example4_shared_rate_limit_is_one_limiter():
    manager = load("example4_shared_rate_limit.yaml")
    a, b = manager.limiter_for("user_followup"), manager.limiter_for("assistant_response")
    assert a is b and isinstance(a, RateLimiter) and a.rpm == 500
    assert list(manager.get_all_stats()) == ["my_openai_account"]
    # One budget: what one role takes, the other cannot.
    burst = a.burst_size
    assert hold(a, burst) == burst
    assert b.acquire(timeout=0) is False


def test_example5_concurrency_wins_and_the_rpm_is_ignored_with_a_warning(caplog):
    caplog.set_level(logging.WARNING, logger="omnilimit")
    limiter = load("example5_mixed_not_recommended.yaml").limiter_for("user_followup")
    assert isinstance(limiter, ConcurrencyLimiter) and limiter.max_concurrent == 50
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "providers.user_followup" in warnings[0] and "rate_limit_rpm 500 is ignored" in warnings[0]


def test_per_role_limiters_allow_fifty_plus_fifty():
    manager = load("per_role_limiters.yaml")
    a, b = manager.limiter_for("user_followup"), manager.limiter_for("assistant_response")
    assert hold(a, 50) == 50 and hold(b, 50) == 50  # 100 at once in total
    assert a.acquire(timeout=0) is False and b.acquire(timeout=0) is False


def test_shared_concurrency_pools_fifty_in_total():
    manager = load("shared_concurrency.yaml")
    a, b = manager.limiter_for("user_followup"), manager.limiter_for("assistant_response")
    assert a is b and a.name == "my_key"
    assert hold(a, 30) == 30 and hold(b, 30) == 20  # one pool of 50
    assert a.get_stats() == {"max_concurrent": 50, "active_calls": 50, "total_requests": 50, "available_slots": 0}


@pytest.mark.parametrize(
    ("name", "limit", "workers"),
    [("production_high_volume.yaml", 100, 20), ("production_conservative.yaml", 25, 5)],
)
def test_production_recommendations(name, limit, workers, caplog):
    caplog.set_level(logging.WARNING, logger="omnilimit")
    manager = load(name)
    assert manager.config.parallel_workers == workers
    for role in ("user_followup", "assistant_response"):
        limiter = manager.limiter_for(role)
        assert isinstance(limiter, ConcurrencyLimiter) and limiter.max_concurrent == limit
        assert limiter.name == f"default_{role}"  # no provider name: the provider "default"
    assert caplog.records == []  # max_concurrent_calls >= parallel_workers: nothing to warn about


def test_a_limit_below_parallel_workers_is_warned_about(tmp_path, caplog):
    path = tmp_path / "tight.yaml"
    path.write_text("providers:\n  writer:\n    max_concurrent_calls: 4\ngeneration:\n  parallel_workers: 16\n")
    caplog.set_level(logging.WARNING, logger="omnilimit")
    ProviderRateLimitManager.from_yaml(path)
    [warning] = [r.getMessage() for r in caplog.records]
    assert "max_concurrent_calls 4" in warning and "parallel_workers 16" in warning
