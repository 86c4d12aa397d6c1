"""ConcurrencyLimiter: the guide's API, the timeout contract, FIFO hand-over, stress."""

import logging
import math
import threading
import time
from decimal import Decimal

import pytest
from helpers import start_thread, wait_until

from omnilimit import ConcurrencyLimiter, LimiterClosed


def test_acquire_release_and_the_guides_stats():
    limiter = ConcurrencyLimiter(max_concurrent=3, name="openai_user_followup")
    assert limiter.get_stats() == {"max_concurrent": 3, "active_calls": 0, "total_requests": 0, "available_slots": 3}
    assert limiter.acquire(timeout=120) is True
    assert limiter.acquire() is True
    stats = limiter.get_stats()
    assert stats == {"max_concurrent": 3, "active_calls": 2, "total_requests": 2, "available_slots": 1}
    assert all(type(value) is int for value in stats.values())
    limiter.release()
    limiter.release()
    assert limiter.get_stats()["active_calls"] == 0
    assert limiter.get_stats()["total_requests"] == 2


def test_never_more_than_max_at_once():
    limiter = ConcurrencyLimiter(2)
    assert limiter.acquire(timeout=0) and limiter.acquire(timeout=0)
    assert limiter.acquire(timeout=0) is False
    limiter.release()
    assert limiter.acquire(timeout=0) is True


def test_timeout_is_honoured_and_logged_with_the_guides_message(caplog):
    limiter = ConcurrencyLimiter(1, name="openai_user_followup")
    assert limiter.acquire()
    caplog.set_level(logging.WARNING, logger="omnilimit")
    started = time.monotonic()
    assert limiter.acquire(timeout=0.2) is False
    elapsed = time.monotonic() - started
    assert 0.19 <= elapsed < 1.0
    assert [r.getMessage() for r in caplog.records] == ["Concurrency limit timeout after 0.2s for openai_user_followup"]
    assert caplog.records[0].levelno == logging.WARNING
    assert limiter.blocked_count == 1


def test_a_failed_try_is_counted_but_not_logged(caplog):
    limiter = ConcurrencyLimiter(1)
    limiter.acquire()
    caplog.set_level(logging.DEBUG, logger="omnilimit")
    assert [limiter.acquire(timeout=0) for _ in range(5)] == [False] * 5
    assert caplog.records == []
    assert limiter.blocked_count == 5
    assert limiter.waiting == 0


def test_none_waits_until_a_slot_is_released():
    limiter = ConcurrencyLimiter(1)
    limiter.acquire()
    results = []
    waiter = start_thread(lambda: results.append(limiter.acquire(timeout=None)))
    wait_until(lambda: limiter.waiting == 1)
    time.sleep(0.05)
    assert results == []
    limiter.release()
    waiter.join(5)
    assert results == [True]
    assert limiter.active_calls == 1


@pytest.mark.parametrize("timeout", [120, 0.5, Decimal("2.5"), math.inf, 10**400])
def test_accepted_timeouts(timeout):
    limiter = ConcurrencyLimiter(1)
    assert limiter.acquire(timeout=timeout) is True
    limiter.release()
    assert limiter.acquire(timeout) is True


@pytest.mark.parametrize("timeout", [-1, -0.001, math.nan, True, False, "1", b"1", [1], object(), 1j, -(10**400)])
def test_bad_timeouts_raise_value_error_even_when_a_slot_is_free(timeout):
    limiter = ConcurrencyLimiter(1)
    with pytest.raises(ValueError, match="timeout"):
        limiter.acquire(timeout=timeout)
    assert limiter.active_calls == 0


def test_call_signature_errors():
    limiter = ConcurrencyLimiter(1)
    with pytest.raises(TypeError):
        limiter.acquire(1, 2)
    with pytest.raises(TypeError):
        limiter.acquire(time_out=1)
    with pytest.raises(TypeError):
        limiter.release(1)


@pytest.mark.parametrize("value", [0, -5, 2.5, math.nan, math.inf, True, "4", None, 2**31])
def test_bad_max_concurrent_raises_value_error_naming_it(value):
    with pytest.raises(ValueError, match="max_concurrent"):
        ConcurrencyLimiter(value)


def test_integral_float_is_accepted_as_a_count():
    limiter = ConcurrencyLimiter(50.0)
    assert limiter.max_concurrent == 50 and type(limiter.get_stats()["max_concurrent"]) is int


def test_name_must_be_a_string():
    with pytest.raises(ValueError, match="name"):
        ConcurrencyLimiter(1, name=5)


def test_over_release_is_counted_and_logged_once_never_adding_capacity(caplog):
    limiter = ConcurrencyLimiter(2, name="x")
    caplog.set_level(logging.WARNING, logger="omnilimit")
    limiter.release()
    limiter.release()
    assert limiter.over_release_count == 2
    assert len(caplog.records) == 1 and "without a held slot" in caplog.records[0].getMessage()
    assert limiter.get_stats() == {"max_concurrent": 2, "active_calls": 0, "total_requests": 0, "available_slots": 2}
    assert limiter.acquire(timeout=0) and limiter.acquire(timeout=0)
    assert limiter.acquire(timeout=0) is False  # still exactly two slots
    other = ConcurrencyLimiter(1, name="y")
    other.release()
    assert len(caplog.records) == 2  # once per limiter


def test_waiters_get_slots_in_arrival_order():
    limiter = ConcurrencyLimiter(1)
    limiter.acquire()
    order = []

    def worker(index):
        assert limiter.acquire(timeout=30)
        order.append(index)
        limiter.release()

    threads = []
    for index in range(20):
        threads.append(start_thread(worker, index))
        wait_until(lambda expected=index + 1: limiter.waiting == expected)  # arrival order is now known
    limiter.release()
    for thread in threads:
        thread.join(10)
    assert order == list(range(20))


def test_a_newcomer_does_not_barge_past_waiters():
    limiter = ConcurrencyLimiter(1)
    limiter.acquire()
    got = []
    waiter = start_thread(lambda: got.append(limiter.acquire(timeout=30)))
    wait_until(lambda: limiter.waiting == 1)
    limiter.release()  # handed to the waiter, not freed
    assert limiter.acquire(timeout=0) is False
    waiter.join(5)
    assert got == [True]
    assert limiter.active_calls == 1


def test_close_wakes_every_waiter_with_an_error():
    limiter = ConcurrencyLimiter(1)
    limiter.acquire()
    errors = []

    def waiter():
        try:
            limiter.acquire(timeout=None)
        except LimiterClosed as error:
            errors.append(error)

    threads = [start_thread(waiter) for _ in range(8)]
    wait_until(lambda: limiter.waiting == 8)
    limiter.close()
    for thread in threads:
        thread.join(5)
    assert len(errors) == 8 and limiter.waiting == 0 and limiter.closed
    with pytest.raises(LimiterClosed):
        limiter.acquire(timeout=0)
    with pytest.raises(LimiterClosed):
        limiter.acquire()
    limiter.release()  # a holder may still give its slot back
    assert limiter.active_calls == 0


def test_context_manager_releases_and_counts_the_call():
    limiter = ConcurrencyLimiter(1)
    with limiter as entered:
        assert entered is limiter
        assert limiter.active_calls == 1
    assert limiter.active_calls == 0
    with pytest.raises(ZeroDivisionError), limiter:
        raise ZeroDivisionError
    assert limiter.active_calls == 0
    assert limiter.get_current_rpm() == 2


def test_current_rpm_counts_releases_and_record_request_adds_nothing():
    limiter = ConcurrencyLimiter(4)
    for _ in range(3):
        limiter.acquire()
        limiter.record_request()
        limiter.release()
    assert limiter.get_current_rpm() == 3
    assert hasattr(limiter, "release")


def test_get_stats_never_blocks_behind_waiters():
    limiter = ConcurrencyLimiter(1)
    limiter.acquire()

    def waiter():
        with pytest.raises(LimiterClosed):
            limiter.acquire(timeout=30)

    threads = [start_thread(waiter) for _ in range(10)]
    wait_until(lambda: limiter.waiting == 10)
    started = time.monotonic()
    for _ in range(100):
        limiter.get_stats()
    assert time.monotonic() - started < 1.0
    limiter.close()
    for thread in threads:
        thread.join(5)


def test_subclass_that_skips_init_fails_cleanly():
    class Broken(ConcurrencyLimiter):
        def __init__(self):
            pass

    with pytest.raises(TypeError, match="__init__"):
        Broken().acquire()


@pytest.mark.timeout(120)
def test_no_lost_wakeups_under_hundreds_of_threads(tiny_switch_interval):
    limiter = ConcurrencyLimiter(3)
    threads_count, rounds = 200, 50
    inside = 0
    most_inside = 0
    guard = threading.Lock()
    failures = []

    def worker():
        nonlocal inside, most_inside
        for _ in range(rounds):
            if not limiter.acquire(timeout=60):
                failures.append("timeout")
                return
            with guard:
                inside += 1
                most_inside = max(most_inside, inside)
            with guard:
                inside -= 1
            limiter.release()

    threads = [start_thread(worker) for _ in range(threads_count)]
    for thread in threads:
        thread.join(100)
    assert not any(thread.is_alive() for thread in threads), "a waiter was never woken"
    assert failures == []
    assert most_inside <= 3
    assert limiter.get_stats() == {
        "max_concurrent": 3,
        "active_calls": 0,
        "total_requests": threads_count * rounds,
        "available_slots": 3,
    }
    assert limiter.waiting == 0 and limiter.over_release_count == 0


@pytest.mark.timeout(120)
def test_timeouts_racing_with_releases_lose_and_duplicate_nothing(tiny_switch_interval):
    limiter = ConcurrencyLimiter(2)
    successes = 0
    guard = threading.Lock()
    inside = 0
    most_inside = 0

    def worker(seed):
        nonlocal successes, inside, most_inside
        for i in range(200):
            if limiter.acquire(timeout=((seed + i) % 4) * 0.0005):  # 0 (a try), 0.5, 1, 1.5 ms
                with guard:
                    successes += 1
                    inside += 1
                    most_inside = max(most_inside, inside)
                with guard:
                    inside -= 1
                limiter.release()

    threads = [start_thread(worker, seed) for seed in range(64)]
    for thread in threads:
        thread.join(100)
    assert most_inside <= 2
    assert limiter.active_calls == 0 and limiter.waiting == 0 and limiter.over_release_count == 0
    assert limiter.total_requests == successes
    assert successes + limiter.blocked_count == 64 * 200


def test_a_release_after_the_same_threads_failed_acquire_adds_no_capacity():
    """omnigen's generators release() in a finally even when acquire(timeout=120) timed out."""
    limiter = ConcurrencyLimiter(1)
    limiter.acquire()  # every slot held...
    queued = []
    waiter = start_thread(lambda: queued.append(limiter.acquire(timeout=30)))
    wait_until(lambda: limiter.waiting == 1)  # ...and someone queued behind it

    def omnigen_worker():
        limiter.acquire(timeout=0.05)  # times out; the result is ignored
        limiter.release()  # in a finally: must not hand the held slot to the waiter

    worker = start_thread(omnigen_worker)
    worker.join(5)
    assert limiter.waiting == 1 and limiter.active_calls == 1 and queued == []
    assert limiter.over_release_count == 1
    limiter.release()  # the real holder
    waiter.join(5)
    assert queued == [True] and limiter.active_calls == 1


def test_a_thread_that_holds_slots_may_release_after_a_failed_acquire():
    limiter = ConcurrencyLimiter(2)
    assert limiter.acquire() and limiter.acquire()
    assert limiter.acquire(timeout=0.01) is False  # a third, nested, attempt fails
    limiter.release()  # one of the two held: a real release
    assert limiter.active_calls == 1 and limiter.over_release_count == 0


def test_a_failed_acquire_does_not_taint_the_next_successful_one():
    limiter = ConcurrencyLimiter(1)
    holder_done = start_thread(limiter.acquire)
    holder_done.join(5)
    assert limiter.acquire(timeout=0.01) is False  # this thread failed once...
    assert limiter.acquire(timeout=0) is False
    other = start_thread(limiter.release)  # the holder's slot is given back from another thread
    other.join(5)
    assert limiter.acquire(timeout=1) is True  # ...then succeeded: its release is a real one
    limiter.release()
    assert limiter.active_calls == 0 and limiter.over_release_count == 0


def test_releasing_for_another_thread_still_works():
    limiter = ConcurrencyLimiter(1)
    start_thread(limiter.acquire).join(5)
    assert limiter.active_calls == 1
    limiter.release()  # this thread never acquired, and never failed: a plain hand-back
    assert limiter.active_calls == 0 and limiter.over_release_count == 0


def test_the_rule_holds_in_a_thread_that_left_failures_on_many_limiters():
    """Code that checks acquire()'s answer never releases after a failure, so each failure stays
    pending in the thread's account; a thread that did so on more limiters than the account
    tracks must still have the rule for the next one."""
    limiters = [ConcurrencyLimiter(1, name=f"l{i}") for i in range(7)]
    for limiter in limiters:
        assert limiter.acquire(timeout=0)  # every slot held by this thread
    answers = []

    def worker():
        for limiter in limiters[:-1]:
            answers.append(limiter.acquire(timeout=0))  # refused: checked, nothing released
        last = limiters[-1]
        try:
            answers.append(last.acquire(timeout=0.01))
        finally:
            last.release()  # OmniGen's `finally`: must free nobody's slot

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert answers == [False] * 7
    assert limiters[-1].active_calls == 1 and limiters[-1].over_release_count == 1
