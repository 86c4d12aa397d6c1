"""ProviderRateLimitManager: omnigen's surface, keys, caching, precedence, aggregates."""

import contextlib
import logging
import threading
import time

import pytest
from helpers import start_thread, wait_until

from omnilimit import ConcurrencyLimiter, ConfigError, LimiterClosed, ProviderRateLimitManager, RateLimiter

MINI = {"name": "openai", "model": "gpt-4o-mini"}


@pytest.mark.parametrize(
    ("provider", "config", "role", "key"),
    [
        ("openai", {"model": "gpt-4o-mini"}, "user_followup", "openai_gpt-4o-mini_user_followup"),
        ("openai", {"model": "gpt-4o-mini"}, None, "openai_gpt-4o-mini"),
        ("openai", {}, "user_followup", "openai_user_followup"),
        ("openai", None, None, "openai"),
        ("openrouter", {"model": "meta-llama/llama-3:70b"}, "r", "openrouter_meta-llama_llama-3_70b_r"),
        ("openai", {"model": "gpt-4o", "rate_limit_shared_key": "acct"}, "r", "acct"),
        (None, {}, "r", "default_r"),
    ],
)
def test_limiter_keys(provider, config, role, key):
    manager = ProviderRateLimitManager()
    manager.get_limiter(provider, config, role)
    assert list(manager.get_all_stats()) == [key]


def test_limiters_are_cached_per_key():
    manager = ProviderRateLimitManager()
    first = manager.get_limiter("openai", {**MINI, "max_concurrent_calls": 50, "api_key": "a"}, "user_followup")
    again = manager.get_limiter("openai", {**MINI, "max_concurrent_calls": 50, "api_key": "b"}, "user_followup")
    other_role = manager.get_limiter("openai", {**MINI, "max_concurrent_calls": 50}, "assistant_response")
    assert first is again and first is not other_role
    assert manager.limiters == {
        "openai_gpt-4o-mini_user_followup": first,
        "openai_gpt-4o-mini_assistant_response": other_role,
    }


def test_sixty_four_threads_asking_for_one_key_get_one_object(tiny_switch_interval):
    manager = ProviderRateLimitManager()
    results = []
    barrier = threading.Barrier(64)

    def ask():
        barrier.wait()
        results.append(manager.get_limiter("openai", {**MINI, "max_concurrent_calls": 5}, "user_followup"))

    threads = [start_thread(ask) for _ in range(64)]
    for thread in threads:
        thread.join(10)
    assert len(results) == 64 and len({id(limiter) for limiter in results}) == 1
    assert len(manager.limiters) == 1


def test_concurrency_takes_precedence_and_the_ignored_rpm_is_logged_once(caplog):
    caplog.set_level(logging.WARNING, logger="omnilimit")
    manager = ProviderRateLimitManager()
    config = {**MINI, "max_concurrent_calls": 50, "rate_limit_rpm": 500}
    for _ in range(3):
        limiter = manager.get_limiter("openai", config, "user_followup")
    assert isinstance(limiter, ConcurrencyLimiter) and limiter.max_concurrent == 50
    [warning] = [r.getMessage() for r in caplog.records]
    assert "rate_limit_rpm 500 is ignored" in warning and "user_followup" in warning


def test_rpm_limiters_take_the_configured_or_the_auto_detected_limit():
    manager = ProviderRateLimitManager()
    assert manager.get_limiter("openai", {**MINI, "rate_limit_rpm": 300}, "a").rpm == 300
    assert manager.get_limiter("openai", MINI, "b").rpm == 500
    assert manager.get_limiter("openai", {"model": "gpt-3.5-turbo"}, "c").rpm == 3500
    assert manager.get_limiter("anthropic", {"model": "claude-3-haiku"}, "d").rpm == 50
    assert manager.get_limiter("openrouter", {"model": "anything"}, "e").rpm == 200
    assert manager.get_limiter("somewhere-else", None, "f").rpm == 60
    assert manager.get_limiter("openai", {**MINI, "rate_limit_rpm": 0.5}, "g").rpm == 0.5


def test_an_existing_key_keeps_its_limiter_and_warns_once_about_a_different_config(caplog):
    caplog.set_level(logging.WARNING, logger="omnilimit")
    manager = ProviderRateLimitManager()
    shared = {"rate_limit_shared_key": "acct"}
    first = manager.get_limiter("openai", {**shared, "max_concurrent_calls": 50}, "a")
    for _ in range(3):
        assert manager.get_limiter("openai", {**shared, "max_concurrent_calls": 25}, "b") is first
        assert manager.get_limiter("openai", {**shared, "rate_limit_rpm": 100}, "c") is first
    assert first.max_concurrent == 50
    [warning] = [r.getMessage() for r in caplog.records]
    assert "'acct' already exists (max_concurrent_calls 50)" in warning and "max_concurrent_calls 25" in warning


def test_creation_is_logged_with_the_limit(caplog):
    caplog.set_level(logging.INFO, logger="omnilimit")
    manager = ProviderRateLimitManager()
    manager.get_limiter("openai", {**MINI, "max_concurrent_calls": 50}, "user_followup")
    manager.get_limiter("anthropic", {"model": "claude-3-haiku"}, "assistant_response")
    assert [r.getMessage() for r in caplog.records] == [
        "Created concurrency limiter: 'openai_gpt-4o-mini_user_followup' with max 50 concurrent calls "
        "(provider=openai, model=gpt-4o-mini)",
        "Created rate limiter: 'anthropic_claude-3-haiku_assistant_response' with 50 RPM "
        "(provider=anthropic, model=claude-3-haiku)",
    ]


def test_older_api_acquire_and_record_request_by_provider_name():
    manager = ProviderRateLimitManager()
    assert manager.acquire("openai", timeout=0) is True
    manager.record_request("openai")
    limiter = manager.get_limiter("openai")
    assert isinstance(limiter, RateLimiter) and limiter.total_requests == 1 and limiter.get_current_rpm() == 1
    with pytest.raises(ValueError, match="timeout"):
        manager.acquire("openai", timeout=-1)


def test_get_rpm_adds_up_both_kinds():
    manager = ProviderRateLimitManager()
    concurrency = manager.get_limiter("openai", {**MINI, "max_concurrent_calls": 5}, "a")
    rate = manager.get_limiter("anthropic", {"model": "claude-3-haiku", "rate_limit_rpm": 6000}, "b")
    for _ in range(3):
        concurrency.acquire()
        concurrency.release()
    for _ in range(4):
        rate.acquire()
        rate.record_request()
    assert manager.get_rpm() == 7


@pytest.mark.timeout(60)
def test_get_all_stats_never_waits_for_blocked_callers_or_for_creations():
    manager = ProviderRateLimitManager()
    concurrency = manager.get_limiter("openai", {**MINI, "max_concurrent_calls": 1}, "a")
    rate = manager.get_limiter("openai", {**MINI, "rate_limit_rpm": 1}, "b")
    concurrency.acquire()
    rate.acquire()

    def blocked():
        with contextlib.suppress(LimiterClosed):
            concurrency.acquire(timeout=None)

    waiters = [start_thread(blocked) for _ in range(8)]
    start_thread(rate.acquire, 120)  # sleeps towards a token a minute away (a daemon thread)
    wait_until(lambda: concurrency.waiting == 8)
    stop = threading.Event()

    def create():  # new limiters (up to 200), then lookups, while stats are read
        i = 0
        while not stop.is_set():
            manager.get_limiter("openai", {"max_concurrent_calls": 3}, f"role{i % 200}")
            i += 1

    creator = start_thread(create)
    started = time.monotonic()
    for _ in range(50):
        stats = manager.get_all_stats()
        manager.get_rpm()
    assert time.monotonic() - started < 5
    stop.set()
    creator.join(5)
    assert stats["openai_gpt-4o-mini_a"]["active_calls"] == 1
    assert stats["openai_gpt-4o-mini_b"]["tokens_available"] == 0
    concurrency.close()
    for waiter in waiters:
        waiter.join(5)


def test_limiter_for_needs_a_loaded_role():
    manager = ProviderRateLimitManager.from_config({"providers": {"writer": {"max_concurrent_calls": 2}}})
    assert manager.limiter_for("writer").max_concurrent == 2
    with pytest.raises(KeyError, match="unknown role 'reader'; the configuration's roles: writer"):
        manager.limiter_for("reader")
    with pytest.raises(KeyError, match="no configuration was loaded"):
        ProviderRateLimitManager().limiter_for("writer")


def test_get_limiter_finds_the_limiters_of_a_loaded_configuration():
    config = {"providers": {"text_enhancement": {**MINI, "max_concurrent_calls": 4, "api_key": "k"}}}
    manager = ProviderRateLimitManager.from_config(config)
    # What omnigen's generator passes: the provider name, the role's whole settings and the role.
    provider_config = config["providers"]["text_enhancement"]
    limiter = manager.get_limiter(provider_config["name"], provider_config, role="text_enhancement")
    assert limiter is manager.limiter_for("text_enhancement")
    assert len(manager.limiters) == 1


def test_get_limiter_validates_every_new_configuration():
    manager = ProviderRateLimitManager()
    manager.get_limiter("openai", {"rate_limit_shared_key": "k", "max_concurrent_calls": 5}, "a")
    with pytest.raises(ConfigError, match=r"<provider_config>: providers\.b\.max_concurrent_calls"):
        manager.get_limiter("openai", {"rate_limit_shared_key": "k", "max_concurrent_calls": -1}, "b")
    with pytest.raises(ConfigError, match="must be a mapping"):
        manager.get_limiter("openai", ["max_concurrent_calls", 5], "c")
    unhashable = {"max_concurrent_calls": 5, "rate_limit_shared_key": "k", "model": None, "extra": [1]}
    assert manager.get_limiter("openai", unhashable, "a").max_concurrent == 5
