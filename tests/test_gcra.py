"""The GCRA token bucket over fixed instants: every decision is checked exactly."""

import pytest

from omnilimit._core import FOREVER_NS, Gcra

T = 1_000  # ns between tokens
START = 1_000_000  # an arbitrary instant after the bucket's "never used" zero


def test_fresh_bucket_admits_exactly_the_burst_at_one_instant():
    bucket = Gcra(T, 3)
    assert [bucket.try_acquire(now_ns=START) for _ in range(4)] == [True, True, True, False]
    assert bucket.tat_ns == START + 3 * T


def test_table_of_decisions_over_fixed_instants():
    bucket = Gcra(T, 3)
    rows = [
        (START, True),
        (START, True),
        (START, True),
        (START, False),  # the burst is spent
        (START + T - 1, False),
        (START + T, True),  # one token per interval
        (START + T, False),
        (START + 2 * T - 1, False),
        (START + 5 * T, True),  # four intervals later the bucket is full again: 3, not 4
        (START + 5 * T, True),
        (START + 5 * T, True),
        (START + 5 * T, False),
        (START + 6 * T, True),
        (START + 6 * T, False),
    ]
    assert [bucket.try_acquire(now_ns=now) for now, _ in rows] == [expected for _, expected in rows]
    assert bucket.tat_ns == START + 9 * T


def test_tokens_available_refills_one_per_interval_up_to_the_burst():
    bucket = Gcra(T, 4)
    assert bucket.tokens_available(now_ns=START) == 4
    for _ in range(4):
        assert bucket.try_acquire(now_ns=START)
    assert [bucket.tokens_available(now_ns=START + k * T) for k in range(7)] == [0, 1, 2, 3, 4, 4, 4]
    assert bucket.tokens_available(now_ns=START + T - 1) == 0


def test_reserve_returns_the_exact_wait_and_serves_in_order():
    bucket = Gcra(T, 1)
    waits = [bucket.reserve(max_wait_ns=FOREVER_NS, now_ns=START).wait_ns for _ in range(4)]
    assert waits == [0, T, 2 * T, 3 * T]
    r = bucket.reserve(now_ns=START + 10)
    assert r.admitted and r.wait_ns == 4 * T - 10 and r.ready_at_ns == START + 4 * T


def test_reserve_that_would_not_fit_commits_nothing():
    bucket = Gcra(T, 1)
    assert bucket.reserve(now_ns=START).wait_ns == 0
    before = bucket.tat_ns
    r = bucket.reserve(max_wait_ns=T - 1, now_ns=START)
    assert not r.admitted
    assert r.wait_ns == T  # the wait it would have needed
    assert bucket.tat_ns == before
    assert bucket.reserve(max_wait_ns=T, now_ns=START).admitted


@pytest.mark.parametrize("burst", [1, 2, 7, 100])
def test_burst_edges(burst):
    bucket = Gcra(T, burst)
    assert all(bucket.try_acquire(now_ns=START) for _ in range(burst))
    assert not bucket.try_acquire(now_ns=START)
    # The (burst + 1)-th request waits exactly one interval...
    assert bucket.reserve(max_wait_ns=0, now_ns=START).wait_ns == T
    # ...and after k intervals exactly k more fit (never more than the burst).
    later = START + 3 * T
    admitted = 0
    while bucket.try_acquire(now_ns=later):
        admitted += 1
    assert admitted == min(3, burst)


def test_cost_above_one_takes_several_tokens_and_a_cost_above_the_burst_goes_into_debt():
    bucket = Gcra(T, 5)
    assert bucket.try_acquire(3, now_ns=START)
    assert bucket.tokens_available(now_ns=START) == 2
    assert not bucket.try_acquire(3, now_ns=START)
    big = Gcra(T, 5)
    assert not big.try_acquire(8, now_ns=START)  # never fits at once...
    r = big.reserve(8, now_ns=START)  # ...but a reservation waits in proportion
    assert r.admitted and r.wait_ns == 3 * T


def test_time_going_backwards_never_admits_more():
    bucket = Gcra(T, 2)
    assert bucket.try_acquire(now_ns=START + 10 * T)
    assert bucket.try_acquire(now_ns=START + 10 * T)
    tat = bucket.tat_ns
    # A stale instant (a thread preempted after reading the clock) sees a longer wait.
    for stale in (START + 9 * T, START, 0, -(10**12)):
        assert not bucket.try_acquire(now_ns=stale)
        assert bucket.tat_ns == tat
    r = bucket.reserve(now_ns=START + 9 * T)
    assert r.admitted and r.ready_at_ns == START + 11 * T
    assert bucket.tat_ns == tat + T  # TAT only ever moves forward


def test_fresh_bucket_with_stale_now_behaves_like_a_fresh_bucket():
    bucket = Gcra(T, 1)
    assert bucket.try_acquire(now_ns=START)
    assert not bucket.try_acquire(now_ns=START - 5 * T)


def test_far_future_reservations_saturate_without_overflow():
    bucket = Gcra(10, 1)
    r = bucket.reserve(2**62, now_ns=START)  # 2**62 * 10 ns: far beyond 64 bits
    assert not r.admitted and r.wait_ns == FOREVER_NS
    r = bucket.reserve(2**59, now_ns=START)  # fits: about 182 years
    assert r.admitted and r.wait_ns == (2**59 - 1) * 10
    r = bucket.reserve(2**61, now_ns=START)  # TAT would pass the end of the range
    assert not r.admitted
    assert not bucket.try_acquire(now_ns=START)
    assert bucket.tokens_available(now_ns=START) == 0


def test_interval_of_forever_admits_once():
    bucket = Gcra(FOREVER_NS, 1)
    assert bucket.try_acquire(now_ns=START)
    assert bucket.tat_ns == FOREVER_NS
    r = bucket.reserve(now_ns=START)
    assert not r.admitted and r.wait_ns == FOREVER_NS
    assert bucket.tokens_available(now_ns=FOREVER_NS - 1) == 0


def test_huge_burst_and_huge_rate():
    bucket = Gcra(1, 2**62)
    assert bucket.tokens_available(now_ns=START) == 2**62
    assert bucket.try_acquire(2**61, now_ns=START)
    assert bucket.tokens_available(now_ns=START) == 2**61
    assert Gcra.interval_for(1e30, 1.0) == 1  # faster than 1 per ns behaves as 1 per ns


@pytest.mark.parametrize(
    ("count", "period_s", "interval_ns"),
    [
        (3, 1.0, 333_333_334),  # rounded up: never faster than asked
        (0.5, 60.0, 120_000_000_000),
        (6000, 60.0, 10_000_000),
        (500, 60.0, 120_000_000),
        (1e-12, 60.0, FOREVER_NS),
    ],
)
def test_interval_for_fractional_and_extreme_rates(count, period_s, interval_ns):
    assert Gcra.interval_for(count, period_s) == interval_ns


@pytest.mark.parametrize(
    ("count", "period_s"), [(0, 1.0), (-1, 1.0), (float("nan"), 1.0), (float("inf"), 1.0), (1, 0.0)]
)
def test_interval_for_rejects_invalid_rates(count, period_s):
    with pytest.raises(ValueError):
        Gcra.interval_for(count, period_s)


@pytest.mark.parametrize(("count", "period_s", "seconds"), [(3, 1.0, 10.0), (0.5, 60.0, 600.0), (250, 60.0, 60.0)])
def test_fractional_rates_admit_burst_plus_rate_times_elapsed(count, period_s, seconds):
    interval = Gcra.interval_for(count, period_s)
    burst = 2  # room for one token to wait for the next probe
    bucket = Gcra(interval, burst)
    end = START + int(seconds * 1e9)
    probes = [*range(START, end, interval // 7), end]  # far more often than tokens appear
    admitted = 0
    for now in probes:
        while bucket.try_acquire(now_ns=now):
            admitted += 1
    assert admitted == burst + (end - START) // interval
    # Rounding the interval up costs at most one request against the exact rate.
    assert burst + count / period_s * seconds - 1 <= admitted <= burst + count / period_s * seconds


def test_a_late_caller_with_burst_one_loses_the_time_it_was_late():
    bucket = Gcra(T, 1)  # capacity one: a token that is not taken overflows
    assert bucket.try_acquire(now_ns=START)
    assert bucket.try_acquire(now_ns=START + T + T // 2)
    assert not bucket.try_acquire(now_ns=START + 2 * T)
    assert bucket.try_acquire(now_ns=START + 2 * T + T // 2)


def test_refund_of_the_latest_reservation_restores_the_state():
    bucket = Gcra(T, 1)
    assert bucket.try_acquire(now_ns=START)
    before = bucket.tat_ns
    r = bucket.reserve(now_ns=START)
    assert r.wait_ns == T
    assert bucket.refund(r, now_ns=START + 1)
    assert bucket.tat_ns == before
    assert not bucket.refund(r, now_ns=START + 1)  # only once


def test_refund_behind_a_later_reservation_is_refused():
    bucket = Gcra(T, 1)
    first = bucket.reserve(now_ns=START)
    second = bucket.reserve(now_ns=START)
    third = bucket.reserve(now_ns=START)
    assert (first.wait_ns, second.wait_ns, third.wait_ns) == (0, T, 2 * T)
    tat = bucket.tat_ns
    assert not bucket.refund(second, now_ns=START)  # `third` is queued behind it
    assert bucket.tat_ns == tat
    assert bucket.refund(third, now_ns=START)
    assert bucket.refund(second, now_ns=START)  # now the latest again
    assert bucket.tat_ns == first.tat_ns


def test_refund_after_the_reserved_instant_is_refused():
    bucket = Gcra(T, 1)
    bucket.reserve(now_ns=START)
    r = bucket.reserve(now_ns=START)
    assert not bucket.refund(r, now_ns=r.ready_at_ns)
    immediate = Gcra(T, 1).reserve(now_ns=START)
    assert not Gcra(T, 1).refund(immediate, now_ns=START)


def test_set_interval_keeps_the_tokens_owed():
    bucket = Gcra(T, 1)
    for _ in range(5):
        bucket.reserve(now_ns=START)
    assert bucket.tat_ns == START + 5 * T  # 5 tokens owed at START
    bucket.set_interval(2 * T, now_ns=START)
    assert bucket.tat_ns == START + 10 * T  # still 5 owed, at the new pace
    bucket.set_interval(T // 2, now_ns=START)
    assert bucket.tat_ns == START + 5 * T // 2
    assert bucket.interval_ns == T // 2
    assert bucket.reserve(now_ns=START).wait_ns == 5 * T // 2


def test_set_interval_on_an_idle_bucket_changes_only_the_pace():
    bucket = Gcra(T, 2)
    bucket.set_interval(3 * T, now_ns=START)
    assert bucket.tat_ns <= START + 1  # still full (moved, so a racing decision must retry)
    assert bucket.try_acquire(now_ns=START) and bucket.try_acquire(now_ns=START)
    assert bucket.reserve(now_ns=START).wait_ns == 3 * T


def test_set_burst():
    bucket = Gcra(T, 1)
    bucket.set_burst(4)
    assert bucket.burst == 4
    assert sum(bucket.try_acquire(now_ns=START) for _ in range(10)) == 4
    bucket.set_burst(2)
    assert bucket.tokens_available(now_ns=START + 4 * T) == 2


@pytest.mark.parametrize(("interval", "burst"), [(0, 1), (-5, 1), (1, 0), (1, -1)])
def test_invalid_parameters(interval, burst):
    with pytest.raises(ValueError):
        Gcra(interval, burst)


def test_invalid_costs_and_waits():
    bucket = Gcra(T, 1)
    with pytest.raises(ValueError):
        bucket.try_acquire(0, now_ns=START)
    with pytest.raises(ValueError):
        bucket.reserve(1, max_wait_ns=-1, now_ns=START)
    with pytest.raises(ValueError):
        bucket.set_burst(0)
    with pytest.raises(ValueError):
        bucket.set_interval(0)


def test_default_now_is_the_monotonic_clock():
    import time

    bucket = Gcra(10**12, 1)  # one token per 1000 s
    assert bucket.try_acquire()
    r = bucket.reserve(max_wait_ns=0)
    expected = bucket.tat_ns - time.monotonic_ns()
    assert not r.admitted
    assert abs(r.wait_ns - expected) < 10**9


@pytest.mark.parametrize("burst", [1, 3, 10])
def test_no_window_ever_holds_more_than_burst_plus_rate(burst):
    """Random arrivals, each reserving and going at its ready instant: every window of every
    length holds at most burst + length / T admissions."""
    import random

    rng = random.Random(burst)
    bucket = Gcra(T, burst)
    now = START
    admitted_at = []
    for _ in range(2000):
        now += rng.choice([0, 0, 1, T // 3, T, 5 * T])  # bursts, trickles and pauses
        r = bucket.reserve(max_wait_ns=rng.choice([0, 2 * T, FOREVER_NS]), now_ns=now)
        if r.admitted:
            admitted_at.append(r.ready_at_ns)
    admitted_at.sort()
    for i in range(len(admitted_at)):
        for j in range(i, min(len(admitted_at), i + 3 * burst + 10)):
            window = admitted_at[j] - admitted_at[i]
            assert j - i + 1 <= burst + window // T


# --- hold_until and limit_available (a provider's 429 and its remaining-budget headers) ---------


def test_hold_until_admits_nothing_before_the_instant_then_one_at_a_time():
    g = Gcra(interval_ns=10, burst=5)  # full bucket: 5 available at t=0
    g.hold_until(1000)
    assert g.tokens_available(now_ns=999) == 0
    assert not g.try_acquire(now_ns=999)
    assert g.try_acquire(now_ns=1000)  # the first exactly at the end
    assert not g.try_acquire(now_ns=1000)  # no burst: the provider said the budget was spent
    assert not g.try_acquire(now_ns=1009)
    assert g.try_acquire(now_ns=1010)


def test_hold_until_never_moves_the_schedule_back():
    g = Gcra(interval_ns=10, burst=1)
    assert g.reserve(cost=50, now_ns=0).admitted  # TAT = 500
    g.hold_until(100)  # earlier than what is already booked: no change
    assert g.tat_ns == 500
    g.hold_until(600)
    assert g.tat_ns == 600  # burst 1: TAT is the instant of the next admission


def test_limit_available_caps_what_the_bucket_holds():
    g = Gcra(interval_ns=10, burst=10)
    g.limit_available(3, now_ns=1000)
    assert g.tokens_available(now_ns=1000) == 3
    assert all(g.try_acquire(now_ns=1000) for _ in range(3))
    assert not g.try_acquire(now_ns=1000)
    g.limit_available(7, now_ns=1000)  # more than it holds: left alone
    assert g.tokens_available(now_ns=1000) == 0
    g.limit_available(0, now_ns=2000)
    assert g.tokens_available(now_ns=2000) == 0
    assert g.tokens_available(now_ns=2010) == 1  # refills at the pace from there
    with pytest.raises(ValueError):
        g.limit_available(-1, now_ns=0)


# --- what the token budget builds on: wait_for, reserve_at, charge, give_back -------------------


def test_wait_for_says_how_long_without_committing():
    g = Gcra(interval_ns=10, burst=5)
    assert g.wait_for(5, now_ns=0) == 0
    assert g.wait_for(8, now_ns=0) == 30  # debt: 3 tokens beyond the burst, 3 intervals
    assert g.tat_ns == 0  # nothing taken
    assert g.try_acquire(5, now_ns=0)
    assert g.wait_for(1, now_ns=0) == 10


def test_reserve_at_commits_an_arrival_at_a_later_instant_only_if_the_tokens_are_there_then():
    g = Gcra(interval_ns=10, burst=2)
    assert g.try_acquire(2, now_ns=0)  # empty until 10
    early = g.reserve_at(1, at_ns=5, now_ns=0)
    assert not early.admitted and g.tat_ns == 20  # nothing committed
    r = g.reserve_at(1, at_ns=50, now_ns=0)
    assert r.admitted and r.ready_at_ns == 50 and r.wait_ns == 50
    assert g.tat_ns == 60  # max(TAT, 50) + T
    assert g.wait_for(1, now_ns=50) == 0  # a full bucket refilled by 50 minus the one taken at 50


def test_charge_takes_more_and_give_back_returns_but_never_beyond_full():
    g = Gcra(interval_ns=10, burst=100)
    g.charge(30, now_ns=1000)
    assert g.tokens_available(now_ns=1000) == 70
    g.give_back(20, now_ns=1000)
    assert g.tokens_available(now_ns=1000) == 90
    g.give_back(50, now_ns=1000)
    assert g.tokens_available(now_ns=1000) == 100  # full is full
    g.charge(150, now_ns=1000)  # more than the burst: debt, paid back at the pace
    assert g.tokens_available(now_ns=1000) == 0
    assert g.wait_for(1, now_ns=1000) == 510
