"""The Redis backend (backend="redis://..."): one budget for every process and host naming the
same limiter on one server. Against a real redis-server (tests/redis_server.py)."""

import asyncio
import itertools
import json
import logging
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from helpers import common_start, need, run_children, start_thread, wait_until

from omnilimit import ConcurrencyLimiter, ConfigError, LimiterClosed, ProviderRateLimitManager, RateLimiter

redis = need("redis")

# ---- the rate limiter: the GCRA script ----------------------------------------------------------


def test_a_redis_url_makes_a_shared_rate_limiter_with_a_burst_then_pacing(redis_url, unique_name):
    limiter = RateLimiter(60, burst_size=3, provider_name=unique_name, backend=redis_url)
    # One class, composing the Redis store: no other class behind the name.
    assert type(limiter) is RateLimiter and type(limiter.store).__name__ == "RedisRateStore"
    assert limiter.backend == redis_url and repr(limiter).startswith("RateLimiter(requests_per_minute=60, burst_size=3")
    assert limiter.requests_available() == 3  # every host's, from Redis
    assert [limiter.acquire(timeout=0) for _ in range(4)] == [True, True, True, False]
    stats = limiter.get_stats()
    assert stats["total_requests"] == 3 and stats["blocked_count"] == 1 and stats["current_rpm"] == 3
    assert stats["tokens_available"] == 0 and stats["rpm_limit"] == 60
    assert limiter.metrics()["denied"] == 1


def test_two_limiters_of_one_name_share_one_bucket_and_the_latest_configuration_wins(redis_url, unique_name, caplog):
    first = RateLimiter(60, provider_name=unique_name, backend=redis_url)
    assert first.acquire(timeout=0)
    second = RateLimiter(60, provider_name=unique_name, backend=redis_url)
    assert second.acquire(timeout=0) is False  # the same bucket
    with caplog.at_level(logging.WARNING, logger="omnilimit"):
        RateLimiter(120, provider_name=unique_name, backend=redis_url)
    assert "the latest configuration wins" in caplog.text
    assert first.get_stats()["rpm_limit"] == 120  # every host reads the shared configuration


def test_a_wait_is_booked_then_slept_and_a_timeout_too_short_takes_nothing(redis_url, unique_name):
    limiter = RateLimiter(600, provider_name=unique_name, backend=redis_url)  # one every 100 ms
    assert limiter.acquire(timeout=0)
    started = time.monotonic()
    assert limiter.acquire(timeout=0.02, fail_fast=True) is False  # its turn is ~100 ms away
    assert time.monotonic() - started < 0.02  # the fail-fast form answers at once
    assert limiter.acquire(timeout=0.04) is False  # stands by, then False once the timeout passed
    assert 0.04 <= time.monotonic() - started < 0.1
    assert limiter.acquire(timeout=1)  # nothing was booked for those: the turn ~100 ms after the first
    waited = time.monotonic() - started
    assert 0.07 < waited < 0.3
    stats = limiter.get_stats()
    assert stats["total_requests"] == 2 and stats["blocked_count"] == 2  # each refusal counted once
    assert limiter.denied_count == 1


def test_the_redis_limiters_report_their_longest_wait_exactly(redis_url, unique_name):
    rate = RateLimiter(600, provider_name=unique_name, backend=redis_url)  # one every 100 ms
    assert rate.metrics()["wait_max_s"] == 0.0
    assert rate.acquire(timeout=0)
    started = time.monotonic()
    assert rate.acquire(timeout=1)
    took = time.monotonic() - started
    m = rate.metrics()
    assert 0.05 < m["wait_max_s"] <= took  # measured inside this acquire() call
    assert m["wait_p99_s"] == m["wait_max_s"] and m["wait_p50_s"] < 0.05  # exact samples: the top of 2
    slots = ConcurrencyLimiter(1, unique_name, backend=redis_url)
    assert slots.acquire(timeout=0)
    waited = []

    def wait_for_the_permit():
        began = time.monotonic()
        assert slots.acquire(timeout=5)
        waited.append(time.monotonic() - began)

    waiter = start_thread(wait_for_the_permit)
    wait_until(lambda: slots.waiting == 1)
    time.sleep(0.2)
    slots.release()
    waiter.join(5)
    m = slots.metrics()
    assert 0.2 <= m["wait_max_s"] <= waited[0]
    assert m["wait_p99_s"] == m["wait_max_s"]


def test_metrics_read_redis_once_and_agree(redis_url, unique_name, monkeypatch):
    """metrics() gathers a dozen numbers from properties that each read Redis: inside it they
    share one read, so the dictionary is one snapshot (it used to make 4-6 round trips, whose
    numbers could disagree) and costs one round trip."""
    from omnilimit.backends import redis_link

    calls = []
    real_run = redis_link.RedisLink.run

    def counted(self, script, keys, args):
        if threading.get_ident() == me:
            calls.append(script)
        return real_run(self, script, keys, args)

    me = threading.get_ident()
    monkeypatch.setattr(redis_link.RedisLink, "run", counted)
    rate = RateLimiter(600, provider_name=unique_name, backend=redis_url)
    slots = ConcurrencyLimiter(2, unique_name, backend=redis_url)
    assert rate.acquire(timeout=0) and slots.acquire(timeout=0)
    for limiter, script in ((rate, "RATE_STATS"), (slots, "SEM_STATS")):
        calls.clear()
        metrics = limiter.metrics()
        assert calls == [script]
        calls.clear()
        limiter.get_stats()
        assert calls == [script]
        assert metrics["admitted"] == 1
    assert rate.metrics()["current_rpm"] == rate.metrics()["admitted"] == 1
    slots.release()


def test_keys_are_hash_tagged_and_expire(redis_url, unique_name):
    limiter = RateLimiter(60, provider_name=unique_name, backend=redis_url)
    limiter.acquire(timeout=0)
    client = redis.Redis.from_url(redis_url)
    keys = sorted(k.decode() for k in client.scan_iter(match=f"omnilimit:{{{unique_name}}}:*"))
    assert keys, "no keys written"
    for key in keys:
        assert key.startswith(f"omnilimit:{{{unique_name}}}:rate:")
        assert 0 < client.ttl(key) <= 24 * 3600
    # A concurrency limiter's keys, the line included, created at any moment of a second.
    concurrency = ConcurrencyLimiter(1, unique_name, backend=redis_url)
    for _ in range(3):
        assert concurrency.acquire(timeout=0)
        assert concurrency.acquire(timeout=0.05) is False  # a waiter joined the line, then left
        waiter = start_thread(concurrency.acquire, 5)
        wait_until(lambda: concurrency.metrics()["waiting_everywhere"] == 1)
        all_keys = [k.decode() for k in client.scan_iter(match=f"omnilimit:{{{unique_name}}}:sem:*")]
        assert {k.rsplit(":", 1)[1] for k in all_keys} >= {"leases", "state", "line", "heartbeats"}
        assert all(0 < client.ttl(k) <= 24 * 3600 for k in all_keys), [(k, client.ttl(k)) for k in all_keys]
        concurrency.release()
        waiter.join(5)  # the waiter's turn; its permit is this process's once its acquire returned
        assert not waiter.is_alive() and concurrency.get_stats()["active_calls"] == 1
        concurrency.release()
        time.sleep(0.4)


def test_a_pause_holds_every_host(redis_url, unique_name):
    one = RateLimiter(6000, provider_name=unique_name, backend=redis_url)
    other = RateLimiter(6000, provider_name=unique_name, backend=redis_url)
    assert one.on_rate_limited(retry_after=0.3) >= 0.29
    started = time.monotonic()
    assert other.acquire(timeout=0) is False
    assert other.acquire(timeout=2)
    assert time.monotonic() - started > 0.25


def test_set_rate_moves_every_host(redis_url, unique_name):
    one = RateLimiter(60, provider_name=unique_name, backend=redis_url)
    other = RateLimiter(60, provider_name=unique_name, backend=redis_url)
    assert one.acquire(timeout=0)
    other.set_rate(6000)  # one every 10 ms now
    assert one.acquire(timeout=0.5)
    assert one.get_stats()["rpm_limit"] == 6000


def _booked_callers(limiter, count, run):
    """`count` callers of `limiter` (threads, or tasks of one loop in a thread) that each acquire
    once; returns the list their admission instants go to, and what to join."""
    admitted = []
    if run == "threads":

        def caller():
            if limiter.acquire(timeout=20):
                admitted.append(time.monotonic())

        threads = [start_thread(caller) for _ in range(count)]
        return admitted, lambda: [t.join(30) for t in threads]

    async def main():
        async def task():
            if await limiter.acquire_async(timeout=20):
                admitted.append(time.monotonic())

        await asyncio.gather(*(task() for _ in range(count)))

    thread = start_thread(asyncio.run, main())
    return admitted, lambda: thread.join(30)


@pytest.mark.parametrize("run", ["threads", "tasks"])
@pytest.mark.parametrize("where", ["this process", "another host"])
def test_a_pause_reaches_the_callers_already_asleep_on_a_booking(redis_url, unique_name, where, run):
    """Callers booked ahead (10 at one per 100 ms: up to 1 s) and a pause of 1 s declared by this
    limiter or by another host's (pub/sub): nobody goes during the pause, and after it the callers
    go at the pace again. Before, a booked caller went at its instant, into the provider's pause."""
    limiter = RateLimiter(600, provider_name=unique_name, backend=redis_url)  # burst 1
    other = limiter if where == "this process" else RateLimiter(600, provider_name=unique_name, backend=redis_url)
    admitted, join = _booked_callers(limiter, 10, run)
    wait_until(lambda: limiter.metrics()["waiting"] >= 8)
    paused_at = time.monotonic()
    assert other.pause(1.0) >= 0.99
    join()
    assert len(admitted) == 10
    during = [round(a - paused_at, 3) for a in admitted if paused_at + 0.05 < a < paused_at + 0.95]
    assert during == [], during
    after = sorted(a for a in admitted if a >= paused_at + 0.95)
    assert len(after) >= 8
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(after)]
    assert min(gaps) > 0.06, gaps  # paced (100 ms), not released together
    assert limiter.get_stats()["total_requests"] == 10  # an instant voided by the pause is not counted


def test_a_process_that_subscribes_late_catches_up_with_the_latest_pause_and_rate(redis_url, unique_name):
    """A caller's first booking starts its process's subscription; what another host published
    before it was confirmed (a pause, a new rate) is read back once (RATE_LATEST)."""
    late = RateLimiter(600, provider_name=unique_name, backend=redis_url)
    other = RateLimiter(600, provider_name=unique_name, backend=redis_url)
    other.pause(2.0)
    other.set_rate(300)
    assert late.paused_for == 0  # it heard nothing: it never waited, so never subscribed
    late.store._catch_up(late)
    assert 1.5 < late.paused_for <= 2.0
    assert late.store._moves and next(iter(late.store._moves.values())).ratio == 2.0  # 600 -> 300 RPM


@pytest.mark.parametrize("run", ["threads", "tasks"])
@pytest.mark.parametrize("where", ["this process", "another host"])
def test_a_slower_rate_reaches_the_callers_already_asleep_on_a_booking(redis_url, unique_name, where, run):
    """Callers booked at 1200 RPM (one per 50 ms) and the rate set to 300 RPM (one per 200 ms),
    here or on another host: the callers still asleep go at the new pace, not at the old one."""
    limiter = RateLimiter(1200, provider_name=unique_name, backend=redis_url)
    other = limiter if where == "this process" else RateLimiter(1200, provider_name=unique_name, backend=redis_url)
    admitted, join = _booked_callers(limiter, 12, run)
    wait_until(lambda: limiter.metrics()["waiting"] >= 10)
    changed_at = time.monotonic()
    other.set_rate(300)
    join()
    assert len(admitted) == 12
    after = sorted(a for a in admitted if a > changed_at + 0.05)
    assert len(after) >= 8
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(after)]
    assert min(gaps) > 0.15, [round(a - changed_at, 3) for a in after]  # 200 ms apart, not 50
    assert limiter.get_stats()["total_requests"] == 12  # moved, not booked twice


def test_a_cancelled_async_wait_gives_its_booking_back(redis_url, unique_name):
    limiter = RateLimiter(60, provider_name=unique_name, backend=redis_url)  # one a second

    async def main():
        assert await limiter.acquire_async(timeout=0)
        waiter = asyncio.ensure_future(limiter.acquire_async(timeout=5))
        await asyncio.sleep(0.2)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        async with limiter:  # the refunded instant is the next one: about 1 s after the first
            pass

    started = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - started < 1.6  # not 2 s: the cancelled booking was given back
    assert limiter.get_stats()["total_requests"] == 2


def test_four_processes_share_3000_rpm_within_one_percent(redis_url, unique_name):
    start = common_start(4)  # system-wide on Linux: one start for all, after their imports
    seconds = 6.0
    stamps = run_children(
        4,
        """
        import json, threading, time
        from omnilimit import RateLimiter
        limiter = RateLimiter(3000, provider_name="{name}", backend="{url}")
        start, end = {start}, {start} + {seconds}
        stamps, lock = [], threading.Lock()

        def work():
            while time.monotonic() < start:
                time.sleep(0.001)
            while True:
                left = end - time.monotonic()
                if left <= 0 or not limiter.acquire(timeout=left):
                    return
                now = time.monotonic()
                if now >= end:
                    return
                with lock:
                    stamps.append(now)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads: t.start()
        for t in threads: t.join()
        print(json.dumps(stamps))
        """,
        name=unique_name,
        url=redis_url,
        start=start,
        seconds=seconds,
    )
    merged = sorted(s for child in stamps for s in child)
    ideal = seconds * 3000 / 60  # 300 instants in the run (burst 1)
    assert abs(len(merged) - ideal) <= 0.01 * ideal + 1, (len(merged), ideal)
    assert all(child for child in stamps), "a process got nothing"
    # No second holds more than its share (50), plus one for the burst and one for the stamps'
    # jitter (taken in each process after its sleep, not at the instant Redis booked).
    j = 0
    for i, t in enumerate(merged):
        while merged[j] <= t - 1.0:
            j += 1
        assert i - j + 1 <= 52


# ---- the concurrency limiter: leases ------------------------------------------------------------


def test_leased_permits_cap_and_release(redis_url, unique_name):
    limiter = ConcurrencyLimiter(2, unique_name, backend=redis_url)
    assert type(limiter) is ConcurrencyLimiter and type(limiter.store).__name__ == "RedisConcurrencyStore"
    assert limiter.acquire(timeout=0) and limiter.acquire(timeout=0)
    assert limiter.acquire(timeout=0) is False
    assert limiter.get_stats() == {"max_concurrent": 2, "active_calls": 2, "total_requests": 2, "available_slots": 0}
    limiter.release()
    assert limiter.get_stats()["active_calls"] == 1
    limiter.release()
    limiter.release()  # nothing held: ignored and counted, capacity stays 2
    assert limiter.over_release_count == 1
    assert limiter.get_stats()["available_slots"] == 2


def test_only_the_owner_releases(redis_url, unique_name):
    holder = ConcurrencyLimiter(1, unique_name, backend=redis_url)
    stranger = ConcurrencyLimiter(1, unique_name, backend=redis_url)
    assert holder.acquire(timeout=0)
    stranger.release()  # holds nothing: cannot free the holder's permit
    assert stranger.over_release_count == 1
    assert stranger.acquire(timeout=0) is False
    holder.release()
    assert stranger.acquire(timeout=0)
    stranger.release()


def test_a_concurrency_pause_reaches_every_host(redis_url, unique_name):
    """A 429 seen on one host pauses the others' concurrency limiter too: a caller there that gets
    a permit during the pause waits out the rest (or, when it outlasts its timeout, gives the
    permit back and returns False once the timeout has passed)."""
    here = ConcurrencyLimiter(2, unique_name, backend=redis_url)
    there = ConcurrencyLimiter(2, unique_name, backend=redis_url)  # another host's limiter
    assert 0.9 < here.pause(1.0) <= 1.0
    started = time.monotonic()
    assert there.acquire(timeout=0.3) is False  # the pause outlasts the timeout
    assert 0.25 < time.monotonic() - started < 1.0 and there.active_calls == 0
    assert there.acquire(timeout=5)
    waited = time.monotonic() - started
    assert 0.9 < waited < 2.0, waited  # the rest of the pause (plus its jitter), not the timeout
    there.release()
    assert there.paused_for == 0


def test_a_waiter_is_woken_by_a_release_in_another_process(redis_url, unique_name):
    limiter = ConcurrencyLimiter(1, unique_name, backend=redis_url)
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import sys, time\nfrom omnilimit import ConcurrencyLimiter\n"
            f"c = ConcurrencyLimiter(1, {unique_name!r}, backend={redis_url!r})\n"
            f"assert c.acquire(timeout=5)\nprint('held', flush=True)\ntime.sleep(0.5)\nc.release()\n"
            f"print('released', time.monotonic(), flush=True)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "held"
        assert limiter.acquire(timeout=0) is False
        assert limiter.acquire(timeout=10)
        woken = time.monotonic()
        released = float(child.stdout.readline().split()[1])
        assert woken - released < 0.3  # woken by the release's message, not by a fallback look
        limiter.release()
    finally:
        child.wait(10)
        child.stdout.close()


def test_a_killed_clients_permits_come_back_after_the_lease(redis_url, unique_name):
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import os, time\nfrom omnilimit import ConcurrencyLimiter\n"
            f"c = ConcurrencyLimiter(2, {unique_name!r}, backend={redis_url!r}, lease_seconds=1.0)\n"
            f"assert c.acquire(timeout=5) and c.acquire(timeout=5)\nprint('held', flush=True)\ntime.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "held"
        child.kill()
        child.wait(10)
        killed = time.monotonic()
        limiter = ConcurrencyLimiter(2, unique_name, backend=redis_url, lease_seconds=1.0)
        assert limiter.acquire(timeout=0) is False
        assert limiter.acquire(timeout=5) and limiter.acquire(timeout=5)
        assert time.monotonic() - killed < 2.5  # one lease (1 s), not a timeout
        assert limiter.metrics()["leases_expired"] == 2
    finally:
        child.kill()
        child.wait(10)
        child.stdout.close()


def test_a_long_call_keeps_its_permit_past_the_lease(redis_url, unique_name):
    holder = ConcurrencyLimiter(1, unique_name, backend=redis_url, lease_seconds=0.3)
    other = ConcurrencyLimiter(1, unique_name, backend=redis_url, lease_seconds=0.3)
    assert holder.acquire(timeout=0)
    time.sleep(1.2)  # four leases long: renewed in the background
    assert other.acquire(timeout=0) is False
    holder.release()
    assert other.acquire(timeout=1)
    other.release()


def test_four_processes_never_exceed_the_cap(redis_url, unique_name):
    results = run_children(
        4,
        """
        import json, threading, time
        from omnilimit import ConcurrencyLimiter
        limiter = ConcurrencyLimiter(3, "{name}", backend="{url}")
        spans, lock = [], threading.Lock()

        def work():
            for _ in range(15):
                assert limiter.acquire(timeout=30)
                began = time.monotonic()
                time.sleep(0.005)
                ended = time.monotonic()
                limiter.release()
                with lock:
                    spans.append((began, ended))

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads: t.start()
        for t in threads: t.join()
        print(json.dumps(spans))
        """,
        name=unique_name,
        url=redis_url,
    )
    events = sorted((t, kind) for child in results for began, ended in child for t, kind in ((began, 1), (ended, -1)))
    inside = peak = 0
    for _, kind in events:
        inside += kind
        peak = max(peak, inside)
    assert sum(len(child) for child in results) == 4 * 4 * 15  # nothing lost
    assert 1 <= peak <= 3
    assert ConcurrencyLimiter(3, unique_name, backend=redis_url).get_stats()["active_calls"] == 0


def test_many_threads_with_a_tiny_switch_interval(redis_url, unique_name, tiny_switch_interval):
    limiter = ConcurrencyLimiter(4, unique_name, backend=redis_url)
    inside = peak = done = 0
    lock = threading.Lock()

    def work():
        nonlocal inside, peak, done
        for _ in range(20):
            with limiter:
                with lock:
                    inside += 1
                    peak = max(peak, inside)
                with lock:
                    inside -= 1
                    done += 1

    threads = [start_thread(work) for _ in range(16)]
    for thread in threads:
        thread.join(60)
    assert done == 16 * 20 and peak <= 4
    assert limiter.get_stats()["active_calls"] == 0


def test_async_waiters_share_the_permits(redis_url, unique_name):
    limiter = ConcurrencyLimiter(2, unique_name, backend=redis_url)
    inside = peak = 0

    async def call():
        nonlocal inside, peak
        async with limiter:
            inside += 1
            peak = max(peak, inside)
            await asyncio.sleep(0.01)
            inside -= 1

    async def main():
        await asyncio.gather(*(call() for _ in range(12)))

    asyncio.run(main())
    assert peak == 2 and limiter.get_stats()["total_requests"] == 12
    assert limiter.get_stats()["active_calls"] == 0


# ---- outages --------------------------------------------------------------------------------------


def test_closed_waits_for_redis_then_denies_and_recovers(redis_server, unique_name, caplog):
    limiter = RateLimiter(6000, provider_name=unique_name, backend=redis_server.url)
    assert limiter.acquire(timeout=0)
    redis_server.stop()
    with caplog.at_level(logging.INFO, logger="omnilimit"):
        started = time.monotonic()
        assert limiter.acquire(timeout=0.3) is False  # waited for Redis, then denied
        assert 0.25 < time.monotonic() - started < 2.0
        assert limiter.acquire(timeout=0.1) is False
        assert limiter.backend_available is False and "backend_error" in limiter.get_stats()
        redis_server.start()
        assert limiter.acquire(timeout=3)  # the outage ends by itself
        assert limiter.backend_available
    assert caplog.text.count("is unreachable") == 1  # logged once per outage
    assert "is back after" in caplog.text
    assert limiter.metrics()["outage_denied"] == 2


def test_open_admits_everyone_while_redis_is_away(redis_server, unique_name):
    limiter = RateLimiter(60, provider_name=unique_name, backend=redis_server.url, on_backend_error="open")
    assert limiter.acquire(timeout=0)
    redis_server.stop()
    started = time.monotonic()
    assert all(limiter.acquire(timeout=0) for _ in range(20))
    assert time.monotonic() - started < 1.5
    redis_server.start()
    wait_until(lambda: limiter.acquire(timeout=0) is False, timeout=5)  # limited by Redis again


def test_local_limits_each_process_to_its_fraction(redis_server, unique_name):
    limiter = RateLimiter(
        600, provider_name=unique_name, backend=redis_server.url, on_backend_error="local", local_fraction=0.5
    )
    redis_server.stop()
    started = time.monotonic()
    admitted = 0
    while time.monotonic() - started < 1.0:
        admitted += limiter.acquire(timeout=max(0.0, 1.0 - (time.monotonic() - started)))
    assert 3 <= admitted <= 7  # 300 RPM alone: one every 200 ms
    redis_server.start()
    wait_until(lambda: limiter.acquire(timeout=0) and limiter.backend_available, timeout=5)


def test_concurrency_policies_and_leases_put_back_after_a_restart(redis_server, unique_name):
    closed = ConcurrencyLimiter(2, unique_name, backend=redis_server.url, lease_seconds=0.6)
    local = ConcurrencyLimiter(
        4, unique_name + "-l", backend=redis_server.url, on_backend_error="local", local_fraction=0.5
    )
    opened = ConcurrencyLimiter(1, unique_name + "-o", backend=redis_server.url, on_backend_error="open")
    assert closed.acquire(timeout=0) and closed.acquire(timeout=0)
    redis_server.stop()
    assert closed.acquire(timeout=0.2) is False
    assert [local.acquire(timeout=0) for _ in range(3)] == [True, True, False]  # 2 of 4 alone
    assert all(opened.acquire(timeout=0) for _ in range(3))
    local.release()
    local.release()
    assert local.acquire(timeout=0)
    local.release()
    redis_server.start()  # without persistence: the held leases are gone ...
    wait_until(lambda: "backend_error" not in closed.get_stats(), timeout=5)
    # ... and the holder puts them back (its calls still run): nobody else gets a permit.
    wait_until(lambda: closed.get_stats()["active_calls"] == 2, timeout=5)
    assert ConcurrencyLimiter(2, unique_name, backend=redis_server.url).acquire(timeout=0) is False
    closed.release()
    closed.release()
    assert closed.get_stats()["active_calls"] == 0


def test_nothing_hangs_when_redis_stops_under_load(redis_server, unique_name):
    limiter = ConcurrencyLimiter(2, unique_name, backend=redis_server.url)
    results = []

    def work():
        for _ in range(30):
            if limiter.acquire(timeout=0.5):
                time.sleep(0.005)
                limiter.release()
                results.append(True)
            else:
                results.append(False)

    threads = [start_thread(work) for _ in range(6)]
    time.sleep(0.1)
    redis_server.stop()
    time.sleep(0.5)
    redis_server.start()
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive()
    assert len(results) == 180 and any(results)


# ---- configuration --------------------------------------------------------------------------------


def test_yaml_keys_build_redis_limiters(redis_url, unique_name):
    config = {
        "providers": {
            "r": {
                "name": "openai",
                "rate_limit_rpm": 600,
                "rate_limit_shared_key": unique_name,
                "rate_limit_backend": redis_url,
                "rate_limit_on_backend_error": "local",
                "rate_limit_local_fraction": 0.25,
            },
            "c": {
                "name": "openai",
                "max_concurrent_calls": 5,
                "rate_limit_shared_key": unique_name + "-c",
                "rate_limit_backend": redis_url,
                "rate_limit_lease_seconds": 10,
            },
        }
    }
    manager = ProviderRateLimitManager.from_config(config)
    rate, conc = manager.limiter_for("r"), manager.limiter_for("c")
    assert type(rate.store).__name__ == "RedisRateStore" and rate.on_backend_error == "local"
    assert type(conc.store).__name__ == "RedisConcurrencyStore" and conc.lease_seconds == 10
    assert (
        rate.acquire(timeout=0) and RateLimiter(600, provider_name=unique_name, backend=redis_url).acquire(0) is False
    )
    with conc:
        assert manager.get_all_stats()[unique_name + "-c"]["active_calls"] == 1


@pytest.mark.parametrize(
    ("settings", "key", "match"),
    [
        ({"rate_limit_on_backend_error": "closed"}, "rate_limit_on_backend_error", "applies only to a Redis"),
        ({"rate_limit_backend": "redis://h/0", "rate_limit_on_backend_error": "fail"}, None, "must be one of"),
        ({"rate_limit_backend": "redis://h/0", "rate_limit_on_backend_error": "local"}, None, "needs"),
        (
            {
                "rate_limit_backend": "redis://h/0",
                "rate_limit_on_backend_error": "local",
                "rate_limit_local_fraction": 2,
            },
            None,
            r"\(0, 1\]",
        ),
        ({"rate_limit_backend": "redis://h/0", "rate_limit_local_fraction": 0.5}, None, "applies only to"),
        ({"rate_limit_backend": "redis://h/0", "rate_limit_lease_seconds": 0}, None, ">= 0.1"),
        ({"rate_limit_backend": "redis+cluster://h/3"}, None, "only database 0"),
    ],
)
def test_bad_redis_settings_are_config_errors(settings, key, match):
    with pytest.raises(ConfigError, match=match):
        ProviderRateLimitManager.from_config({"providers": {"p": {"rate_limit_rpm": 60, **settings}}})


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="only to a Redis"):
        RateLimiter(60, on_backend_error="open")
    with pytest.raises(ValueError, match="only to a Redis"):
        ConcurrencyLimiter(2, lease_seconds=5)
    with pytest.raises(ValueError, match="local_fraction"):  # the policy local needs its fraction
        RateLimiter(60, tokens_per_minute=1000, backend="redis://127.0.0.1:1/0", on_backend_error="local")


def test_a_client_object_is_a_backend(redis_url, unique_name):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    limiter = RateLimiter(60, provider_name=unique_name, backend=client)
    assert limiter.acquire(timeout=0) and limiter.acquire(timeout=0) is False
    assert limiter.get_stats()["total_requests"] == 1
    concurrency = ConcurrencyLimiter(1, unique_name, backend=client)
    with concurrency:
        assert concurrency.acquire(timeout=0) is False
    assert concurrency.get_stats()["active_calls"] == 0


def test_a_redis_cluster_url(unique_name):
    from redis_server import RedisClusterOfThree

    cluster = RedisClusterOfThree()
    try:
        cluster.start()
        limiter = RateLimiter(60, provider_name=unique_name, backend=cluster.url)
        assert limiter.acquire(timeout=0) and limiter.acquire(timeout=0) is False
        assert limiter.get_stats()["total_requests"] == 1
        holder = ConcurrencyLimiter(1, unique_name, backend=cluster.url)
        waiter = ConcurrencyLimiter(1, unique_name, backend=cluster.url)
        assert holder.acquire(timeout=0)
        start_thread(lambda: (time.sleep(0.3), holder.release()))
        started = time.monotonic()
        assert waiter.acquire(timeout=5)  # woken through the cluster's pub/sub
        assert time.monotonic() - started < 0.9
        waiter.release()
        client = redis.cluster.RedisCluster.from_url(cluster.url.replace("+cluster", ""))
        keys = list(client.scan_iter(match="omnilimit:*"))
        assert len(keys) >= 4 and len({client.keyslot(key) for key in keys}) == 1  # the hash tag: one slot
    finally:
        cluster.close()


# ---- the line: arrival order across hosts ---------------------------------------------------------


def test_waiters_of_several_processes_go_in_arrival_order(redis_url, unique_name):
    holder = ConcurrencyLimiter(1, unique_name, backend=redis_url)
    assert holder.acquire(timeout=0)
    children = []
    for index in range(4):  # each queues 0.3 s after the previous one
        children.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    f"import time\nfrom omnilimit import ConcurrencyLimiter\n"
                    f"c = ConcurrencyLimiter(1, {unique_name!r}, backend={redis_url!r})\n"
                    f"print('ready', flush=True)\nassert c.acquire(timeout=30)\n"
                    f"print({index}, time.monotonic(), flush=True)\ntime.sleep(0.05)\nc.release()\n",
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
        )
        assert children[-1].stdout.readline().strip() == "ready"
        wait_until(lambda n=index + 1: holder.metrics()["waiting_everywhere"] == n, timeout=10)
    holder.release()
    got = []
    for child in children:
        index, at = child.stdout.readline().split()
        got.append((float(at), int(index)))
        child.wait(30)
        child.stdout.close()
    assert [index for _, index in sorted(got)] == [0, 1, 2, 3]


def _append_acquired(into, limiter):
    into.append(limiter.acquire(timeout=10))


def test_a_newcomer_does_not_pass_the_line(redis_url, unique_name):
    holder = ConcurrencyLimiter(1, unique_name, backend=redis_url)
    newcomer = ConcurrencyLimiter(1, unique_name, backend=redis_url)
    waiter = ConcurrencyLimiter(1, unique_name, backend=redis_url)
    for _ in range(10):
        assert holder.acquire(timeout=0)
        done: list[bool] = []
        thread = start_thread(_append_acquired, done, waiter)
        wait_until(lambda: holder.metrics()["waiting_everywhere"] == 1)
        holder.release()
        assert newcomer.acquire(timeout=0) is False  # the permit is the waiter's
        thread.join(10)
        assert done == [True]
        waiter.release()
    assert newcomer.acquire(timeout=0)
    newcomer.release()


def test_a_dead_waiter_leaves_the_line(redis_url, unique_name):
    holder = ConcurrencyLimiter(1, unique_name, backend=redis_url)
    assert holder.acquire(timeout=0)
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from omnilimit import ConcurrencyLimiter\n"
            f"c = ConcurrencyLimiter(1, {unique_name!r}, backend={redis_url!r})\nc.acquire(timeout=60)\n",
        ]
    )
    try:
        wait_until(lambda: holder.metrics()["waiting_everywhere"] == 1, timeout=10)
        child.kill()
        child.wait(10)
        done = []
        start_thread(lambda: done.append(ConcurrencyLimiter(1, unique_name, backend=redis_url).acquire(timeout=15)))
        wait_until(lambda: holder.metrics()["waiting_everywhere"] == 2)
        started = time.monotonic()
        holder.release()  # the dead waiter is first in line: its turn is announced, nobody takes it ...
        wait_until(lambda: done == [True], timeout=10)  # ... until its heartbeat runs out
        assert time.monotonic() - started < 3.0 + 2.5
    finally:
        child.kill()


@pytest.mark.parametrize("policy", ["closed", "open", "local"])
def test_four_processes_through_a_redis_restart(redis_server, unique_name, policy):
    """4 processes x 4 threads on 1200 RPM (20/s) for 6 s; Redis is away from 2.0 s to 3.5 s."""
    start = common_start(4)
    seconds, down_at, up_at = 6.0, 2.0, 3.5
    fraction = ", local_fraction=0.25" if policy == "local" else ""
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                textwrap.dedent(
                    f"""
                    import json, threading, time
                    from omnilimit import RateLimiter
                    limiter = RateLimiter(1200, provider_name={unique_name!r}, backend={redis_server.url!r},
                                          on_backend_error={policy!r}{fraction})
                    start, end = {start}, {start} + {seconds}
                    stamps, lock = [], threading.Lock()

                    def work():
                        while time.monotonic() < start:
                            time.sleep(0.001)
                        while True:
                            left = end - time.monotonic()
                            if left <= 0:
                                return
                            if limiter.acquire(timeout=min(left, 0.5)):
                                with lock:
                                    stamps.append(time.monotonic())

                    threads = [threading.Thread(target=work) for _ in range(4)]
                    for t in threads: t.start()
                    for t in threads: t.join()
                    print(json.dumps(stamps))
                    """
                ),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    time.sleep(max(0.0, start + down_at - time.monotonic()))
    redis_server.stop()
    time.sleep(max(0.0, start + up_at - time.monotonic()))
    redis_server.start()
    stamps = []
    for child in children:
        out, err = child.communicate(timeout=60)  # nothing hangs
        assert child.returncode == 0 and "Traceback" not in err, err
        stamps += json.loads(out)
    outage = [t for t in stamps if start + down_at <= t < start + up_at]
    # Each process finds Redis back at its next probe (at most RETRY_S = 0.5 s after the server
    # answers); give that a margin on this loaded machine before counting.
    after_from = up_at + 1.2
    after = [t for t in stamps if start + after_from <= t < start + seconds]
    booked_ahead = 16  # each thread may hold one instant booked before Redis went away
    if policy == "closed":
        assert len(outage) <= booked_ahead  # nothing decided while Redis was away
        assert len(stamps) <= seconds * 20 + 2
    elif policy == "local":
        assert len(outage) <= booked_ahead + 4 * (1.5 * 5 + 1)  # each process alone at a quarter: 5/s
        assert len(outage) >= 4 * 1.5 * 5 * 0.5
    else:
        assert len(outage) > 1.5 * 20 * 3  # unlimited while Redis was away
    assert abs(len(after) - (seconds - after_from) * 20) <= 3  # shared again, at the limit


def test_close_wakes_the_waiters_and_refuses_newcomers(redis_url, unique_name):
    limiter = ConcurrencyLimiter(1, unique_name, backend=redis_url)
    assert limiter.acquire(timeout=0)
    errors = []

    def wait():
        try:
            limiter.acquire(timeout=30)
        except LimiterClosed as error:
            errors.append(error)

    threads = [start_thread(wait) for _ in range(3)]
    wait_until(lambda: limiter.waiting == 3)
    assert limiter.metrics()["waiting_everywhere"] == 3
    limiter.close()
    for thread in threads:
        thread.join(10)
    assert len(errors) == 3 and limiter.waiting == 0
    wait_until(lambda: limiter.metrics()["waiting_everywhere"] == 0)  # they left the line
    with pytest.raises(LimiterClosed):
        limiter.acquire(timeout=0)
    limiter.release()  # releases still work
    assert limiter.get_stats()["active_calls"] == 0


def busy_limiter(kind, url, name):
    """A limiter of ``kind`` whose next acquire must wait (in line, or asleep on a far instant)."""
    if kind == "concurrency":
        limiter = ConcurrencyLimiter(1, name, backend=url)
        assert limiter.acquire(timeout=0)
    elif kind == "tokens":
        limiter = RateLimiter(600, provider_name=name, backend=url, tokens_per_minute=600, token_burst=1000)
        assert limiter.acquire(tokens=1000, timeout=0)
    else:
        limiter = RateLimiter(6, provider_name=name, backend=url)  # the next instant is 10 s away
        assert limiter.acquire(timeout=0)
    return limiter


@pytest.mark.parametrize(
    ("kind", "how"),
    [
        ("concurrency", "thread"),
        ("concurrency", "coroutine"),
        ("tokens", "thread"),
        ("tokens", "coroutine"),
        ("rate", "thread"),
    ],  # a coroutine of the rate limiter stands by on a future made before its look at closed
)
def test_a_close_landing_between_a_waiters_looks_still_wakes_it_at_once(redis_url, unique_name, kind, how, monkeypatch):
    """close() sets ``closed``, then wakes this process's waiters. A waiter that looks at
    ``closed`` just before and is woken just before it forgets its earlier wakes (its next try, or
    its reading of the stand-by generation) would sleep its whole bound (the 1-s look of the line,
    or until a booked instant 10 s away): close() is made to land exactly there (a CI run met it
    once by chance: woken after 1.0 s)."""
    from omnilimit.backends import redis_wakeups

    limiter = busy_limiter(kind, url=redis_url, name=unique_name)
    looks = []

    def close_on_the_second_look(look):
        looks.append(1)
        if len(looks) == 2:
            limiter.close()
        return look()

    if kind == "rate":
        generation = RateLimiter._standby_generation
        monkeypatch.setattr(
            RateLimiter, "_standby_generation", lambda me: close_on_the_second_look(lambda: generation(me))
        )
    else:
        forget = redis_wakeups.Waiter.before_try
        monkeypatch.setattr(
            redis_wakeups.Waiter, "before_try", lambda waiter: close_on_the_second_look(lambda: forget(waiter))
        )
    if kind == "tokens":  # the line's announcement of its head (which would rescue it) comes late
        from omnilimit.backends import redis_tokens

        monkeypatch.setattr(redis_tokens, "_notify", lambda store, message: None)
    options = {"tokens": 500} if kind == "tokens" else {}
    started = time.monotonic()
    with pytest.raises(LimiterClosed):
        if how == "thread":
            limiter.acquire(timeout=60, **options)
        else:
            asyncio.run(limiter.acquire_async(timeout=60, **options))
    assert len(looks) >= 2 and limiter.closed
    assert time.monotonic() - started < 0.5


def test_a_forked_child_shares_the_limiter_but_not_the_parents_permits(redis_url, unique_name):
    import multiprocessing

    limiter = ConcurrencyLimiter(2, unique_name, backend=redis_url)
    assert limiter.acquire(timeout=0)  # the parent's permit (its keeper thread renews it)
    context = multiprocessing.get_context("fork")
    results = context.Queue()

    def child():
        limiter.release()  # the parent's permit is not the child's to give back
        over = limiter.over_release_count
        took = limiter.acquire(timeout=5)  # the second permit, through the child's own connection
        active = limiter.get_stats()["active_calls"]
        limiter.release()
        results.put((over, took, active))

    process = context.Process(target=child)
    process.start()
    over, took, active = results.get(timeout=30)
    process.join(30)
    assert process.exitcode == 0
    assert over == 1 and took is True and active == 2
    assert limiter.get_stats()["active_calls"] == 1  # the parent still holds its own
    limiter.release()
    assert limiter.get_stats()["active_calls"] == 0


def test_a_password_in_the_url_never_shows(caplog):
    from redis_server import free_port

    secret = "hunter2"
    url = f"redis://:{secret}@127.0.0.1:{free_port()}/0?password={secret}"  # nobody listens there
    with caplog.at_level(logging.INFO, logger="omnilimit"):
        rate = RateLimiter(60, provider_name="secret", backend=url, on_backend_error="open")
        slots = ConcurrencyLimiter(2, name="secret", backend=url, on_backend_error="open")
        assert rate.acquire(timeout=0) and slots.acquire(timeout=0)  # the outage policy: open
        slots.release()
    shown = [repr(rate), repr(slots), str(rate.metrics()), str(slots.metrics()), rate.backend, caplog.text]
    assert "unreachable" in caplog.text  # the outage was logged, with the redacted URL
    assert all(secret not in text for text in shown), shown
    assert "***" in rate.backend


@pytest.mark.parametrize("rpm", [3e-302, 1e-300, 1e-12])
def test_a_rate_too_slow_for_a_double_admits_one_then_nothing_as_in_process(redis_url, unique_name, rpm):
    limiter = RateLimiter(rpm, provider_name=unique_name, backend=redis_url)
    local = RateLimiter(rpm)
    assert [limiter.acquire(timeout=0) for _ in range(3)] == [local.acquire(timeout=0) for _ in range(3)]
    assert [local.acquire(timeout=0) for _ in range(2)] == [False, False]
    assert limiter.acquire(timeout=0.05) is False and limiter.get_stats()["total_requests"] == 1


@pytest.mark.parametrize("policy", ["closed", "open", "local"])
def test_a_hung_redis_costs_a_caller_a_fraction_of_a_second_and_opens_an_outage(redis_server, unique_name, policy):
    import signal

    options = {"on_backend_error": policy}
    if policy == "local":
        options["local_fraction"] = 1.0
    limiter = RateLimiter(600, provider_name=unique_name, backend=redis_server.url, **options)
    assert limiter.acquire(timeout=0)
    redis_server.process.send_signal(signal.SIGSTOP)  # hangs instead of refusing
    try:
        started = time.monotonic()
        limiter.acquire(timeout=0.2)
        first = time.monotonic() - started
        assert first < 0.2 + 0.35  # the socket timeout (0.25 s), not 4 s
        assert limiter.backend_available is False  # a timed-out round trip opened an outage
        started = time.monotonic()
        answers = [limiter.acquire(timeout=0) for _ in range(5)]
        assert time.monotonic() - started < 0.3  # the policy answers while Redis hangs
        assert answers == {"closed": [False] * 5, "open": [True] * 5, "local": answers}[policy]
    finally:
        redis_server.process.send_signal(signal.SIGCONT)
    wait_until(lambda: limiter.acquire(timeout=0.5) is not None and limiter.backend_available, timeout=5)


def test_coroutines_admitted_by_the_local_policy_are_counted_as_threads_are(redis_server, unique_name):
    """A coroutine admitted under ``local`` during an outage counts in ``outage_admitted``, as a
    thread does (the async path admitted without counting)."""

    limiter = ConcurrencyLimiter(4, unique_name, backend=redis_server.url, on_backend_error="local", local_fraction=0.5)
    redis_server.stop()
    assert limiter.acquire(timeout=0)  # a thread: 1 of this process's 2
    assert asyncio.run(limiter.acquire_async(timeout=0))  # a coroutine: the 2nd
    assert asyncio.run(limiter.acquire_async(timeout=0)) is False  # 2 of 4 alone
    assert limiter.metrics()["outage_admitted"] == 2
    limiter.release()
    limiter.release()
    redis_server.start()


# ---- the limiter composes its store -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rate", "concurrency"])
def test_a_dropped_redis_limiter_is_freed_at_once_with_its_store(redis_url, unique_name, kind):
    """The store never holds its limiter: no reference cycle (the native core is invisible to the
    garbage collector, so a cycle through it would never be freed), and dropping the limiter
    stops the store's thread."""
    import gc
    import weakref

    before = set(threading.enumerate())
    gc.disable()  # freed by reference counting alone
    try:
        if kind == "rate":
            limiter = RateLimiter(60, burst_size=1, provider_name=unique_name, backend=redis_url)
            assert limiter.acquire(timeout=0)
            assert limiter.acquire(timeout=0.2) is False  # stood by: the change feed listens
        else:
            limiter = ConcurrencyLimiter(1, unique_name, backend=redis_url)
            with limiter:
                assert limiter.acquire(timeout=0.3) is False  # waited: the keeper thread listens
        threads = {t for t in set(threading.enumerate()) - before if t.name.startswith("omnilimit")}
        assert threads, "the store started no thread: nothing to check"
        limiter_ref, store_ref = weakref.ref(limiter), weakref.ref(limiter.store)
        del limiter
        assert limiter_ref() is None and store_ref() is None
        wait_until(lambda: not any(t.is_alive() for t in threads), timeout=10)
    finally:
        gc.enable()


def test_with_uses_the_store_and_a_refusal_is_the_limiters_to_report(redis_url, unique_name, caplog):
    limiter = ConcurrencyLimiter(1, unique_name, backend=redis_url)
    other = ConcurrencyLimiter(1, unique_name, backend=redis_url)  # another process's view, same cap
    with limiter:
        assert other.active_calls == 1  # the permit is in Redis, not in this limiter's core
        with caplog.at_level(logging.WARNING, logger="omnilimit"):
            assert other.acquire(timeout=0.2) is False
            assert other.acquire(timeout=0) is False
        assert other.denied_count == 1 and other.metrics()["timed_out"] >= 1
        assert [r.getMessage() for r in caplog.records] == [f"Concurrency limit timeout after 0.2s for {unique_name}"]
    assert other.active_calls == 0
    other.release()  # nothing held: counted, not given to anyone
    assert other.over_release_count == 1 and limiter.acquire(timeout=0) and other.acquire(timeout=0) is False


def test_a_release_in_the_finally_of_a_failed_acquire_frees_nobody_elses_permit(redis_url, unique_name):
    """OmniGen's callers release in a ``finally`` even when ``acquire()`` timed out. On a Redis
    limiter that release used to give back another thread's permit (the process's oldest), one
    call more than the cap; the native core's over-release rule now applies to every store."""
    limiter = ConcurrencyLimiter(1, unique_name, backend=redis_url)
    other_host = ConcurrencyLimiter(1, unique_name, backend=redis_url)
    holding, done = threading.Event(), threading.Event()

    def holder():
        with limiter:
            holding.set()
            done.wait(10)

    thread = start_thread(holder)
    assert holding.wait(5)
    try:
        limiter.acquire(timeout=0.1)  # fails: the one permit is the holder's
    finally:
        limiter.release()  # the `finally` of omnigen's generators
    assert limiter.over_release_count == 1
    assert other_host.active_calls == 1 and other_host.acquire(timeout=0) is False  # still held
    done.set()
    thread.join(5)
    assert other_host.active_calls == 0 and other_host.acquire(timeout=0)
