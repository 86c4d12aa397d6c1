"""The timeout contract, for the callers that exist.

``acquire(timeout=t)`` answers True as soon as the caller may go and False only once ``t`` has
passed, for every limiter kind, backend and form (threads and coroutines). A caller whose turn
lies beyond its timeout books nothing and stands by, and goes if a change brings its turn within
reach; ``fail_fast=True`` answers at once instead; ``close()`` wakes everyone with LimiterClosed.
The callers this protects are real: OmniGen's generators ignore the answer, and retry loops call
again at once. A timeout that answered False at once made both call the provider in a tight loop.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest
from helpers import need, run_children, start_thread

import omnilimit._log
from omnilimit import (
    CombinedLimiter,
    ConcurrencyLimiter,
    LimiterClosed,
    ProviderRateLimitManager,
    RateLimiter,
    remove_shared,
)
from omnilimit._log import shown_timeout

SLACK = 0.15  # scheduling slack on a loaded 2-core machine; a bug answers at once or a second late
TIMEOUT_DOC = Path(__file__).resolve().parent.parent / "docs" / "guide" / "timeout-contract.md"


@pytest.fixture
def shm_name():
    name = f"contract-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    yield name
    remove_shared(name)


def _redis(request):
    """The Redis URL fixture, asked for only by the Redis kinds (so the others run without it)."""
    need("redis")
    return request.getfixturevalue("redis_url"), request.getfixturevalue("unique_name")


# Each kind, drained: its next turn is a minute away (or every slot is held).
def _drained(kind, request):
    if kind == "concurrency":
        limiter = ConcurrencyLimiter(1, name="drained")
    elif kind == "concurrency-shm":
        limiter = ConcurrencyLimiter(1, name="drained", backend=f"shm://{request.getfixturevalue('shm_name')}")
    elif kind == "concurrency-redis":
        url, name = _redis(request)
        limiter = ConcurrencyLimiter(1, name=name, backend=url)
    elif kind == "rate":
        limiter = RateLimiter(1, provider_name="drained")
    elif kind == "rate-tokens":
        limiter = RateLimiter(1, provider_name="drained", tokens_per_minute=1000)
    elif kind == "rate-shm":
        limiter = RateLimiter(1, provider_name="drained", backend=f"shm://{request.getfixturevalue('shm_name')}")
    elif kind == "rate-redis":
        url, name = _redis(request)
        limiter = RateLimiter(1, provider_name=name, backend=url)
    else:
        limiter = CombinedLimiter(2, 1, name="drained")
    assert limiter.acquire(timeout=0)
    if kind == "combined":
        limiter.release()  # a slot is free: the rate part is the one out of reach
    return limiter


KINDS = [
    "concurrency",
    "concurrency-shm",
    "concurrency-redis",
    "rate",
    "rate-tokens",
    "rate-shm",
    "rate-redis",
    "combined",
]
RATE_KINDS = ["rate", "rate-tokens", "rate-shm", "rate-redis", "combined"]
ASYNC_KINDS = [kind for kind in KINDS if kind != "concurrency-shm"]  # coroutines cannot wait on that one yet


def _timed(call):
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


# ---- False only once the timeout has passed -----------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_drained_limiter_answers_false_once_the_timeout_has_passed_not_at_once(kind, request):
    limiter = _drained(kind, request)
    ok, waited = _timed(lambda: limiter.acquire(timeout=0.3))
    assert ok is False and 0.3 <= waited <= 0.3 + SLACK
    ok, waited = _timed(lambda: limiter.acquire(timeout=0))  # a try answers at once
    assert ok is False and waited < 0.05
    assert limiter.waiting == 0


@pytest.mark.parametrize("kind", ASYNC_KINDS)
def test_acquire_async_on_a_drained_limiter_answers_false_after_its_timeout(kind, request):
    limiter = _drained(kind, request)

    async def main():
        return await asyncio.gather(*(_timed_async(limiter.acquire_async(timeout=0.4)) for _ in range(3)))

    for ok, waited in asyncio.run(main()):
        assert ok is False and 0.4 <= waited <= 0.4 + SLACK


def _answer_or_closed(call):
    """What a call ended with: its answer, or "closed" when it raised LimiterClosed."""
    try:
        return call()
    except LimiterClosed:
        return "closed"


async def _timed_async(awaitable):
    started = time.monotonic()
    result = await awaitable
    return result, time.monotonic() - started


@pytest.mark.parametrize("kind", RATE_KINDS)
def test_the_fail_fast_form_answers_at_once_and_books_nothing(kind, request):
    limiter = _drained(kind, request)
    ok, waited = _timed(lambda: limiter.acquire(timeout=5, fail_fast=True))
    assert ok is False and waited < 0.05

    async def main():
        return await _timed_async(limiter.acquire_async(timeout=5, fail_fast=True))

    ok, waited = asyncio.run(main())
    assert ok is False and waited < 0.1
    rate = limiter.rate if isinstance(limiter, CombinedLimiter) else limiter
    assert 55 < rate.predicted_wait() <= 60  # the wait it would have faced: nothing was booked


# ---- Standing by: eligible until the deadline ---------------------------------------------------


def _second_handle(kind, limiter, request):
    """Who changes the rate: the limiter itself, or (shared kinds) another limiter object on the
    same segment / Redis key, as another process or host would."""
    if kind == "rate-shm":
        return RateLimiter(6, provider_name="drained", backend=f"shm://{request.getfixturevalue('shm_name')}")
    if kind == "rate-redis":
        url, name = _redis(request)
        return RateLimiter(6, provider_name=name, backend=url)
    return limiter


@pytest.mark.parametrize("kind", RATE_KINDS)
@pytest.mark.parametrize("form", ["thread", "coroutine"])
def test_a_caller_standing_by_goes_when_a_new_rate_brings_its_turn_within_reach(kind, form, request):
    limiter = _drained(kind, request)  # RateLimiter(1): the next turn is 60 s away
    limiter.set_rate(6)  # 10 s away now: beyond the 3-s timeout, so the caller stands by
    changer = _second_handle(kind, limiter, request)
    outcome = {}

    def thread_caller():
        outcome["ok"] = limiter.acquire(timeout=3)
        outcome["at"] = time.monotonic()

    def coroutine_caller():
        outcome["ok"] = asyncio.run(limiter.acquire_async(timeout=3))
        outcome["at"] = time.monotonic()

    thread = start_thread(thread_caller if form == "thread" else coroutine_caller)
    time.sleep(0.5)
    assert outcome == {}  # neither refused at once nor admitted
    changed_at = time.monotonic()
    changer.set_rate(600)  # within reach: what is owed (9.5 s at 10 s a request) becomes 0.095 s
    thread.join(5)
    assert outcome["ok"] is True
    assert outcome["at"] - changed_at <= 0.2  # admitted within 0.2 s of the change


def test_a_refund_wakes_a_caller_standing_by():
    limiter = RateLimiter(60)  # one a second
    assert limiter.acquire(timeout=0)
    booked = {}

    def interrupted_sleeper():  # books the next turn, 1 s away, then gives it back (a cancelled task)
        async def main():
            task = asyncio.ensure_future(limiter.acquire_async(timeout=5))
            await asyncio.sleep(0.2)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        asyncio.run(main())
        booked["done"] = time.monotonic()

    thread = start_thread(interrupted_sleeper)
    time.sleep(0.05)  # the sleeper has booked the turn at 1 s
    ok, waited = _timed(lambda: limiter.acquire(timeout=1.5))  # its own turn, 2 s away, is out of reach
    thread.join(5)
    assert ok is True
    assert waited <= 1.0 + SLACK  # the refund at 0.2 s brought it the turn at 1 s


# ---- close() ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_close_wakes_a_waiter_that_would_wait_forever(kind, request):
    limiter = _drained(kind, request)
    outcomes = []

    def thread_caller():
        outcomes.append(_answer_or_closed(lambda: limiter.acquire(timeout=None)))

    async def coroutine_caller():
        try:
            return await limiter.acquire_async(timeout=None)
        except LimiterClosed:
            return "closed"

    threads = [start_thread(thread_caller) for _ in range(3)]
    if kind in ASYNC_KINDS:
        threads.append(start_thread(lambda: outcomes.append(asyncio.run(coroutine_caller()))))
    time.sleep(0.3)
    assert outcomes == []
    closed_at = time.monotonic()
    limiter.close()
    for thread in threads:
        thread.join(2)
    assert time.monotonic() - closed_at < 1.0
    assert outcomes == ["closed"] * len(threads)
    assert limiter.closed
    with pytest.raises(LimiterClosed):
        limiter.acquire(timeout=0)
    assert limiter.waiting == 0


def test_close_wakes_callers_asleep_on_a_booking_or_a_pause_and_gives_bookings_back():
    limiter = RateLimiter(6000)
    other = RateLimiter(6000)
    other.pause(30)
    outcomes = []

    def call(target, timeout):
        outcomes.append(_answer_or_closed(lambda: target.acquire(timeout=timeout)))

    assert limiter.acquire(timeout=0)
    limiter.set_rate(1)  # the next turn is 60 s away: a caller with a long timeout books it and sleeps
    threads = [start_thread(call, limiter, 120), start_thread(call, other, 60), start_thread(call, other, 5)]
    time.sleep(0.3)
    limiter.close()
    other.close()
    for thread in threads:
        thread.join(2)
    assert outcomes == ["closed"] * 3


def test_closing_a_manager_closes_its_limiters_and_those_it_builds_afterwards():
    manager = ProviderRateLimitManager()
    openai = {"name": "openai", "api_key": "sk-x", "model": "gpt-4o-mini"}
    rate = manager.get_limiter("openai", {**openai, "rate_limit_rpm": 1}, role="a")
    assert rate.acquire(timeout=0)
    outcome = []
    waiter = start_thread(lambda: outcome.append(_answer_or_closed(lambda: rate.acquire(timeout=None))))
    time.sleep(0.2)
    manager.close()
    waiter.join(2)
    assert outcome == ["closed"] and manager.closed and rate.closed
    later = manager.get_limiter("openai", {**openai, "max_concurrent_calls": 2}, role="b")
    with pytest.raises(LimiterClosed):
        later.acquire(timeout=0)


# ---- The callers that exist ------------------------------------------------------------------------


def _load(limiter, worker, count, seconds):
    """Runs `count` threads of `worker` for `seconds`, then closes the limiter, which ends them
    (LimiterClosed); returns the CPU time the process used meanwhile."""
    cpu_before = time.process_time()
    threads = [start_thread(worker) for _ in range(count)]
    time.sleep(seconds)
    cpu = time.process_time() - cpu_before
    limiter.close()
    for thread in threads:
        thread.join(5)
    assert all(not thread.is_alive() for thread in threads)
    return cpu


@pytest.mark.parametrize(("rpm", "workers"), [(3, 10), (60, 200)])
def test_callers_that_ignore_the_answer_stay_within_the_limit(rpm, workers):
    # OmniGen's generators (and the guide's RPM snippet): acquire(timeout=120), ignore the result,
    # call the provider, record_request(). More workers than rpm * timeout / 60 used to call the
    # provider in a tight loop; now the extra ones wait out their 120 s.
    limiter = RateLimiter(rpm, provider_name="ignored")
    calls = []
    lock = threading.Lock()
    seconds = 4.0
    started = time.monotonic()

    def generator():
        try:
            while True:
                limiter.acquire(timeout=120)  # the answer is ignored
                with lock:
                    calls.append(time.monotonic() - started)
                limiter.record_request()
        except LimiterClosed:
            pass

    _load(limiter, generator, workers, seconds)
    in_window = sum(1 for at in calls if at < seconds)
    allowed = 1 + rpm * seconds / 60  # the burst, then the rate
    print(f"[ignore-the-result] rpm={rpm} workers={workers}: {in_window} calls in {seconds} s (allowed {allowed})")
    assert 1 <= in_window <= allowed


def test_a_retry_loop_costs_no_cpu_and_writes_a_handful_of_warnings(caplog):
    # 64 threads retrying `while not lim.acquire(timeout=5): pass`, for 3 s; then the same with a
    # timeout counted down to a deadline, which times out all the time.
    limiter = RateLimiter(600, provider_name="retried")
    admitted = []

    def retry_loop():
        try:
            while True:
                while not limiter.acquire(timeout=5):
                    pass
                admitted.append(time.monotonic())
        except LimiterClosed:
            pass

    caplog.set_level(logging.WARNING, logger="omnilimit")
    cpu = _load(limiter, retry_loop, 64, 3)
    print(f"[retry loop] 64 threads, 3 s: {len(admitted)} admitted, CPU {cpu:.3f} s, {len(caplog.records)} warnings")
    assert cpu < 0.6
    assert 25 <= len(admitted) <= 32  # 10 a second
    assert len(caplog.records) <= 2

    limiter = RateLimiter(600, provider_name="countdown")
    caplog.clear()

    def countdown_loop():  # a budget of 0.7 s per call, the timeout counted down to its deadline
        try:
            while True:
                deadline = time.monotonic() + 0.7
                while (left := deadline - time.monotonic()) > 0:
                    if limiter.acquire(timeout=left):
                        break
        except LimiterClosed:
            pass

    cpu = _load(limiter, countdown_loop, 64, 3)
    messages = [record.getMessage() for record in caplog.records]
    print(f"[countdown] {limiter.blocked_count} timed out, CPU {cpu:.3f} s, {len(messages)} warnings: {messages}")
    assert limiter.blocked_count > 64  # they did time out, many times
    assert 1 <= len(messages) <= 2  # the first one, and at most one more per 10 s
    assert re.fullmatch(r"Rate limit timeout after (\d+(\.\d{1,3})?|<0\.001)s for countdown", messages[0]), messages
    assert cpu < 0.6


def test_eight_processes_retrying_with_short_timeouts_share_600_rpm_without_loss(shm_name):
    start = time.monotonic() + 2.0  # after every child has imported omnilimit
    seconds = 6.0
    stamps_per_child = run_children(
        8,
        """
        import json, threading, time
        from omnilimit import LimiterClosed, RateLimiter
        limiter = RateLimiter(600, provider_name="shared", backend="shm://{name}")
        start, end = {start}, {start} + {seconds}
        stamps, lock = [], threading.Lock()

        def work():
            while time.monotonic() < start:
                time.sleep(0.001)
            while time.monotonic() < end:
                if not limiter.acquire(timeout=0.5):  # a retry loop with a short timeout
                    continue
                now = time.monotonic()
                if start <= now < end:
                    with lock:
                        stamps.append(now)

        cpu = time.process_time()
        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(json.dumps({{"stamps": stamps, "cpu": time.process_time() - cpu}}))
        """,
        name=shm_name,
        start=start,
        seconds=seconds,
    )
    stamps = sorted(t for child in stamps_per_child for t in child["stamps"])
    cpu = sum(child["cpu"] for child in stamps_per_child)
    ideal = 1 + int(seconds * 10 - 1e-9)  # burst 1, then one every 0.1 s in [start, start + 6 s)
    print(f"[shm retry 8x8] admitted={len(stamps)} ideal={ideal} cpu={cpu:.2f} s")
    assert abs(len(stamps) - ideal) <= 0.01 * ideal, (len(stamps), ideal)
    for i, first in enumerate(stamps):  # no 1-s window above the rate + 1
        assert bisect.bisect_right(stamps, first + 1.0) - i <= 11
    assert cpu < 2.0  # nobody spins (8 interpreters start up in this too)


# ---- Timeout warnings stay readable ------------------------------------------------------------


def test_timeout_warnings_are_throttled_per_limiter_and_say_how_many_more(caplog, monkeypatch):
    monkeypatch.setattr(omnilimit._log, "TIMEOUT_WARNING_INTERVAL_S", 0.5)
    limiter = ConcurrencyLimiter(1, name="busy")
    other = ConcurrencyLimiter(1, name="other")
    assert limiter.acquire() and other.acquire()
    caplog.set_level(logging.WARNING, logger="omnilimit")
    for _ in range(5):
        assert limiter.acquire(timeout=0.01) is False
    assert other.acquire(timeout=0.01) is False  # another limiter: its first line is its own
    time.sleep(0.5)
    assert limiter.acquire(timeout=0.02) is False
    assert [r.getMessage() for r in caplog.records] == [
        "Concurrency limit timeout after 0.01s for busy",
        "Concurrency limit timeout after 0.01s for other",
        "Concurrency limit timeout after 0.02s for busy (and 4 more in the last 1 s)",
    ]
    assert limiter.blocked_count == 6  # exact, whatever the log shows
    assert limiter.metrics()["timed_out"] == 6


@pytest.mark.parametrize(
    ("timeout", "shown"),
    [
        (60, "60"),
        (120.0, "120.0"),
        (0.5, "0.5"),
        (2.25, "2.25"),
        (0.00010013580322265625, "<0.001"),
        (4.99990000123, "5"),
        (1.23456, "1.235"),
        (10**30, str(10**30)),
    ],
)
def test_timeouts_show_as_written_or_rounded_to_the_millisecond(timeout, shown):
    assert shown_timeout(timeout) == shown


# ---- Ctrl-C in a thread pool: the documented recipe ----------------------------------------------


def _documented_recipe():
    """The Python block of docs/guide/timeout-contract.md that follows the Ctrl-C recipe's heading."""
    text = TIMEOUT_DOC.read_text(encoding="utf-8")
    section = text[text.index("## Ctrl-C in a thread pool") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_documented_ctrl_c_recipe_exits_within_a_second():
    script = (
        textwrap.dedent(
            """
        import time
        import omnilimit

        def call_the_api(prompt):  # the real call would go here
            time.sleep(0.01)
            return prompt

        prompts = list(range(1000))
        """
        )
        + _documented_recipe()
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2.0)  # the pool is busy: a few calls done, the other workers waiting on the limiter
        assert child.poll() is None
        interrupted_at = time.monotonic()
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=10)
        exited_after = time.monotonic() - interrupted_at
    finally:
        if child.poll() is None:
            child.kill()
    assert exited_after < 1.0, (exited_after, err)
    assert "Interrupted: the limiters are closed" in out, (out, err)


# ---- Under load --------------------------------------------------------------------------------


@pytest.mark.parametrize("budget", [{}, {"tokens_per_minute": 10**9}], ids=["requests", "requests+tokens"])
def test_standing_by_under_load_keeps_the_contract(tiny_switch_interval, budget):
    # 24 threads and a loop of 24 tasks call with short random timeouts (some fail-fast, some tasks
    # cancelled while they wait: their bookings are refunded), while the rate flips between 300
    # and 1200 RPM. Every False came once its timeout had passed (fail-fast ones excepted), every
    # admission fits the fastest rate, nobody is left waiting, and close() ends everyone.
    limiter = RateLimiter(600, provider_name="load", **budget)
    stamps, early, lock = [], [], threading.Lock()
    stop = threading.Event()

    def note(ok, asked, waited, fail_fast):
        with lock:
            if ok:
                stamps.append(time.monotonic())
            elif not fail_fast and waited < asked - 0.005:
                early.append((asked, waited))

    def thread_caller(seed):
        import random

        rng = random.Random(seed)
        try:
            while not stop.is_set():
                asked, fail_fast = rng.choice([0.0, 0.05, 0.2, 0.5]), rng.random() < 0.2
                started = time.monotonic()
                ok = limiter.acquire(timeout=asked, fail_fast=fail_fast)
                note(ok, asked, time.monotonic() - started, fail_fast)
        except LimiterClosed:
            pass

    async def task_caller(seed):
        import random

        rng = random.Random(seed)
        while not stop.is_set():
            asked, fail_fast = rng.choice([0.0, 0.05, 0.2, 0.5]), rng.random() < 0.2
            started = time.monotonic()
            attempt = asyncio.ensure_future(limiter.acquire_async(timeout=asked, fail_fast=fail_fast))
            if rng.random() < 0.2:  # cancelled while it waits: a booking is refunded
                await asyncio.sleep(rng.random() * asked)
                attempt.cancel()
            try:
                ok = await attempt
            except asyncio.CancelledError:
                continue
            except LimiterClosed:
                return
            note(ok, asked, time.monotonic() - started, fail_fast)

    async def tasks():
        await asyncio.gather(*(task_caller(100 + i) for i in range(24)))

    threads = [start_thread(thread_caller, i) for i in range(24)]
    threads.append(start_thread(lambda: asyncio.run(tasks())))
    end = time.monotonic() + 3
    rpm = 600
    while time.monotonic() < end:
        time.sleep(0.25)
        rpm = 1200 if rpm != 1200 else 300
        limiter.set_rate(rpm)
    stop.set()
    limiter.close()
    for thread in threads:
        thread.join(5)
    assert all(not thread.is_alive() for thread in threads)
    assert early == []  # no False before its timeout
    stamps.sort()
    # With a token budget nothing is booked before its time, so a slower rate loses nothing. A lone
    # GCRA commits instants ahead: a sleeper that a slower rate pushes past its deadline gives up a
    # booking that others are queued behind, which one word cannot give back (gcra.hpp's
    # non-promise), so these flips cost it capacity; it must still make progress.
    assert len(stamps) > (30 if budget else 5)
    for i, first in enumerate(stamps):  # no 1-s window above the fastest rate + 1
        assert bisect.bisect_right(stamps, first + 1.0) - i <= 1200 / 60 + 1
    assert limiter.waiting == 0
