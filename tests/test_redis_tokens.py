"""A token budget shared through Redis (``RateLimiter(..., tokens_per_minute=..., backend="redis://...")``):
one request and N tokens together, one line of waiters for every host, reserve-and-settle. Two
limiter objects of one name stand for two hosts; the multi-process runs use real processes.
Against a real redis-server (and Valkey: ``OMNILIMIT_TEST_SERVER=valkey``)."""

import asyncio
import json
import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from helpers import common_start, need, start_thread, wait_until
from token_runs import four_processes_share_one_budget, four_processes_share_one_combined_limiter

from omnilimit import CombinedLimiter, LimiterClosed, ProviderRateLimitManager, RateLimiter

redis = need("redis")


def budget(url, name, rpm=600, tpm=60_000, token_burst=1000, **options):
    return RateLimiter(rpm, provider_name=name, backend=url, tokens_per_minute=tpm, token_burst=token_burst, **options)


def test_two_hosts_share_one_token_budget_and_its_figures(redis_url, unique_name):
    one, other = budget(redis_url, unique_name, tpm=600), budget(redis_url, unique_name, tpm=600)
    assert type(one.store).__name__ == "RedisTokenStore"
    assert "tokens_per_minute=600" in repr(one) and "backend=" in repr(one)
    assert one.acquire(tokens=800, timeout=0)
    assert 200 <= other.token_budget_available() <= 202  # every host's figure, read from Redis
    assert other.acquire(tokens=800, timeout=0) is False  # the same budget: 200 left
    stats = other.get_stats()
    assert stats["tpm_limit"] == 600 and stats["current_tpm"] == 800 and stats["total_requests"] == 1
    assert stats["blocked_count"] == 1 and other.metrics()["denied"] == 1


def test_a_host_without_a_token_budget_shares_the_request_budget(redis_url, unique_name):
    """A plain RateLimiter and one with a token budget, of one name: one request budget (the
    plain one books its instant in the same bucket), each host's configuration read by the other."""
    plain = RateLimiter(60, provider_name=unique_name, backend=redis_url)
    tokens = budget(redis_url, unique_name, rpm=60)
    assert plain.acquire(timeout=0)
    assert tokens.acquire(tokens=10, timeout=0) is False  # the request of this second is taken
    assert tokens.get_stats()["total_requests"] == 1
    tokens.set_rate(6000)
    assert plain.get_stats()["rpm_limit"] == 6000 and plain.acquire(timeout=0.5)


def test_a_request_and_its_tokens_are_taken_together_or_not_at_all(redis_url, unique_name):
    limiter = budget(redis_url, unique_name, rpm=60, tpm=60)  # one request and one token a second
    assert limiter.acquire(tokens=100, timeout=0)
    assert limiter.acquire(tokens=100, timeout=0) is False  # no request left: its tokens stay
    assert 900 <= limiter.token_budget_available() <= 901
    assert limiter.acquire(tokens=2000, timeout=0, fail_fast=True) is False  # beyond the burst: a debt to wait
    assert 900 <= limiter.token_budget_available() <= 902


def test_settling_gives_back_or_charges_for_every_host(redis_url, unique_name):
    one = budget(redis_url, unique_name, rpm=6000, tpm=600)
    other = budget(redis_url, unique_name, rpm=6000, tpm=600)
    assert one.acquire(tokens=800, timeout=0)
    one.record_request(tokens=300)  # 500 given back
    assert 700 <= other.token_budget_available() <= 705
    assert one.acquire(tokens=600, timeout=1)  # the next request: 10 ms on
    reservation = one.detach_reservation()  # settled from another thread, as a stream's end is
    start_thread(reservation.settle, 900).join()  # 300 more charged
    assert other.token_budget_available() <= 10
    assert other.get_stats()["current_tpm"] == 300 + 900


def test_tokens_given_back_serve_the_caller_already_in_line(redis_url, unique_name):
    """A caller in line for 800 tokens (planned 8 s away at 6000 TPM) goes as soon as another
    host's call settles: its unused tokens serve the line, not only later arrivals."""
    one = budget(redis_url, unique_name, tpm=6000)
    other = budget(redis_url, unique_name, tpm=6000)
    assert one.acquire(tokens=1000, timeout=0)
    went = []
    waiter = start_thread(lambda: went.append((other.acquire(tokens=800, timeout=20), time.monotonic())))
    wait_until(lambda: other.metrics()["waiting_everywhere"] == 1)
    assert other.predicted_wait(0) > 5  # behind the line's 800
    assert other.predicted_wait(500) > other.predicted_wait(0) + 4  # and 500 more: 5 s at 100 tokens/s
    settled = time.monotonic()
    one.record_request(tokens=100)  # 900 back
    waiter.join(10)
    assert went and went[0][0] and went[0][1] - settled < 0.5, went


def test_the_line_keeps_arrival_order_across_hosts(redis_url, unique_name):
    """Waiters of two hosts, large and small claims mixed: they go in the order they arrived; a
    small claim never passes a large one ahead of it."""
    hosts = [budget(redis_url, unique_name, rpm=6000, tpm=60_000), budget(redis_url, unique_name, rpm=6000, tpm=60_000)]
    assert hosts[0].acquire(tokens=1000, timeout=0)  # empty: everyone waits
    order, lock = [], threading.Lock()
    claims = [900, 100, 700, 50, 1000, 200, 600, 10]

    def caller(i):
        assert hosts[i % 2].acquire(tokens=claims[i], timeout=30)
        with lock:
            order.append(i)

    threads = []
    for i in range(len(claims)):
        threads.append(start_thread(caller, i))
        wait_until(lambda n=i + 1: hosts[0].metrics()["waiting_everywhere"] == n)
    for t in threads:
        t.join(30)
    assert order == list(range(len(claims)))


def test_a_turn_beyond_the_timeout_takes_no_place_and_is_refused_at_the_deadline(redis_url, unique_name):
    limiter = budget(redis_url, unique_name, tpm=6000)
    assert limiter.acquire(tokens=1000, timeout=0)
    started = time.monotonic()
    assert limiter.acquire(tokens=500, timeout=0.3) is False  # 5 s away
    assert 0.3 <= time.monotonic() - started < 1.0
    assert limiter.metrics()["waiting_everywhere"] == 0
    started = time.monotonic()
    assert limiter.acquire(tokens=500, timeout=3, fail_fast=True) is False
    assert time.monotonic() - started < 0.2
    assert limiter.get_stats()["blocked_count"] == 2  # each refusal counted once


def test_a_caller_standing_by_goes_when_tokens_come_back(redis_url, unique_name):
    """Its turn (5 s away) lay beyond its timeout (2 s): it stood by, and goes when a settle
    brings the turn within reach."""
    one, other = budget(redis_url, unique_name, tpm=6000), budget(redis_url, unique_name, tpm=6000)
    assert one.acquire(tokens=1000, timeout=0)
    went = []
    t = start_thread(lambda: went.append(other.acquire(tokens=500, timeout=2)))
    time.sleep(0.3)
    one.record_request(tokens=0)
    t.join(5)
    assert went == [True]


@pytest.mark.parametrize("where", ["this process", "another host"])
def test_a_pause_holds_the_line_of_every_host(redis_url, unique_name, where):
    limiter = budget(redis_url, unique_name, rpm=6000)
    other = limiter if where == "this process" else budget(redis_url, unique_name, rpm=6000)
    paused_at = time.monotonic()
    assert other.pause(0.5) >= 0.49
    assert limiter.acquire(tokens=10, timeout=0) is False
    assert limiter.acquire(tokens=10, timeout=2)
    assert time.monotonic() - paused_at >= 0.45


def test_a_new_token_rate_on_another_host_replans_the_line(redis_url, unique_name):
    one, other = budget(redis_url, unique_name, tpm=600), budget(redis_url, unique_name, tpm=600)
    assert one.acquire(tokens=1000, timeout=0)
    went = []
    t = start_thread(lambda: went.append((one.acquire(tokens=500, timeout=60), time.monotonic())))
    wait_until(lambda: one.metrics()["waiting_everywhere"] == 1)  # planned 50 s away
    changed = time.monotonic()
    other.set_tokens_per_minute(600_000)  # owed converted: the turn comes at once
    t.join(5)
    assert went and went[0][0] and went[0][1] - changed < 0.5
    assert one.get_stats()["tpm_limit"] == 600_000  # every host reads the latest configuration


def test_a_provider_cap_on_tokens_holds_every_host(redis_url, unique_name):
    """A cap from one host's headers holds on the other: what it reads is the cap plus what the
    budget refilled since (600 TPM: 10 tokens a second; a CI run under load read 107 at 60,000
    TPM, 7 ms of refill)."""
    one, other = budget(redis_url, unique_name, rpm=6000, tpm=600), budget(redis_url, unique_name, rpm=6000, tpm=600)
    capped = time.monotonic()
    other.limit_token_budget(100)
    available = one.token_budget_available()
    assert available <= 100 + int((time.monotonic() - capped) * 10) + 1, available
    assert one.acquire(tokens=500, timeout=0) is False


def test_coroutines_wait_in_the_same_line_and_a_cancelled_one_leaves_it(redis_url, unique_name):
    limiter = budget(redis_url, unique_name, rpm=6000, tpm=6000)

    async def main():
        assert await limiter.acquire_async(tokens=1000, timeout=0)
        first = asyncio.ensure_future(limiter.acquire_async(tokens=900, timeout=30))  # ~9 s away
        await asyncio.sleep(0.3)
        second = asyncio.ensure_future(limiter.acquire_async(tokens=10, timeout=30))
        await asyncio.sleep(0.3)
        assert limiter.metrics()["waiting_everywhere"] == 2
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        started = time.monotonic()
        assert await asyncio.wait_for(second, 5)  # the claim ahead left: 10 tokens are there now
        took = time.monotonic() - started
        limiter.record_request(tokens=400)  # settles this task's own reservation (1000), not the other task's
        return took

    assert asyncio.run(main()) < 1.0
    assert limiter.metrics()["waiting_everywhere"] == 0
    assert limiter.get_stats()["current_tpm"] == 400 + 10


def test_close_wakes_this_process_waiters_in_line(redis_url, unique_name):
    limiter = budget(redis_url, unique_name, tpm=600)
    assert limiter.acquire(tokens=1000, timeout=0)
    raised = []

    def waiter():
        try:
            limiter.acquire(tokens=500, timeout=60)
        except LimiterClosed:
            raised.append(time.monotonic())

    t = start_thread(waiter)
    wait_until(lambda: limiter.metrics()["waiting_everywhere"] == 1)
    closed = time.monotonic()
    limiter.close()
    t.join(5)
    assert raised and raised[0] - closed < 0.5
    wait_until(lambda: budget(redis_url, unique_name, tpm=600).metrics()["waiting_everywhere"] == 0, timeout=2)


@pytest.mark.parametrize("stop", ["SIGKILL", "SIGSTOP"])
def test_a_dead_or_stopped_waiters_place_in_line_is_dropped(redis_url, unique_name, stop):
    """A process killed (SIGKILL) or stopped (SIGSTOP) while it waits in the line: the waiter
    behind it goes once the silent one's heartbeat expires (3 s), not after the silent one's turn
    (10 s of tokens). A stopped process that resumes (SIGCONT) looks again, joins the line anew
    and is served."""
    limiter = budget(redis_url, unique_name, tpm=6000)
    assert limiter.acquire(tokens=1000, timeout=0)
    script = textwrap.dedent(
        f"""
        from omnilimit import RateLimiter
        limiter = RateLimiter(600, provider_name="{unique_name}", backend="{redis_url}",
                              tokens_per_minute=6000, token_burst=1000)
        print("waiting", flush=True)
        print("went", limiter.acquire(tokens=1000, timeout=60), flush=True)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "waiting"
        wait_until(lambda: limiter.metrics()["waiting_everywhere"] == 1, timeout=10)
        went = []
        t = start_thread(lambda: went.append((limiter.acquire(tokens=10, timeout=30), time.monotonic())))
        wait_until(lambda: limiter.metrics()["waiting_everywhere"] == 2)
        silenced = time.monotonic()
        os.kill(child.pid, getattr(signal, stop))
        t.join(15)
        assert went and went[0][0] and went[0][1] - silenced < 3.0 + 1.5, (went, silenced)
        if stop == "SIGSTOP":
            os.kill(child.pid, signal.SIGCONT)
            assert child.stdout.readline().strip() == "went True"  # ~7 s on: 1000 tokens at 100 a second
            assert child.wait(timeout=10) == 0
    finally:
        child.kill()
        child.wait()
        child.stdout.close()


def test_yaml_keys_build_a_shared_token_budget(redis_url, unique_name):
    config = {
        "providers": {
            "writer": {
                "name": "openai",
                "rate_limit_rpm": 600,
                "rate_limit_tpm": 60_000,
                "rate_limit_shared_key": unique_name,
                "rate_limit_backend": redis_url,
                "rate_limit_on_backend_error": "open",
            }
        }
    }
    manager = ProviderRateLimitManager.from_config(config)
    limiter = manager.limiter_for("writer")
    assert type(limiter.store).__name__ == "RedisTokenStore" and limiter.on_backend_error == "open"
    assert limiter.tpm == 60_000 and limiter.acquire(tokens=500, timeout=2)  # token_burst 1: a debt of 0.5 s
    local = ProviderRateLimitManager.from_config(
        {
            "providers": {
                "writer": {
                    **config["providers"]["writer"],
                    "rate_limit_on_backend_error": "local",
                    "rate_limit_local_fraction": 0.5,
                }
            }
        }
    ).limiter_for("writer")
    assert local.on_backend_error == "local" and local.store.local_fraction == 0.5


@pytest.mark.parametrize("coroutine", [False, True], ids=["thread", "coroutine"])
def test_local_limits_requests_and_tokens_at_its_fraction_while_redis_is_away(redis_server, unique_name, coroutine):
    """Policy local with a token budget: while Redis is away, this process takes requests and
    tokens from its own core at local_fraction of both limits (here 0.5 of 6000 TPM: 50 tokens a
    second, token burst 100); what it reserved there is settled there (in the thread or task that
    reserved); once Redis is back the shared budget decides again."""
    limiter = budget(
        redis_server.url,
        unique_name,
        rpm=60_000,
        tpm=6000,
        token_burst=100,
        on_backend_error="local",
        local_fraction=0.5,
    )

    async def in_a_task(tokens, timeout, used):
        went = await limiter.acquire_async(tokens=tokens, timeout=timeout)
        if went and used is not None:
            limiter.record_request(tokens=used)
        return went

    def call(tokens, timeout, used=None):
        """Acquires (and settles, given `used`) in one thread or one task."""
        if coroutine:
            return asyncio.run(in_a_task(tokens, timeout, used))
        went = limiter.acquire(tokens=tokens, timeout=timeout)
        if went and used is not None:
            limiter.record_request(tokens=used)
        return went

    redis_server.stop()
    try:
        assert call(100, 0)  # the local burst
        assert call(100, 0.3) is False  # 2 s away at 50 a second
        started = time.monotonic()
        assert call(50, 3, used=0)  # 0.7 s away (15 came back during the refusal); all 50 given back, locally
        assert 0.5 < time.monotonic() - started < 2.0
        assert call(50, 0.1)  # what was given back (0.1 s: the request 2 ms after the last one)
        if not coroutine:  # a detached reservation settles where it was made, from any thread
            detached = limiter.detach_reservation()
            done = start_thread(detached.settle, 0)
            done.join(5)
            assert call(50, 0.1)
        assert limiter.metrics()["outage_admitted"] == 3 + (0 if coroutine else 1)
    finally:
        redis_server.start()
    time.sleep(0.6)  # the next probe of Redis
    assert call(100, 0)  # the shared budget again: a restarted server, full
    limiter.close()


@pytest.mark.parametrize("binding", ["tokens", "requests"])
def test_four_processes_share_one_token_budget(redis_url, unique_name, binding):
    """The 4-process run of ``token_runs.four_processes_share_one_budget`` through Redis."""
    four_processes_share_one_budget(redis_url, unique_name, binding)


@pytest.mark.parametrize("bound", ["slots", "requests"])
def test_four_processes_share_one_combined_limiter(redis_url, unique_name, bound):
    """The combined run of ``token_runs`` through Redis: the slots and the budget of every process
    in one server."""
    four_processes_share_one_combined_limiter(redis_url, unique_name, bound)


def test_a_combined_limiter_shares_its_slots_and_budget_between_hosts(redis_url, unique_name):
    """Two limiters on one name, as two hosts would have: the slots and the token budget are one;
    a refusal holds nothing (all-or-nothing); a turn out of reach gives the slot back at once."""
    first, second = (
        CombinedLimiter(2, 6000, name=unique_name, backend=redis_url, tokens_per_minute=6000, token_burst=1000)
        for _ in range(2)
    )
    try:
        assert first.backend is not None and "redis" in first.backend
        assert first.acquire(timeout=1, tokens=800) and first.acquire(timeout=1, tokens=100)
        assert second.active_calls == 2 and second.acquire(timeout=0.2) is False  # no slot
        first.release(tokens=100)  # (the thread's latest reservation, settled as used)
        assert second.acquire(timeout=0.3, tokens=900) is False  # a slot, but no tokens in time
        assert second.active_calls == 1  # the slot was not kept: all-or-nothing
        claim = second.rate.token_budget_available() + 100  # 1 s away: the slot is given back meanwhile
        started = time.monotonic()
        assert second.acquire(timeout=5, tokens=claim)
        assert 0.5 < time.monotonic() - started < 3.0
        second.release(tokens=claim)
        first.release(tokens=0)
        assert first.active_calls == 0
    finally:
        first.close()
        second.close()


def test_a_combined_limiter_on_redis_from_coroutines(redis_url, unique_name):
    """The same from coroutines: a turn out of reach gives the slot back and stands by (the server
    asked from the default executor, never on the loop); tokens given back bring it within reach."""
    limiter = CombinedLimiter(2, 6000, name=unique_name, backend=redis_url, tokens_per_minute=6000, token_burst=1000)

    async def scenario():
        assert await limiter.acquire_async(timeout=1, tokens=1000)  # one slot and the whole budget
        waiter = asyncio.ensure_future(limiter.acquire_async(timeout=3, tokens=500))  # 5 s away: out of reach
        await asyncio.sleep(0.3)
        assert limiter.active_calls == 1 and not waiter.done()  # it gave its slot back and stands by
        started = time.monotonic()
        limiter.release(tokens=0)  # the 1000 come back: its turn is now
        assert await waiter
        took = time.monotonic() - started
        limiter.release(tokens=500)
        return took

    try:
        assert asyncio.run(scenario()) < 1.0
    finally:
        limiter.close()


def test_combined_mode_in_the_yaml_is_shared_through_redis(redis_url, unique_name):
    role = {
        "rate_limit_mode": "combined",
        "max_concurrent_calls": 1,
        "rate_limit_rpm": 600,
        "rate_limit_backend": redis_url,
        "rate_limit_lease_seconds": 5,
        "rate_limit_shared_key": unique_name,
    }
    config = {"providers": {"r": role}}
    first, second = (ProviderRateLimitManager.from_config(config).limiter_for("r") for _ in range(2))
    try:
        assert isinstance(first, CombinedLimiter) and first.concurrency.lease_seconds == 5
        assert first.acquire(timeout=0) and second.acquire(timeout=0.2) is False  # one slot for both
        first.release()
        assert second.acquire(timeout=1)
        second.release()
    finally:
        first.close()
        second.close()


def test_a_random_mix_of_claims_and_settles_never_overdraws(redis_url, unique_name):
    """16 threads with claims of 1-900 tokens, settling 0 to 2x their claim: the tokens charged
    never exceed what the budget allowed over the run (the burst plus the rate), by one claim."""
    limiter = budget(redis_url, unique_name, rpm=60_000, tpm=120_000, token_burst=1000)
    rng = random.Random(7)
    plan = [(rng.randint(1, 900), rng.uniform(0.0, 2.0)) for _ in range(160)]
    charged, lock = [], threading.Lock()
    started = time.monotonic()

    def worker(part):
        for claim, factor in part:
            assert limiter.acquire(tokens=claim, timeout=30)
            used = int(claim * factor)
            limiter.record_request(tokens=used)
            with lock:
                charged.append(used)

    threads = [start_thread(worker, plan[i::16]) for i in range(16)]
    for t in threads:
        t.join(60)
    took = time.monotonic() - started
    assert len(charged) == len(plan)
    allowed = 1000 + 120_000 / 60 * took
    assert sum(charged) <= allowed + 900 * 2, (sum(charged), allowed)


def test_closed_waits_for_redis_then_refuses_and_the_line_recovers(redis_server, unique_name, caplog):
    """Policy closed: while Redis is away a caller waits for it until its timeout, then is refused,
    and a settle is lost with a WARNING; a caller waiting through the outage goes once it is back
    (a server restarted empty: a full budget again)."""
    limiter = budget(redis_server.url, unique_name, rpm=6000, tpm=6000)
    assert limiter.acquire(tokens=1000, timeout=0)
    redis_server.stop()
    with caplog.at_level(logging.WARNING, logger="omnilimit"):
        started = time.monotonic()
        assert limiter.acquire(tokens=10, timeout=0.3) is False
        assert 0.25 < time.monotonic() - started < 2.0
        assert limiter.backend_available is False and "backend_error" in limiter.get_stats()
        limiter.record_request(tokens=0)  # the settle cannot reach Redis
    assert "a settle of -1000 tokens was lost" in caplog.text
    went = []
    waiter = start_thread(lambda: went.append(limiter.acquire(tokens=10, timeout=10)))
    time.sleep(0.5)
    redis_server.start()
    waiter.join(10)
    assert went == [True] and limiter.backend_available
    assert limiter.metrics()["outage_denied"] == 1


def test_open_admits_every_caller_while_redis_is_away(redis_server, unique_name):
    limiter = budget(redis_server.url, unique_name, tpm=6000, on_backend_error="open")
    assert limiter.acquire(tokens=1000, timeout=0)
    redis_server.stop()
    assert all(limiter.acquire(tokens=1000, timeout=0) for _ in range(5))  # unlimited meanwhile
    limiter.record_request(tokens=10)
    assert limiter.metrics()["outage_admitted"] == 5
    redis_server.start()
    time.sleep(0.6)  # the next probe of Redis (every 0.5 s)
    assert limiter.acquire(tokens=1, timeout=0)  # from Redis again: a restarted, empty server
    assert limiter.backend_available and limiter.get_stats()["total_requests"] == 1


def test_a_forked_child_waits_in_line_from_a_coroutine(redis_url, unique_name):
    """A process that waited in the line from a coroutine (its head looks run on a thread of its
    own) forks: the child's coroutines wait in the line too (a thread of the child's own, not the
    parent's, which the child does not have)."""
    script = textwrap.dedent(
        f"""
        import asyncio, os, sys
        from omnilimit import RateLimiter
        limiter = RateLimiter(600, provider_name="{unique_name}", backend="{redis_url}",
                              tokens_per_minute=6000, token_burst=1000)

        async def take(tokens, timeout):
            return await limiter.acquire_async(tokens=tokens, timeout=timeout)

        assert asyncio.run(take(1000, 0))  # the bucket is empty now
        assert asyncio.run(take(50, 5))  # ~0.5 s as the head of the line
        pid = os.fork()
        if pid == 0:
            os._exit(0 if asyncio.run(take(50, 5)) else 3)
        _, status = os.waitpid(pid, 0)
        print("child", os.waitstatus_to_exitcode(status), flush=True)
        """
    )
    done = subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stdout.strip() == "child 0", (done.stdout, done.stderr)


RESTART_RUN = """
import json, threading, time
from omnilimit import RateLimiter
limiter = RateLimiter(
    6000, provider_name="{name}", backend="{url}", tokens_per_minute=40000, token_burst=1600,
    on_backend_error="{policy}",
)
start, end = {start}, {start} + {seconds}
events, errors, lock = [], [], threading.Lock()

def work():
    while time.monotonic() < start:
        time.sleep(0.001)
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return
        try:
            went = limiter.acquire(tokens=100, timeout=min(left, 1.0))
        except Exception as error:
            with lock:
                errors.append(repr(error))
            return
        if went:
            with lock:
                events.append(time.monotonic())
            time.sleep(0.02)
            limiter.record_request(tokens=100)

threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps({{"events": events, "errors": errors}}))
"""


@pytest.mark.parametrize("policy", ["closed", "open"])
def test_four_processes_through_a_server_restart(redis_server, unique_name, policy):
    """4 processes x 8 threads on one token budget (40000 TPM, token burst 1600, calls of 100)
    while the server stops for 1 s and comes back empty. ``closed``: nobody goes while it is away,
    every process goes on once it is back, and the tokens stay within the rate plus two bursts (a
    restarted server holds a full bucket again). ``open``: callers go unlimited while it is away,
    and are paced again once it is back. No process raises, none is wedged."""
    start, seconds = common_start(4), 7.0
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                textwrap.dedent(RESTART_RUN).format(
                    name=unique_name, url=redis_server.url, policy=policy, start=start, seconds=seconds
                ),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    try:
        time.sleep(max(0.0, start + 2.5 - time.monotonic()))
        stopped = time.monotonic()
        redis_server.stop()
        time.sleep(1.0)
        redis_server.start()
        restarted = time.monotonic()
        results = []
        for child in children:
            out, err = child.communicate(timeout=60)
            assert child.returncode == 0, err
            results.append(json.loads(out))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.communicate()
    assert [r["errors"] for r in results] == [[]] * 4
    events = sorted(at for r in results for at in r["events"])
    away = [at for at in events if stopped + 0.1 < at < restarted - 0.1]
    after = [at for at in events if at > restarted + 1.0]
    print(
        f"\n[restart-{policy}] {len(events)} calls; {len(away)} while the server was away; "
        f"{len(after)} from 1 s after it came back; processes going after: "
        f"{sum(1 for r in results if any(at > restarted for at in r['events']))}"
    )
    rate_per_s = 40000 / 60
    if policy == "closed":
        assert away == []
        assert sum(1 for r in results if any(at > restarted for at in r["events"])) >= 2  # not wedged
        assert len(events) * 100 <= 2 * 1600 + rate_per_s * seconds + 100
    else:
        assert len(away) >= 8  # unlimited meanwhile: at least one call per thread of a process
    span = (start + seconds) - (restarted + 1.0)
    assert len(after) * 100 <= 1600 + rate_per_s * span + 100  # paced again after the restart
    assert len(after) * 100 >= 0.8 * rate_per_s * span
