"""The one-minute request window behind get_current_rpm(), with an injected clock."""

import pytest

from omnilimit._core import RequestWindow

S = 1_000_000_000  # ns per second
START = 1_000 * S


def exact_count(events, now):
    return sum(1 for t in events if now - 60 * S < t <= now)


@pytest.mark.parametrize("per_second", [1, 7, 100, 1000])
def test_steady_traffic_is_counted_within_one_percent(per_second):
    window = RequestWindow()
    events = [START + i * S // per_second for i in range(120 * per_second)]
    checkpoints = [START + 30 * S, START + 60 * S + 12_345_678, START + 90 * S + 49 * S // 1000, START + 119 * S]
    recorded = 0
    for now in checkpoints:  # the window answers for the present, so ask as time goes by
        while recorded < len(events) and events[recorded] <= now:
            window.record(now_ns=events[recorded])
            recorded += 1
        exact = exact_count(events, now)
        assert abs(window.count(now_ns=now) - exact) <= max(1, 0.01 * exact)


def test_events_leave_the_window_after_a_minute():
    window = RequestWindow()
    window.record(now_ns=START + S // 100, n=500)  # inside the bucket [START, START + 50 ms)
    assert window.count(now_ns=START + S) == 500
    assert window.count(now_ns=START + 59 * S) == 500
    assert window.count(now_ns=START + 60 * S) == 500  # the bucket is still whole in the window
    assert window.count(now_ns=START + 60 * S + 50_000_000) == 0
    assert window.count(now_ns=START + 120 * S) == 0


def test_a_bucket_leaving_the_window_is_counted_in_proportion():
    window = RequestWindow()
    window.record(now_ns=START, n=1000)
    # Half of the oldest bucket's 50 ms still lie inside (now - 60 s, now].
    assert window.count(now_ns=START + 60 * S + 25_000_000) == 500


def test_a_new_lap_of_the_ring_resets_stale_slots():
    window = RequestWindow()
    window.record(now_ns=START, n=3)
    lap = START + (RequestWindow.buckets + 1) * RequestWindow.bucket_ns  # the same slot, a lap later
    window.record(now_ns=lap, n=4)
    assert window.count(now_ns=lap) == 4


def test_events_older_than_the_current_lap_are_dropped():
    window = RequestWindow()
    lap = (RequestWindow.buckets + 1) * RequestWindow.bucket_ns
    window.record(now_ns=START + lap, n=5)
    window.record(now_ns=START, n=7)  # same slot, a lap earlier: must not overwrite
    assert window.count(now_ns=START + lap) == 5


def test_high_rates_need_no_more_memory_and_stay_exact_per_bucket():
    window = RequestWindow()
    # 100 million requests per minute, recorded 50 ms at a time.
    per_bucket = 100_000_000 // RequestWindow.buckets
    for b in range(RequestWindow.buckets):
        window.record(now_ns=START + b * RequestWindow.bucket_ns, n=per_bucket)
    now = START + RequestWindow.buckets * RequestWindow.bucket_ns - 1
    assert window.count(now_ns=now) == per_bucket * RequestWindow.buckets


def test_count_without_events_and_at_boot():
    window = RequestWindow()
    assert window.count(now_ns=START) == 0
    window.record(now_ns=0)
    assert window.count(now_ns=0) == 1
    assert window.count(now_ns=-5) == 1  # negative instants are clamped to 0
