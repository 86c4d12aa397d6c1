"""A token budget shared through shared memory (``backend="shm"`` with ``tokens_per_minute``):
one budget and one queue of waiting callers for every process on the host, with processes that
die (kill -9) or stop (SIGSTOP) in the queue, changes made by one process reaching the callers
queued in the others, and close() closing this process's callers only. And a combined limiter
shared the same way (its slots and its budget)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid

import pytest
from helpers import finish, spawn, start_thread, wait_until
from token_runs import four_processes_share_one_budget, four_processes_share_one_combined_limiter

from omnilimit import CombinedLimiter, LimiterClosed, ProviderRateLimitManager, RateLimiter, remove_shared


@pytest.fixture
def name():
    shared = f"test-tokens-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    yield shared
    remove_shared(shared)


@pytest.mark.parametrize("binding", ["tokens", "requests"])
def test_four_processes_share_one_token_budget(name, binding):
    four_processes_share_one_budget(f"shm://{name}", name, binding)


def budget(name, rpm=6000, tpm=6000, token_burst=1000):
    return RateLimiter(rpm, provider_name="t", backend=f"shm://{name}", tokens_per_minute=tpm, token_burst=token_burst)


QUEUE_UP = """
import sys, threading, time
from omnilimit import RateLimiter
limiter = RateLimiter(6000, provider_name="t", backend="shm://{name}", tokens_per_minute=6000, token_burst=1000)
results = []
def take():
    results.append(limiter.acquire(tokens={tokens}, timeout={timeout}))
threads = [threading.Thread(target=take) for _ in range({threads})]
for t in threads: t.start()
for t in threads: t.join()
print(results, flush=True)
"""


def queued_behind(limiter, seconds):
    """Waits until a caller arriving now would wait more than `seconds` (others are queued)."""
    wait_until(lambda: limiter.predicted_wait(1) > seconds, timeout=30)


def test_a_killed_process_places_in_the_queue_are_dropped(name):
    """A process killed (kill -9) with callers queued, the head among them: a caller of another
    process standing by behind them goes once the sweep drops their places (design: within 0.3 s;
    asserted: 1 s), and what it reserved before dying stays spent (settled at its estimate)."""
    limiter = budget(name)
    assert limiter.acquire(tokens=1000, timeout=0)  # the budget is empty: 100 tokens a second come back
    victim = spawn(QUEUE_UP, name=name, tokens=500, timeout=60, threads=8)
    try:
        queued_behind(limiter, 30)  # 8 x 500 tokens queued: 40 s of budget
        went = []
        waiter = start_thread(lambda: went.append((limiter.acquire(tokens=100, timeout=20), time.monotonic())))
        time.sleep(1.2)  # the waiter stands by (its turn is 40 s away); the budget holds 100 tokens again
        assert went == []
        killed = time.monotonic()
        victim.send_signal(signal.SIGKILL)
        waiter.join(20)
    finally:
        finish(victim)
    assert went and went[0][0] is True
    print(f"\n[shm-tokens-kill] a dead process's places dropped: the next caller went {went[0][1] - killed:.3f} s on")
    assert went[0][1] - killed < 1.0
    assert limiter.predicted_wait(1) < 5  # nothing of the dead queue is left


def test_a_stopped_head_is_passed_and_finds_its_place_gone_when_resumed(name):
    """The head of the queue belongs to a process stopped (SIGSTOP) past its instant: the callers
    behind it go (it would otherwise hold them all); resumed, it finds that it holds nothing and
    queues again, and is admitted."""
    limiter = budget(name)
    assert limiter.acquire(tokens=1000, timeout=0)
    victim = spawn(QUEUE_UP, name=name, tokens=300, timeout=30, threads=1)
    try:
        queued_behind(limiter, 2)  # its instant: 3 s after the drain
        went = []
        waiter = start_thread(lambda: went.append((limiter.acquire(tokens=300, timeout=20), time.monotonic())))
        time.sleep(0.3)
        victim.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        waiter.join(20)
        assert went and went[0][0] is True
        # Behind the stopped head: its own turn (3 s after the head's, 6 s after the drain), not the 20 s timeout.
        assert went[0][1] - stopped < 8.0
        victim.send_signal(signal.SIGCONT)
        out, err = victim.communicate(timeout=30)
    finally:
        finish(victim)
    assert victim.returncode == 0, err
    assert out.strip() == "[True]"


def test_a_faster_rate_and_a_give_back_reach_the_callers_queued_in_other_processes(name):
    limiter = budget(name)
    assert limiter.acquire(tokens=1000, timeout=0)
    waiter = spawn(QUEUE_UP, name=name, tokens=900, timeout=30, threads=1)  # its turn: 9 s away
    try:
        queued_behind(limiter, 5)
        started = time.monotonic()
        limiter.record_request(tokens=100)  # 900 of the 1000 given back: the queued caller goes now
        out, err = waiter.communicate(timeout=30)
        assert out.strip() == "[True]", err
        assert time.monotonic() - started < 2.0
    finally:
        finish(waiter)
    slow = spawn(QUEUE_UP, name=name, tokens=1000, timeout=60, threads=1)  # 10 s away at 6000 TPM
    try:
        queued_behind(limiter, 5)
        started = time.monotonic()
        limiter.set_tokens_per_minute(600_000)  # 10,000 a second: the queued caller goes at once
        out, err = slow.communicate(timeout=30)
        assert out.strip() == "[True]", err
        assert time.monotonic() - started < 2.0
    finally:
        finish(slow)


def test_close_closes_this_process_callers_only(name):
    limiter = budget(name)
    assert limiter.acquire(tokens=1000, timeout=0)
    other = spawn(QUEUE_UP, name=name, tokens=200, timeout=30, threads=2)  # 2 s and 4 s away
    try:
        queued_behind(limiter, 3)
        errors = []

        def mine():
            try:
                limiter.acquire(tokens=100, timeout=30)
            except LimiterClosed as error:
                errors.append(error)

        waiter = start_thread(mine)
        time.sleep(0.3)
        limiter.close()
        waiter.join(5)
        assert len(errors) == 1  # this process's caller: closed
        out, err = other.communicate(timeout=30)  # the other process's callers: admitted in turn
        assert out.strip() == "[True, True]", err
    finally:
        finish(other)


def test_coroutines_of_two_processes_share_the_queue(name):
    """A coroutine queued in another process is woken by this process's give-back (the doorbell's
    watcher wakes its loop), and a coroutine here waits its turn behind that process's threads."""
    limiter = budget(name)
    assert limiter.acquire(tokens=1000, timeout=0)
    script = """
    import asyncio
    from omnilimit import RateLimiter
    limiter = RateLimiter(6000, provider_name="t", backend="shm://{name}", tokens_per_minute=6000, token_burst=1000)
    async def main():
        return await limiter.acquire_async(tokens=900, timeout=30)
    print(asyncio.run(main()), flush=True)
    """
    other = spawn(script, name=name)
    try:
        queued_behind(limiter, 5)
        started = time.monotonic()
        limiter.record_request(tokens=0)  # all 1000 back
        out, err = other.communicate(timeout=30)
        assert out.strip() == "True", err
        assert time.monotonic() - started < 2.0
    finally:
        finish(other)

    async def here():
        return await limiter.acquire_async(tokens=150, timeout=10)

    started = time.monotonic()
    assert asyncio.run(here()) is True  # 100 left after the other's 900: 0.5 s for the 50 more
    assert 0.2 < time.monotonic() - started < 3.0


# --- CombinedLimiter in shared memory -------------------------------------------------------------

HOLD_SLOTS = """
import sys, time
from omnilimit import CombinedLimiter
limiter = CombinedLimiter(2, 6000, name="c", backend="shm://{name}", tokens_per_minute=6000, token_burst=1000)
assert limiter.acquire(timeout=5, tokens=400) and limiter.acquire(timeout=5, tokens=400)
print("holding", flush=True)
sys.stdin.readline()  # until told
limiter.release(tokens=0)
limiter.release(tokens=0)
print("released", flush=True)
"""


def test_a_combined_limiter_shares_its_slots_and_budget_between_processes(name):
    """Another process holds both slots and 800 of the 1000 tokens: here nothing is had (and
    nothing held after a refusal: all-or-nothing); once it releases (settling its latest
    reservation, 400, at 0 used), the slots and those tokens are back for this process."""
    limiter = CombinedLimiter(2, 6000, name="c", backend=f"shm://{name}", tokens_per_minute=6000, token_burst=1000)
    assert limiter.backend == f"shm://{name}"
    other = spawn(HOLD_SLOTS, name=name)
    try:
        assert other.stdout.readline().strip() == "holding"
        assert limiter.active_calls == 2  # the other process's slots
        assert limiter.acquire(timeout=0.2) is False  # no slot
        assert limiter.concurrency.active_calls == 2 and limiter.rate.token_budget_available() < 300
        other.stdin.write("\n")
        other.stdin.flush()
        assert other.stdout.readline().strip() == "released"
        # The slots are back, and the tokens its latest reservation settled (one thread settles its latest).
        assert limiter.acquire(timeout=1, tokens=500)
        assert limiter.active_calls == 1
        assert limiter.acquire(timeout=0.3, tokens=900) is False  # a slot, but no tokens in time
        assert limiter.active_calls == 1  # ... and the slot was not kept: all-or-nothing
        limiter.release(tokens=500)
    finally:
        finish(other)
        remove_shared(f"{name}.slots")
        remove_shared(f"{name}.rate")


def test_combined_mode_in_the_yaml_is_shared_through_shm(name):
    providers = {"rate_limit_mode": "combined", "max_concurrent_calls": 3, "rate_limit_rpm": 600}
    config = {"providers": {"r": {**providers, "rate_limit_backend": f"shm://{name}"}}}
    first, second = (ProviderRateLimitManager.from_config(config).limiter_for("r") for _ in range(2))
    try:
        assert isinstance(first, CombinedLimiter) and first.backend == second.backend == f"shm://{name}"
        assert first.acquire(timeout=0)
        assert second.active_calls == 1  # the slot is seen from the other limiter
        first.release()
    finally:
        remove_shared(f"{name}.slots")
        remove_shared(f"{name}.rate")


@pytest.mark.parametrize("bound", ["slots", "requests"])
def test_four_processes_share_one_combined_limiter(name, bound):
    try:
        four_processes_share_one_combined_limiter(f"shm://{name}", "c", bound)
    finally:
        remove_shared(f"{name}.slots")
        remove_shared(f"{name}.rate")
