"""A limiter's native core with a store (cpp/bindings/store.hpp): the store decides, the core counts
and reports, the same for every store. A scripted store stands in for Redis here; the Redis stores
are tested against a real server in test_redis.py."""

import pytest

from omnilimit import LimiterTimeout, _core


class ScriptedStore:
    """Answers acquire() from a script and records every call."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.calls = []
        self.figures = {}

    def acquire(self, limiter, *args):
        self.calls.append(("acquire", limiter, args))
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def release(self, limiter):
        self.calls.append(("release", limiter))
        return self.answers.pop(0)

    def figure(self, name, local, *args):
        self.calls.append(("figure", name, local, args))
        return self.figures.get(name, local)


class Reports:
    def __init__(self):
        self.timeouts = []
        self.over_releases = 0

    def on_timeout(self, timeout):
        self.timeouts.append(timeout)
        return f"timed out after {timeout}s"

    def on_over_release(self):
        self.over_releases += 1


def concurrency_core(store, reports):
    return _core.ConcurrencyCore(3, store=store, on_timeout=reports.on_timeout, on_over_release=reports.on_over_release)


def test_the_store_decides_acquire_and_gets_the_callers_arguments():
    store = ScriptedStore(True, True, False)
    reports = Reports()
    core = concurrency_core(store, reports)
    assert core.acquire() is True
    assert core.acquire(timeout=5) is True
    assert core.acquire(2.5) is False
    assert [call[2] for call in store.calls] == [(), (5,), (2.5,)]
    assert all(call[1] is core for call in store.calls)
    # The core's own semaphore was never used: all 3 of its slots are free.
    assert core._acquire_here(0) and core._acquire_here(0) and core._acquire_here(0)
    assert core._acquire_here(0) is False


def test_a_refusal_by_the_store_is_counted_and_reported_by_the_core():
    store = ScriptedStore(False, False, False)
    reports = Reports()
    core = concurrency_core(store, reports)
    assert core.acquire(0) is False  # a try: a denial, never reported as a timeout
    assert reports.timeouts == []
    assert core.acquire(0.25) is False
    assert reports.timeouts == [0.25]
    with pytest.raises(LimiterTimeout, match=r"^timed out after 120s$"), core:
        pass
    assert reports.timeouts == [0.25, 120]
    assert (core.denied_count, core.blocked_count) == (1, 3)


def test_an_error_of_the_store_reaches_the_caller_uncounted():
    store = ScriptedStore(ConnectionError("down"), ValueError("bad"))
    reports = Reports()
    core = concurrency_core(store, reports)
    with pytest.raises(ConnectionError, match="down"):
        core.acquire(1)
    with pytest.raises(ValueError, match="bad"), core:
        pass
    assert (core.blocked_count, reports.timeouts) == (0, [])


def test_release_goes_to_the_store_and_an_over_release_is_counted_and_reported_once():
    store = ScriptedStore(True, False, False, True, True)
    reports = Reports()
    core = concurrency_core(store, reports)
    core.release()
    assert core.over_release_count == 0 and reports.over_releases == 0
    core.release()
    core.release()
    assert core.over_release_count == 2 and reports.over_releases == 1
    with core:  # __exit__ releases through the store too
        pass
    assert [call[0] for call in store.calls] == ["release", "release", "release", "acquire", "release"]
    assert core.over_release_count == 2


def test_figures_are_the_stores_when_it_has_them_and_the_cores_otherwise():
    store = ScriptedStore()
    store.figures = {"active_calls": 7, "wait_quantile": 0.5}
    core = concurrency_core(store, Reports())
    assert core.active_calls == 7
    assert core.max_concurrent == 3  # the store passed the core's own through
    assert core.wait_quantile(0.99) == 0.5
    asked = [call[1:] for call in store.calls if call[0] == "figure"]
    assert ("active_calls", 0, ()) in asked and ("max_concurrent", 3, ()) in asked
    assert ("wait_quantile", 0.0, (0.99,)) in asked


def test_a_rate_core_passes_every_argument_and_counts_fail_fast_as_a_denial():
    store = ScriptedStore(True, False, False)
    reports = Reports()
    core = _core.RateCore(60, 1, store=store, on_timeout=reports.on_timeout)
    assert core.acquire(tokens=5) is True
    assert core.acquire(1.5, fail_fast=True) is False
    assert core.acquire(timeout=2) is False
    assert [call[2] for call in store.calls] == [(60, 5, False), (1.5, 0, True), (2, 0, False)]
    assert reports.timeouts == [2]  # the fail-fast refusal is a denial, not a timeout
    assert (core.denied_count, core.blocked_count) == (1, 2)
    # The core's own bucket was never used: its one request is there.
    assert core._acquire_here(0) is True and core._acquire_here(0) is False


def test_the_core_reports_through_the_callables_it_was_given_not_methods_by_name():
    class Core(_core.ConcurrencyCore):
        def _on_timeout(self, timeout):  # the old protocol: must not be called any more
            raise AssertionError("called by name")

        def _on_over_release(self):
            raise AssertionError("called by name")

    reports = Reports()
    core = Core(1, on_timeout=reports.on_timeout, on_over_release=reports.on_over_release)
    assert core.acquire(0)
    assert core.acquire(0.01) is False
    core.release()
    core.release()
    assert reports.timeouts == [0.01] and reports.over_releases == 1
    bare = _core.ConcurrencyCore(1)  # no callables: counted, nothing reported
    assert bare.acquire(0) and bare.acquire(0.01) is False and bare.blocked_count == 1


def test_an_on_timeout_that_raises_fails_the_acquire_that_timed_out():
    def on_timeout(timeout):
        raise RuntimeError(f"hook saw {timeout}")

    core = _core.ConcurrencyCore(1, on_timeout=on_timeout)
    assert core.acquire(0)
    with pytest.raises(RuntimeError, match=r"hook saw 0\.01"):
        core.acquire(0.01)
    assert core.blocked_count == 1
