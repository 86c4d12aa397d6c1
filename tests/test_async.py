"""asyncio on the same limiters as threads: acquire_async, async with, @limit; one budget, one
arrival order, woken by the core (no polling), cancellation-safe, from several loops at once."""

import asyncio
import bisect
import gc
import logging
import random
import threading
import time

import pytest
from helpers import start_thread, wait_until

from omnilimit import (
    CombinedLimiter,
    ConcurrencyLimiter,
    LimiterClosed,
    ProviderRateLimitManager,
    RateLimiter,
)

SLACK = 0.25


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


# ------------------------------------------------------------------------------------------------
# The acceptance


def test_ten_thousand_tasks_and_sixteen_threads_share_eight_slots(tiny_switch_interval):
    limiter = ConcurrencyLimiter(8)
    lock = threading.Lock()
    in_flight = [0]
    peak = [0]
    done = {"tasks": 0, "threads": 0}

    def enter():
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])

    def leave():
        with lock:
            in_flight[0] -= 1

    stop_threads = threading.Event()

    def thread_worker():
        while not stop_threads.is_set():
            assert limiter.acquire(timeout=30)
            enter()
            time.sleep(0.0005)
            leave()
            limiter.release()
            with lock:
                done["threads"] += 1

    async def task():
        async with limiter:
            enter()
            await asyncio.sleep(0)
            leave()
        done["tasks"] += 1

    threads = [start_thread(thread_worker) for _ in range(16)]
    try:

        async def all_tasks():
            await asyncio.gather(*(task() for _ in range(10_000)))

        run(all_tasks(), timeout=120)
    finally:
        stop_threads.set()
        for thread in threads:
            thread.join(30)
    assert done["tasks"] == 10_000 and done["threads"] > 0
    assert peak[0] <= 8
    assert limiter.active_calls == 0 and limiter.waiting == 0 and limiter.over_release_count == 0
    assert limiter.total_requests == 10_000 + done["threads"]


def test_mass_cancellation_mid_wait_leaves_the_capacity_it_started_with():
    limiter = ConcurrencyLimiter(4)

    async def main():
        holders = [await limiter.acquire_async() for _ in range(2)]  # 2 of 4 held by this task
        assert holders == [True, True]
        blockers = [asyncio.ensure_future(limiter.acquire_async()) for _ in range(2)]
        await asyncio.sleep(0.01)
        assert limiter.active_calls == 4
        waiters = [asyncio.ensure_future(limiter.acquire_async(timeout=30)) for _ in range(1000)]
        await asyncio.sleep(0.05)
        assert limiter.waiting == 1000
        # Release while cancelling: some slots are handed to waiters that are being cancelled.
        limiter.release()
        for i, waiter in enumerate(waiters):
            waiter.cancel()
            if i == 500:
                limiter.release()
        results = await asyncio.gather(*waiters, return_exceptions=True)
        got = sum(1 for r in results if r is True)
        assert all(r is True or isinstance(r, asyncio.CancelledError) for r in results)
        await asyncio.gather(*blockers)
        return got

    got = run(main())
    # The 2 freed slots went to waiters (kept by those that completed before their cancellation
    # landed) or came back: never lost, never doubled.
    assert limiter.waiting == 0
    assert limiter.active_calls == 2 + got  # the two blockers, plus the waiters that got a slot
    for _ in range(2 + got):
        limiter.release()
    assert limiter.active_calls == 0 and limiter.over_release_count == 0
    assert [limiter.acquire(timeout=0) for _ in range(5)] == [True] * 4 + [False]


def test_two_loops_in_two_threads_share_one_rate_limiter():
    limiter = RateLimiter(1200, provider_name="shared")  # 20 a second, burst 1
    stamps = []
    lock = threading.Lock()

    def loop_thread():
        async def worker():
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                # A refusal returns at once, without yielding to the loop: stop then (the next
                # turn is past the end), or this task would starve the loop's other tasks.
                if not await limiter.acquire_async(timeout=max(0.0, deadline - time.monotonic())):
                    break
                with lock:
                    stamps.append(time.monotonic())

        async def main():
            await asyncio.gather(*(worker() for _ in range(50)))

        asyncio.run(main())

    threads = [start_thread(loop_thread) for _ in range(2)]
    for thread in threads:
        thread.join(30)
    stamps.sort()
    assert len(stamps) >= 38  # ~2 s at 20/s, shared
    for i, start in enumerate(stamps):  # any 1-s window: 20 (+1 for its edges)
        assert bisect.bisect_right(stamps, start + 1.0) - i <= 21


# ------------------------------------------------------------------------------------------------
# Order, waking, no polling


def test_tasks_and_threads_are_served_in_arrival_order():
    limiter = ConcurrencyLimiter(1)
    assert limiter.acquire()
    order = []

    async def main():
        async def task(name):
            async with limiter:
                order.append(name)

        first = asyncio.ensure_future(task("task-1"))
        await asyncio.sleep(0.02)
        assert limiter.waiting == 1
        thread = start_thread(lambda: (limiter.acquire(timeout=10), order.append("thread"), limiter.release()))
        await asyncio.get_running_loop().run_in_executor(None, wait_until, lambda: limiter.waiting == 2)
        second = asyncio.ensure_future(task("task-2"))
        await asyncio.sleep(0.02)
        assert limiter.waiting == 3
        limiter.release()  # from the loop's thread; the chain then passes the slot on
        await asyncio.gather(first, second)
        thread.join(10)

    run(main())
    assert order == ["task-1", "thread", "task-2"]


def test_a_waiting_task_neither_blocks_its_loop_nor_burns_cpu():
    limiter = ConcurrencyLimiter(1)
    assert limiter.acquire()

    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticking = asyncio.ensure_future(ticker())
        waiter = asyncio.ensure_future(limiter.acquire_async(timeout=30))
        await asyncio.sleep(0.05)
        ticking.cancel()
        cpu0, wall0 = time.process_time(), time.monotonic()
        await asyncio.sleep(1.0)  # only the waiter is left on the loop
        cpu = time.process_time() - cpu0
        assert time.monotonic() - wall0 >= 1.0
        threading.Timer(0.1, limiter.release).start()  # a release from another thread wakes it
        t0 = time.monotonic()
        assert await waiter is True
        return ticks, cpu, time.monotonic() - t0

    ticks, cpu, woke_after = run(main())
    assert ticks >= 3  # the loop ran while the task waited
    assert cpu < 0.05  # no polling while nothing happens
    assert woke_after < 0.1 + SLACK


def test_rate_waiters_sleep_on_the_loop_timer_in_order():
    limiter = RateLimiter(600)  # one every 0.1 s

    async def main():
        t0 = time.monotonic()
        got = []

        async def one(i):
            assert await limiter.acquire_async(timeout=5)
            got.append((i, time.monotonic() - t0))

        await asyncio.gather(*(one(i) for i in range(6)))
        return got

    got = run(main())
    assert [i for i, _ in got] == list(range(6))
    for k, (_, at) in enumerate(got):
        assert k * 0.1 - 0.01 <= at <= k * 0.1 + SLACK


# ------------------------------------------------------------------------------------------------
# Timeouts, closing, cancellation of rate reservations and tickets


def test_timeouts_try_once_and_bad_values(caplog):
    limiter = ConcurrencyLimiter(1, name="busy")
    assert limiter.acquire()

    limiter2 = RateLimiter(0.5, provider_name="slow")  # one request every 120 s

    async def main2():
        t0 = time.monotonic()
        assert await limiter.acquire_async(timeout=0.1) is False
        waited = time.monotonic() - t0
        assert await limiter.acquire_async(timeout=0) is False
        with pytest.raises(ValueError, match="timeout"):
            await limiter.acquire_async(timeout=-1)
        async with limiter2:
            pass
        t1 = time.monotonic()
        assert await limiter2.acquire_async(timeout=0.4) is False  # its turn is 120 s away
        stood_by = time.monotonic() - t1
        t2 = time.monotonic()
        assert await limiter2.acquire_async(timeout=0.4, fail_fast=True) is False
        return waited, stood_by, time.monotonic() - t2

    with caplog.at_level(logging.WARNING, logger="omnilimit"):
        waited, stood_by, refused_after = run(main2())
    assert 0.1 <= waited <= 0.1 + SLACK
    assert 0.4 <= stood_by <= 0.4 + SLACK  # False once the timeout has passed, not at once
    assert refused_after < 0.1  # the fail-fast form answers at once
    assert limiter.blocked_count == 2 and limiter.denied_count == 1
    assert "Concurrency limit timeout after 0.1s for busy" in caplog.text
    assert "Rate limit timeout after 0.4s for slow" in caplog.text
    assert limiter2.blocked_count == 2 and limiter2.denied_count == 1


def test_close_wakes_async_waiters_with_limiter_closed():
    limiter = ConcurrencyLimiter(1)
    assert limiter.acquire()

    async def main():
        waiter = asyncio.ensure_future(limiter.acquire_async())
        await asyncio.sleep(0.02)
        threading.Timer(0.05, limiter.close).start()
        with pytest.raises(LimiterClosed):
            await waiter
        with pytest.raises(LimiterClosed):
            await limiter.acquire_async(timeout=0)

    run(main())
    assert limiter.waiting == 0


def test_a_cancelled_rate_reservation_is_refunded():
    limiter = RateLimiter(60)  # one a second

    async def main():
        assert await limiter.acquire_async()
        sleeper = asyncio.ensure_future(limiter.acquire_async())  # books the instant 1 s away
        await asyncio.sleep(0.1)
        sleeper.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sleeper
        t0 = time.monotonic()
        assert await limiter.acquire_async(timeout=2)  # gets the refunded instant, not 2 s
        return time.monotonic() - t0

    assert run(main()) <= 0.9 + SLACK
    assert limiter.total_requests == 2


def test_token_tickets_settle_per_task_and_leave_the_queue_when_cancelled():
    limiter = RateLimiter(6000, tokens_per_minute=6000, token_burst=100)  # 100 tokens a second

    async def main():
        async def call(reserve, use, pause):
            assert await limiter.acquire_async(timeout=5, tokens=reserve)
            await asyncio.sleep(pause)  # the other task acquires meanwhile, in the same thread
            limiter.record_request(tokens=use)

        await asyncio.gather(call(60, 10, 0.05), call(40, 40, 0.0))
        # Each task settled its own reservation: 50 of 60 came back, 40 of 40 were used.
        assert limiter.get_current_tpm() == 50
        queued = asyncio.ensure_future(limiter.acquire_async(timeout=5, tokens=100))
        await asyncio.sleep(0.05)
        assert limiter.waiting == 1
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        assert limiter.waiting == 0
        t0 = time.monotonic()
        assert await limiter.acquire_async(timeout=5, tokens=50)  # not behind the cancelled ticket
        return time.monotonic() - t0

    assert run(main()) < 0.6 + SLACK
    with pytest.raises(KeyError):
        limiter.detach_reservation()


def test_a_dropped_coroutine_gives_back_what_it_held():
    limiter = ConcurrencyLimiter(1)
    assert limiter.acquire()

    async def main():
        coro = limiter.acquire_async(timeout=30)
        waiting = asyncio.ensure_future(coro)
        await asyncio.sleep(0.02)
        assert limiter.waiting == 1
        limiter.release()  # handed to the waiter...
        waiting.cancel()  # ...which is cancelled before it runs again
        with pytest.raises(asyncio.CancelledError):
            await waiting

    run(main())
    gc.collect()
    assert limiter.waiting == 0 and limiter.active_calls == 0
    assert limiter.acquire(timeout=0)


def test_pause_holds_async_callers_until_its_end():
    limiter = RateLimiter(6000)

    async def main():
        limiter.pause(0.3)
        t0 = time.monotonic()
        assert await limiter.acquire_async(timeout=2)
        return time.monotonic() - t0

    assert 0.3 <= run(main()) <= 0.3 + 0.3 / 8 + SLACK


# ------------------------------------------------------------------------------------------------
# Decorators, the manager, CombinedLimiter, several loops in turn


def test_limit_decorates_sync_and_async_functions():
    limiter = ConcurrencyLimiter(2)
    seen = []

    @limiter.limit
    def sync_call(x):
        seen.append(limiter.active_calls)
        return x * 2

    @limiter.limit
    async def async_call(x):
        seen.append(limiter.active_calls)
        await asyncio.sleep(0)
        return x * 3

    assert sync_call(2) == 4
    assert run(async_call(2)) == 6
    assert seen == [1, 1] and limiter.active_calls == 0
    assert sync_call.__name__ == "sync_call" and asyncio.iscoroutinefunction(async_call)


def test_manager_limit_and_acquire_async(tmp_path):
    config = {"providers": {"openai": {"max_concurrent_calls": 1}}}
    manager = ProviderRateLimitManager.from_config(config)
    role = next(iter(manager._role_keys))

    @manager.limit(role)
    async def call():
        return manager.limiter_for(role).active_calls

    assert run(call()) == 1
    assert manager.limiter_for(role).active_calls == 0

    @manager.limit("no-such-role")
    def broken():
        return None

    with pytest.raises(KeyError, match="no-such-role"):
        broken()
    rate_manager = ProviderRateLimitManager()

    async def via_manager():
        return await rate_manager.acquire_async("openai", timeout=1)

    assert run(via_manager()) is True


def test_combined_acquire_async_is_all_or_nothing():
    limiter = CombinedLimiter(2, 60, name="c")  # one request a second

    async def main():
        assert await limiter.acquire_async(timeout=0)
        assert await limiter.acquire_async(timeout=0.2) is False  # a slot is free, the rate is not
        assert limiter.active_calls == 1  # the slot taken for it was given back
        limiter.release()
        async with limiter:
            assert limiter.active_calls == 1

    run(main())
    assert limiter.active_calls == 0


def test_one_limiter_serves_loop_after_loop():
    limiter = ConcurrencyLimiter(1)
    for _ in range(3):
        assert limiter.acquire()

        async def main():
            waiter = asyncio.ensure_future(limiter.acquire_async())
            await asyncio.sleep(0.01)
            limiter.release()
            assert await waiter
            limiter.release()

        run(main())
    assert limiter.active_calls == 0


@pytest.mark.parametrize("budget", [{}, {"tokens_per_minute": 10**9}], ids=["requests", "requests+tokens"])
def test_rate_changes_move_async_waiters_both_ways(budget):
    faster = RateLimiter(60, **budget)  # the next turn 1 s away
    slower = RateLimiter(60, **budget)

    async def main():
        assert await faster.acquire_async() and await slower.acquire_async()
        t0 = time.monotonic()
        quick = asyncio.ensure_future(faster.acquire_async(timeout=5))
        late = asyncio.ensure_future(slower.acquire_async(timeout=5))
        await asyncio.sleep(0.2)
        faster.set_rate(600)  # 0.8 s left become 0.08 s: woken sooner
        slower.set_rate(30)  # 0.8 s left become 1.6 s
        assert await quick
        quick_at = time.monotonic() - t0
        assert await late
        return quick_at, time.monotonic() - t0

    quick_at, late_at = run(main())
    assert 0.27 <= quick_at <= 0.28 + SLACK
    assert 1.79 <= late_at <= 1.8 + SLACK


def test_loops_and_threads_share_one_token_budget(tiny_switch_interval):
    """Two loops (200 tasks each) and 8 threads take requests and 1-50 tokens from one budget,
    some with timeouts that expire and some cancelled, settling what they used: no second holds
    more requests than the rate allows, the tokens used stay within the burst plus the refill,
    and nothing is left queued."""
    limiter = RateLimiter(3000, burst_size=5, tokens_per_minute=60_000, token_burst=200)  # 50/s, 1000 tok/s
    admitted = []  # (when, tokens used)
    lock = threading.Lock()
    stop = time.monotonic() + 2.0

    def note(used):
        with lock:
            admitted.append((time.monotonic(), used))

    def thread_worker(seed):
        rng = random.Random(seed)
        while time.monotonic() < stop:
            tokens = rng.randint(1, 50)
            if limiter.acquire(timeout=rng.choice([0, 0.05, 0.5]), tokens=tokens):
                used = rng.randint(0, tokens)
                note(used)
                limiter.record_request(tokens=used)
            else:
                time.sleep(0.01)

    def loop_thread(seed):
        async def task(rng):
            while time.monotonic() < stop:
                tokens = rng.randint(1, 50)
                attempt = asyncio.ensure_future(
                    limiter.acquire_async(timeout=rng.choice([0, 0.05, 0.5]), tokens=tokens)
                )
                if rng.random() < 0.1:
                    await asyncio.sleep(0.01)
                    attempt.cancel()
                try:
                    ok = await attempt
                except asyncio.CancelledError:
                    continue
                if ok:
                    used = rng.randint(0, tokens)
                    note(used)
                    limiter.record_request(tokens=used)
                else:
                    await asyncio.sleep(0.01)

        async def main():
            await asyncio.gather(*(task(random.Random(seed * 1000 + i)) for i in range(200)))

        asyncio.run(main())

    threads = [start_thread(thread_worker, i) for i in range(8)] + [start_thread(loop_thread, i) for i in (1, 2)]
    t0 = time.monotonic()
    for thread in threads:
        thread.join(30)
    elapsed = time.monotonic() - t0
    stamps = sorted(t for t, _ in admitted)
    assert len(stamps) > 50
    for i, start in enumerate(stamps):  # every 1-s window: burst + 50 (+1 for the window's edges)
        assert bisect.bisect_right(stamps, start + 1.0) - i <= 5 + 50 + 1
    assert sum(n for _, n in admitted) <= 200 + 1000 * elapsed + 50
    assert limiter.waiting == 0


def test_a_late_loop_costs_capacity_not_a_burst():
    """Ten tasks book instants 0.1 s apart; then the loop is blocked for 0.55 s (a blocking call
    in some task). The tasks whose instants passed meanwhile by more than one interval must not
    all go at once when the loop comes back: they book again. No 0.1-s window of admissions may
    hold more than the tolerance allows (burst 1, plus one interval of lateness, plus the edges)."""
    limiter = RateLimiter(600)  # one every 0.1 s, burst 1

    async def main():
        t0 = time.monotonic()
        stamps = []

        async def one():
            assert await limiter.acquire_async(timeout=10)
            stamps.append(time.monotonic() - t0)

        tasks = [asyncio.ensure_future(one()) for _ in range(10)]
        await asyncio.sleep(0)  # every task has booked its instant
        time.sleep(0.55)  # the loop is blocked: instants 0.1 .. 0.5 pass unserved
        await asyncio.gather(*tasks)
        return sorted(stamps)

    stamps = run(main())
    for i, start in enumerate(stamps):
        assert bisect.bisect_right(stamps, start + 0.1) - i <= 3, stamps
    assert stamps[-1] >= 0.55 + 0.4  # the late ones paid with time, at the pace
