"""@limiter.limit and manager.limit(role): the bare form, limit(), limit(timeout=..., tokens=...),
for def and async def functions, on every limiter kind; timeouts, release on error, tokens taken,
arguments checked at decoration, and no message naming an internal class."""

import asyncio
import functools
import inspect
import logging
import threading
import time

import pytest
from helpers import need, start_thread, wait_until

from omnilimit import (
    CombinedLimiter,
    ConcurrencyLimiter,
    LimiterTimeout,
    ProviderRateLimitManager,
    RateLimiter,
)

GENEROUS = 10.0  # an upper bound on a short wait that only a stalled machine could reach
INTERNAL = "AsyncLimiting"


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


# A fast limiter of each kind: a call goes at once, so a form's behaviour shows without waits.
KINDS = {
    "concurrency": lambda: ConcurrencyLimiter(2, name="c"),
    "rate": lambda: RateLimiter(6000, burst_size=10, provider_name="r"),
    "rate_tpm": lambda: RateLimiter(
        6000, burst_size=10, provider_name="t", tokens_per_minute=600_000, token_burst=100_000
    ),
    "combined": lambda: CombinedLimiter(2, 6000, name="b", burst_size=10),
    "combined_tpm": lambda: CombinedLimiter(
        2, 6000, name="bt", burst_size=10, tokens_per_minute=600_000, token_burst=100_000
    ),
}
TAKES_TOKENS = {"concurrency": False, "rate": True, "rate_tpm": True, "combined": True, "combined_tpm": True}
FORMS = {
    "bare": lambda limiter: limiter.limit,
    "called": lambda limiter: limiter.limit(),
    "timeout": lambda limiter: limiter.limit(timeout=5),
    "timeout_none": lambda limiter: limiter.limit(timeout=None),
    "timeout_tokens": lambda limiter: limiter.limit(timeout=5, tokens=800),
    "tokens": lambda limiter: limiter.limit(tokens=800),
    "direct": lambda limiter: functools.partial(limiter.limit, timeout=5),  # limiter.limit(function, timeout=5)
}


def in_use(limiter):
    """Slots held now (0 for a rate limiter, which holds none)."""
    return getattr(limiter, "active_calls", 0)


def recorded(limiter):
    """Requests recorded in the last minute (a rate limiter records on leaving; a concurrency
    limiter counts its releases)."""
    return limiter.get_current_rpm()


# ------------------------------------------------------------------------------------------------
# Every form, sync and async, on every kind


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("kind", KINDS)
def test_every_form_runs_sync_and_async_functions_under_the_limiter(kind, form):
    limiter = KINDS[kind]()
    if "tokens" in form and not TAKES_TOKENS[kind]:
        with pytest.raises(ValueError, match=r"^ConcurrencyLimiter\.limit\(.*tokens=800\): tokens does not apply"):
            FORMS[form](limiter)  # where the decorator is written, not at the first call
        return
    decorate = FORMS[form](limiter)
    seen = []

    def sync_call(x):
        """Doubles."""
        seen.append(in_use(limiter))
        return x * 2

    async def async_call(x):
        seen.append(in_use(limiter))
        await asyncio.sleep(0)
        return x * 3

    wrapped_sync = decorate(sync_call)
    wrapped_async = decorate(async_call)
    assert in_use(limiter) == 0 and recorded(limiter) == 0  # decorating takes nothing

    assert wrapped_sync(2) == 4
    assert run(wrapped_async(2)) == 6
    holds_slots = kind.startswith(("concurrency", "combined"))
    assert seen == ([1, 1] if holds_slots else [0, 0])  # a slot held during each call
    assert in_use(limiter) == 0  # and freed after it
    assert recorded(limiter) == 2  # each call recorded (a rate limiter's request, a release)
    assert wrapped_sync.__name__ == "sync_call" and wrapped_sync.__doc__ == "Doubles."
    assert wrapped_sync.__wrapped__ is sync_call and wrapped_async.__name__ == "async_call"
    assert inspect.iscoroutinefunction(wrapped_async) and not inspect.iscoroutinefunction(wrapped_sync)


def test_tokens_on_a_rate_limiter_without_a_budget_are_ignored_as_acquire_ignores_them():
    limiter = RateLimiter(6000, burst_size=10, provider_name="r")
    assert limiter.acquire(timeout=0, tokens=800)  # what the decorator mirrors

    @limiter.limit(timeout=0, tokens=10**9)
    def call():
        return "done"

    assert call() == "done" and limiter.total_requests == 2 and "current_tpm" not in limiter.get_stats()


# ------------------------------------------------------------------------------------------------
# A timeout that expires


def _held_concurrency():
    limiter = ConcurrencyLimiter(1, name="c")
    assert limiter.acquire(timeout=0)
    return limiter, limiter.release


def _held_rate():
    limiter = RateLimiter(60, provider_name="r")  # one request a second, burst 1
    assert limiter.acquire(timeout=0)
    return limiter, lambda: None


def _held_combined():
    limiter = CombinedLimiter(1, 6000, name="b", burst_size=10)
    assert limiter.acquire(timeout=0)
    return limiter, limiter.release


HELD = {"concurrency": _held_concurrency, "rate": _held_rate, "combined": _held_combined}
TIMEOUT_TEXT = {
    "concurrency": "Concurrency limit timeout after 0.2s for c",
    "rate": "Rate limit timeout after 0.2s for r",
    "combined": "Combined limit timeout after 0.2s for b",
}


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("kind", HELD)
def test_a_timeout_that_expires_raises_limiter_timeout_and_holds_nothing(kind, is_async, caplog):
    limiter, release_holder = HELD[kind]()
    before_requests = limiter.get_stats()["total_requests"]
    called = []

    if is_async:

        @limiter.limit(timeout=0.2)
        async def call():
            called.append(1)

        invoke = lambda: run(call())  # noqa: E731
    else:

        @limiter.limit(timeout=0.2)
        def call():
            called.append(1)

        invoke = call
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="omnilimit"), pytest.raises(LimiterTimeout) as raised:
        invoke()
    elapsed = time.monotonic() - started
    assert 0.15 <= elapsed <= GENEROUS
    assert isinstance(raised.value, TimeoutError)
    assert str(raised.value) == TIMEOUT_TEXT[kind]  # `with limiter:`'s text, with this timeout
    # Logged by acquire, as for `with limiter:` (a combined limiter logs the part that timed out).
    assert (TIMEOUT_TEXT[kind] if kind != "combined" else "Concurrency limit timeout after") in caplog.text
    assert called == []
    assert limiter.get_stats()["total_requests"] == before_requests  # nothing taken
    assert in_use(limiter) == (0 if kind == "rate" else 1)  # only the holder's slot
    assert limiter.waiting == 0
    release_holder()
    assert in_use(limiter) == 0


def test_a_timed_out_call_spends_no_tokens():
    limiter = RateLimiter(6000, burst_size=10, provider_name="t", tokens_per_minute=60, token_burst=1000)

    @limiter.limit(timeout=0.1, tokens=1000)
    def call():
        return "done"

    assert call() == "done"  # the whole token bucket
    with pytest.raises(LimiterTimeout, match=r"^Rate limit timeout after 0\.1s for t$"):
        call()  # the next 1000 tokens come in ~1000 s
    stats = limiter.get_stats()
    assert stats["total_requests"] == 1 and stats["current_tpm"] == 1000 and limiter.waiting == 0
    assert limiter.metrics()["timed_out"] == 1


def test_timeout_zero_tries_once():
    limiter, release = _held_concurrency()

    @limiter.limit(timeout=0)
    async def call():
        return "ran"

    with pytest.raises(LimiterTimeout, match=r"^Concurrency limit timeout after 0s for c$"):
        run(call())
    release()
    assert run(call()) == "ran" and limiter.active_calls == 0


def test_timeout_none_waits_until_a_slot_is_freed():
    limiter, release = _held_concurrency()
    results = []

    @limiter.limit(timeout=None)
    def call():
        results.append(limiter.active_calls)

    thread = start_thread(call)
    wait_until(lambda: limiter.waiting == 1)
    assert results == []
    release()
    thread.join(GENEROUS)
    assert results == [1] and limiter.active_calls == 0


def test_a_cancelled_async_call_holds_nothing():
    limiter, release = _held_concurrency()

    @limiter.limit(timeout=30)
    async def call():
        return "ran"

    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(call(), 0.05)

    run(main())
    assert limiter.active_calls == 1 and limiter.waiting == 0
    release()
    assert limiter.active_calls == 0


# ------------------------------------------------------------------------------------------------
# The function's exception


class Boom(Exception):
    pass


@pytest.mark.parametrize(
    ("kind", "form"),
    [
        (kind, form)
        for kind in KINDS
        for form in ("bare", "timeout", "timeout_tokens")
        if TAKES_TOKENS[kind] or form != "timeout_tokens"
    ],
)
def test_the_functions_exception_propagates_and_the_limiter_is_released(kind, form):
    limiter = KINDS[kind]()
    decorate = FORMS[form](limiter)

    @decorate
    def sync_call():
        raise Boom("sync")

    @decorate
    async def async_call():
        await asyncio.sleep(0)
        raise Boom("async")

    with pytest.raises(Boom, match="sync"):
        sync_call()
    with pytest.raises(Boom, match="async"):
        run(async_call())
    assert in_use(limiter) == 0
    assert recorded(limiter) == 2  # released (or recorded) as `with limiter:` does on an error
    if "tpm" in kind and form == "timeout_tokens":
        assert limiter.get_stats()["current_tpm"] == 1600  # the tokens reserved are settled


def test_a_released_slot_goes_to_the_next_caller_after_an_error():
    limiter = ConcurrencyLimiter(1, name="c")

    @limiter.limit(timeout=0)
    def failing():
        raise Boom

    for _ in range(3):  # timeout=0: each call would time out if a slot had leaked
        with pytest.raises(Boom):
            failing()
    assert limiter.active_calls == 0 and limiter.over_release_count == 0


# ------------------------------------------------------------------------------------------------
# Tokens are taken


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("kind", ["rate", "combined"])
def test_tokens_are_taken_from_the_budget(kind, is_async):
    # One token a second, a bucket of 1000: a call of 1000 drains it for ~1000 s.
    if kind == "rate":
        limiter = RateLimiter(6000, burst_size=10, provider_name="t", tokens_per_minute=60, token_burst=1000)
    else:
        limiter = CombinedLimiter(2, 6000, name="t", burst_size=10, tokens_per_minute=60, token_burst=1000)
    part = limiter if kind == "rate" else limiter.rate

    if is_async:

        @limiter.limit(timeout=5, tokens=1000)
        async def call():
            return part.token_budget_available()

        left_during = run(call())
    else:

        @limiter.limit(timeout=5, tokens=1000)
        def call():
            return part.token_budget_available()

        left_during = call()
    assert left_during == 0
    assert limiter.get_stats()["current_tpm"] == 1000  # recorded as reserved on leaving
    assert limiter.acquire(timeout=0, tokens=1) is False  # the bucket is drained
    assert in_use(limiter) == 0


# ------------------------------------------------------------------------------------------------
# Bad arguments fail at decoration, with messages naming the public class


def _function():
    return None


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("timeout", [-1, float("nan"), True, "5", [5]])
def test_a_bad_timeout_is_a_value_error_at_decoration(kind, timeout):
    limiter = KINDS[kind]()
    with pytest.raises(ValueError, match=r"\.limit\(timeout=.*\): timeout must be None or a number") as raised:
        limiter.limit(timeout=timeout)
    assert type(limiter).__name__ in str(raised.value) and INTERNAL not in str(raised.value)
    with pytest.raises(ValueError, match="timeout must be"):
        limiter.limit(_function, timeout=timeout)


@pytest.mark.parametrize("kind", ["rate", "rate_tpm", "combined"])
@pytest.mark.parametrize("tokens", [-1, 1.5, True, "800", 2**63])
def test_a_bad_token_count_is_a_value_error_at_decoration(kind, tokens):
    limiter = KINDS[kind]()
    with pytest.raises(ValueError, match=r"\.limit\(tokens=.*\): tokens must be a whole number") as raised:
        limiter.limit(tokens=tokens)
    assert type(limiter).__name__ in str(raised.value) and INTERNAL not in str(raised.value)


@pytest.mark.parametrize("tokens", [0, 800])
def test_tokens_on_a_concurrency_limiter_are_refused_at_decoration(tokens):
    limiter = ConcurrencyLimiter(2, name="c")
    with pytest.raises(TypeError):
        limiter.acquire(tokens=tokens)  # what the decorator mirrors
    with pytest.raises(ValueError, match=r"^ConcurrencyLimiter\.limit\(.*tokens=.*ConcurrencyLimiter") as raised:
        limiter.limit(timeout=5, tokens=tokens)
    assert "RateLimiter or a CombinedLimiter" in str(raised.value) and INTERNAL not in str(raised.value)
    assert limiter.active_calls == 0


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("misuse", "match"),
    [
        (lambda limiter: limiter.limit(5), r"\.limit\(\) takes the function to decorate.* got 5"),
        (lambda limiter: limiter.limit("writer"), r"\.limit\(\) takes the function to decorate.* got 'writer'"),
        (lambda limiter: limiter.limit(None), r"\.limit\(\) takes the function to decorate.* got None"),
        (lambda limiter: limiter.limit(timout=5), r"\.limit\(\) got an unexpected keyword argument 'timout'"),
        (lambda limiter: limiter.limit(_function, _function), r"\.limit\(\) takes at most one positional"),
        (lambda limiter: limiter.limit(timeout=5)(3), r"\.limit\(timeout=5\) decorates a function.* got 3"),
        (lambda limiter: limiter.limit()(None), r"\.limit\(\) decorates a function.* got None"),
    ],
    ids=["positional-int", "positional-str", "none", "typo", "two-functions", "not-a-function", "called-none"],
)
def test_misuse_is_a_type_error_naming_the_public_class(kind, misuse, match):
    limiter = KINDS[kind]()
    with pytest.raises(TypeError, match=match) as raised:
        misuse(limiter)
    message = str(raised.value)
    assert message.startswith(f"{type(limiter).__name__}.limit(") and INTERNAL not in message


@pytest.mark.parametrize("kind", KINDS)
def test_no_repr_names_an_internal_class(kind):
    limiter = KINDS[kind]()
    public = type(limiter).__name__
    for method in (limiter.limit, limiter.__aenter__, limiter.__aexit__):
        assert INTERNAL not in repr(method) and f"{public}." in repr(method)
    assert type(limiter).limit.__qualname__ == f"{public}.limit"
    decorator = limiter.limit(timeout=5)
    assert INTERNAL not in repr(decorator) and f"{public}.limit(timeout=5)" in repr(decorator)
    assert INTERNAL not in (limiter.limit.__doc__ or "")


# ------------------------------------------------------------------------------------------------
# Coroutine detection through functools.partial and bound methods


def test_a_partial_of_a_coroutine_function_and_an_async_method_are_awaited_under_the_limiter():
    limiter = ConcurrencyLimiter(1, name="c")

    async def add(a, b):
        await asyncio.sleep(0)
        return a + b, limiter.active_calls

    class Client:
        async def fetch(self, x):
            await asyncio.sleep(0)
            return x, limiter.active_calls

        async def __call__(self, x):
            return x, limiter.active_calls

    for decorate in (limiter.limit, limiter.limit(timeout=5)):
        partial_call = decorate(functools.partial(add, 1))
        method_call = decorate(Client().fetch)
        callable_object = decorate(Client())
        assert inspect.iscoroutinefunction(partial_call) and inspect.iscoroutinefunction(method_call)
        assert inspect.iscoroutinefunction(callable_object)
        assert run(partial_call(2)) == (3, 1)
        assert run(method_call("x")) == ("x", 1)
        assert run(callable_object("y")) == ("y", 1)
        assert limiter.active_calls == 0


def test_a_class_with_an_async_call_method_is_called_as_a_sync_function():
    limiter = ConcurrencyLimiter(1, name="c")

    class Client:
        async def __call__(self):
            return None

    make = limiter.limit(timeout=5)(Client)
    assert not inspect.iscoroutinefunction(make)
    assert isinstance(make(), Client) and limiter.active_calls == 0


# ------------------------------------------------------------------------------------------------
# The manager's limit(role, timeout=..., tokens=...)


def _concurrency_manager():
    manager = ProviderRateLimitManager.from_config({"providers": {"openai": {"max_concurrent_calls": 1}}})
    return manager, next(iter(manager._role_keys))


def _token_manager():
    config = {"providers": {"openai": {"rate_limit_rpm": 6000, "rate_limit_tpm": 60}}}
    manager = ProviderRateLimitManager.from_config(config)
    return manager, next(iter(manager._role_keys))


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_manager_limit_takes_a_timeout(is_async):
    manager, role = _concurrency_manager()
    limiter = manager.limiter_for(role)

    if is_async:

        @manager.limit(role, timeout=0.2)
        async def call():
            return limiter.active_calls

        invoke = lambda: run(call())  # noqa: E731
    else:

        @manager.limit(role, timeout=0.2)
        def call():
            return limiter.active_calls

        invoke = call
    assert invoke() == 1 and limiter.active_calls == 0
    assert limiter.acquire(timeout=0)
    started = time.monotonic()
    with pytest.raises(LimiterTimeout, match=r"^Concurrency limit timeout after 0\.2s for "):
        invoke()
    assert 0.15 <= time.monotonic() - started <= GENEROUS
    assert limiter.active_calls == 1
    limiter.release()
    assert invoke() == 1 and limiter.active_calls == 0


def test_manager_limit_takes_tokens():
    manager, role = _token_manager()
    limiter = manager.limiter_for(role)

    @manager.limit(role, timeout=5, tokens=1)
    async def call():
        return "done"

    assert run(call()) == "done"
    assert limiter.get_stats()["current_tpm"] == 1
    assert limiter.acquire(timeout=0, tokens=1) is False  # the token burst is 1: spent


def test_manager_limit_checks_its_arguments_at_decoration():
    manager, role = _concurrency_manager()
    with pytest.raises(ValueError, match=r"^ProviderRateLimitManager\.limit\('openai', timeout=-1\): timeout must"):
        manager.limit(role, timeout=-1)
    with pytest.raises(ValueError, match=r"tokens must be a whole number"):
        manager.limit(role, tokens=-5)
    with pytest.raises(ValueError, match=r"^ProviderRateLimitManager\.limit\('openai', tokens=5\): .*Concurrency"):
        manager.limit(role, tokens=5)  # the role is known: its limiter takes no tokens
    with pytest.raises(ValueError, match="timeout must"):
        manager.limit("no-such-role", timeout="soon")  # checked even for a role not (yet) known
    with pytest.raises(TypeError, match=r"^ProviderRateLimitManager\.limit\(\) takes the role first"):
        manager.limit(_function)  # @manager.limit without a role
    with pytest.raises(TypeError, match=r"ProviderRateLimitManager\.limit\('openai'\) decorates a function"):
        manager.limit(role)(42)
    with pytest.raises(TypeError) as raised:
        manager.limit(role, 5)
    assert INTERNAL not in str(raised.value)


def test_manager_limit_checks_tokens_at_each_call_for_a_role_not_yet_known_or_reloaded():
    manager, role = _token_manager()

    @manager.limit("later", tokens=1)  # unknown now: KeyError at the call, as without tokens
    def later():
        return None

    with pytest.raises(KeyError, match="later"):
        later()

    @manager.limit(role, timeout=5, tokens=1)
    def call():
        return "done"

    assert call() == "done"
    manager.reload({"providers": {"openai": {"max_concurrent_calls": 1}}})  # the role becomes a concurrency limiter
    with pytest.raises(ValueError, match="tokens does not apply to a ConcurrencyLimiter"):
        call()
    assert manager.limiter_for(role).active_calls == 0


def test_manager_limit_without_keywords_keeps_the_limiters_default():
    manager, role = _concurrency_manager()
    limiter = manager.limiter_for(role)

    @manager.limit(role)
    def call():
        return limiter.active_calls

    assert call() == 1 and limiter.active_calls == 0


# ------------------------------------------------------------------------------------------------
# Redis backends


def test_the_redis_limiters_take_the_decorators_keywords(redis_url, unique_name):
    need("redis")
    rate = RateLimiter(6000, burst_size=10, provider_name=unique_name, backend=redis_url)
    concurrency = ConcurrencyLimiter(1, name=unique_name, backend=redis_url)
    assert rate.store is not None and concurrency.store is not None

    @rate.limit(timeout=5, tokens=800)  # acquire(tokens=...) is accepted (and ignored) there
    def rate_call():
        return "rate"

    @concurrency.limit(timeout=0.2)
    async def concurrency_call():
        return concurrency.active_calls

    assert rate_call() == "rate" and rate.total_requests == 1
    assert run(concurrency_call()) == 1 and concurrency.active_calls == 0
    with pytest.raises(ValueError, match=r"^ConcurrencyLimiter\.limit\(tokens=5\)"):
        concurrency.limit(tokens=5)
    assert "ConcurrencyLimiter.limit" in repr(concurrency.limit)

    held = threading.Event()
    done = threading.Event()

    def holder():
        with concurrency:
            held.set()
            done.wait(GENEROUS)

    thread = start_thread(holder)
    assert held.wait(GENEROUS)
    try:
        with pytest.raises(LimiterTimeout, match=rf"^Concurrency limit timeout after 0\.2s for {unique_name}$"):
            run(concurrency_call())
    finally:
        done.set()
        thread.join(GENEROUS)
    assert concurrency.active_calls == 0
    concurrency.close()
    rate.close()
