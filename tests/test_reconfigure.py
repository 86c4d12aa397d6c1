"""Live changes: set_max_concurrent, set_rate, set_burst, set_tokens_per_minute on limiters in use,
with waiters present."""

import threading
import time

import pytest
from helpers import start_thread, wait_until

from omnilimit import ConcurrencyLimiter, RateLimiter

SLACK = 0.25


def test_more_slots_go_at_once_to_the_oldest_waiters():
    limiter = ConcurrencyLimiter(1)
    assert limiter.acquire()
    order = []
    lock = threading.Lock()

    def wait(i):
        assert limiter.acquire(timeout=10)
        with lock:
            order.append(i)

    threads = []
    for i in range(4):
        threads.append(start_thread(wait, i))
        wait_until(lambda i=i: limiter.waiting == i + 1)  # queued in this order
    assert limiter.set_max_concurrent(3) == 2
    wait_until(lambda: len(order) == 2)
    assert sorted(order) == [0, 1]  # the two oldest
    assert limiter.max_concurrent == 3 and limiter.active_calls == 3 and limiter.waiting == 2
    assert limiter.get_stats()["max_concurrent"] == 3
    limiter.release()  # the two still queued get their slots, in order
    limiter.release()
    for thread in threads:
        thread.join(10)
    assert sorted(order[2:]) == [2, 3]


def test_fewer_slots_let_calls_in_flight_finish_and_hand_on_only_below_the_new_limit():
    limiter = ConcurrencyLimiter(4)
    holders = []
    for _ in range(4):
        assert limiter.acquire(timeout=0)
        holders.append(1)
    assert limiter.set_max_concurrent(2) == 0
    assert limiter.active_calls == 4  # nobody is cut off
    got = []
    start_thread(lambda: got.append(limiter.acquire(timeout=10)))
    wait_until(lambda: limiter.waiting == 1)
    limiter.release()
    limiter.release()  # 2 held: still not below the limit
    time.sleep(0.05)
    assert got == [] and limiter.active_calls == 2
    limiter.release()  # 1 held: the waiter's turn
    wait_until(lambda: got == [True])
    assert limiter.active_calls == 2
    assert limiter.acquire(timeout=0) is False


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, None, 2**31])
def test_a_bad_limit_is_refused_and_changes_nothing(bad):
    limiter = ConcurrencyLimiter(3)
    with pytest.raises(ValueError, match="max_concurrent"):
        limiter.set_max_concurrent(bad)
    assert limiter.max_concurrent == 3


def _waiter(limiter, timeout, tokens=0):
    t0 = time.monotonic()
    out = []
    thread = start_thread(lambda: out.append((limiter.acquire(timeout=timeout, tokens=tokens), time.monotonic() - t0)))
    return thread, out


# A token budget that never binds: the same waiters, queued in the DualBucket instead of asleep
# on a lone Gcra's reservation.
BUDGETS = [pytest.param({}, id="requests"), pytest.param({"tokens_per_minute": 10**9}, id="requests+tokens")]


@pytest.mark.parametrize("budget", BUDGETS)
def test_a_faster_rate_wakes_a_sleeping_waiter_sooner(budget):
    limiter = RateLimiter(60, burst_size=1, **budget)  # the waiter's turn is 1 s away
    assert limiter.acquire()
    thread, out = _waiter(limiter, 5)
    time.sleep(0.2)
    limiter.set_rate(600)  # the 0.8 s left become 0.08 s
    thread.join(10)
    [(ok, at)] = out
    assert ok and 0.27 <= at <= 0.28 + SLACK
    assert limiter.rpm == 600 and limiter.get_stats()["rpm_limit"] == 600
    assert limiter.interval_ns == 100_000_000


@pytest.mark.parametrize("budget", BUDGETS)
def test_a_waiter_whose_turn_has_come_under_the_new_rate_goes_at_once(budget):
    limiter = RateLimiter(6, burst_size=1, **budget)  # 10 s per request
    assert limiter.acquire()
    thread, out = _waiter(limiter, 30)
    time.sleep(0.3)
    limiter.set_rate(6000)  # 9.7 s left become 9.7 ms
    thread.join(10)
    [(ok, at)] = out
    assert ok and at <= 0.31 + SLACK


def test_a_slower_rate_delays_the_waiter_and_its_timeout_still_holds():
    limiter = RateLimiter(60, burst_size=1)
    assert limiter.acquire()
    thread, out = _waiter(limiter, 5)
    time.sleep(0.2)
    limiter.set_rate(30)  # 0.8 s left become 1.6 s
    thread.join(10)
    [(ok, at)] = out
    assert ok and 1.79 <= at <= 1.8 + SLACK
    limiter = RateLimiter(30, burst_size=1)
    assert limiter.acquire()
    thread, out = _waiter(limiter, 3)  # its turn: 2 s away, within the timeout
    time.sleep(0.1)
    limiter.set_rate(15)  # now 3.9 s away: past the timeout
    thread.join(10)
    [(ok, at)] = out
    assert ok is False and 2.99 <= at <= 3.0 + SLACK
    assert limiter.tokens_available() == 0


@pytest.mark.parametrize("budget", BUDGETS)
def test_a_waiter_that_sleeps_through_many_changes_still_gets_its_turn(budget):
    limiter = RateLimiter(60, burst_size=1, **budget)
    assert limiter.acquire()
    thread, out = _waiter(limiter, 10)
    for i in range(40):  # more changes than the schedule keeps: the waiter books again
        limiter.set_rate(60 if i % 2 else 120)
    limiter.set_rate(600)
    thread.join(15)
    [(ok, at)] = out
    assert ok and at < 2.5


def test_rate_changes_under_load_never_exceed_the_fastest_rate(tiny_switch_interval):
    limiter = RateLimiter(3000, burst_size=10)
    admitted = []
    stop = time.monotonic() + 1.0

    def take():
        while time.monotonic() < stop:
            if limiter.acquire(timeout=0.3):
                admitted.append(time.monotonic())
            else:
                time.sleep(0.005)  # no slot within the timeout: do not spin on the GIL

    threads = [start_thread(take) for _ in range(16)]
    t0 = time.monotonic()
    flip = False
    while time.monotonic() < stop:
        limiter.set_rate(12000 if flip else 3000)
        flip = not flip
        time.sleep(0.02)
    for thread in threads:
        thread.join(10)
    elapsed = time.monotonic() - t0
    assert len(admitted) <= 10 + 12000 / 60 * elapsed + 2  # never beyond the fastest rate set
    # and it kept admitting (what is owed is repriced at each change, so flips every 20 ms run
    # close to the slower rate)
    assert len(admitted) >= 3000 / 60 * elapsed * 0.4


def test_a_faster_token_rate_moves_the_queued_callers_up():
    limiter = RateLimiter(6000, tokens_per_minute=600, token_burst=10)  # 10 tokens a second
    assert limiter.acquire(timeout=0, tokens=10)
    first, first_out = _waiter(limiter, 5, tokens=10)  # 1 s away
    wait_until(lambda: limiter.waiting == 1)
    second, second_out = _waiter(limiter, 5, tokens=10)  # 2 s away, behind the first
    wait_until(lambda: limiter.waiting == 2)
    time.sleep(0.1)
    assert limiter.predicted_wait(tokens=10) > 2.0
    limiter.set_tokens_per_minute(6000)  # 100 tokens a second: what is owed, and the queue, 10x faster
    first.join(10)
    second.join(10)
    [(ok1, at1)], [(ok2, at2)] = first_out, second_out
    assert ok1 and ok2
    assert at1 <= 0.3 + SLACK and at2 <= 0.4 + SLACK
    assert limiter.waiting == 0


def test_a_slower_token_rate_sets_the_callers_it_pushes_past_their_timeout_standing_by():
    limiter = RateLimiter(6000, tokens_per_minute=600, token_burst=10)
    assert limiter.acquire(timeout=0, tokens=10)
    thread, out = _waiter(limiter, 3, tokens=10)  # 1 s away, within the timeout
    wait_until(lambda: limiter.waiting == 1)
    time.sleep(0.1)
    limiter.set_tokens_per_minute(60)  # one token a second: ~9 s away now, beyond its timeout
    time.sleep(0.3)
    assert out == [] and limiter.waiting == 1  # standing by, holding nothing of either budget
    assert limiter.token_budget_available() <= 1 and limiter.tokens_available() == 1
    limiter.set_tokens_per_minute(600)  # within reach again (~0.8 s away): it queues, and goes
    thread.join(10)
    [(ok, at)] = out
    assert ok is True and at < 2.0  # at its turn, well before its 3-s timeout
    thread, out = _waiter(limiter, 0.5, tokens=10)  # now 1 s away: beyond the timeout throughout
    thread.join(10)
    [(ok, at)] = out
    assert ok is False and 0.5 <= at <= 0.5 + SLACK  # False at its timeout, not before
    assert limiter.waiting == 0 and limiter.acquire(timeout=0) is True  # it took no request


def test_burst_and_token_budget_changes():
    limiter = RateLimiter(60, burst_size=2, tokens_per_minute=6000)
    limiter.set_burst(5)
    assert limiter.burst_size == 5 and limiter.tokens_available() == 5
    limiter.set_tokens_per_minute(60_000)
    assert limiter.tpm == 60_000 and limiter.get_stats()["tpm_limit"] == 60_000
    limiter.set_token_burst(500)
    assert limiter.token_burst == 500
    with pytest.raises(ValueError, match="token budget"):
        RateLimiter(60).set_tokens_per_minute(1000)
    for bad in (0, -1, float("nan"), True):
        with pytest.raises(ValueError):
            limiter.set_rate(bad)
        with pytest.raises(ValueError):
            limiter.set_burst(bad)
    assert limiter.rpm == 60 and limiter.burst_size == 5
