"""Acceptance: the real ``openai`` and ``anthropic`` SDKs with nothing changed but ``http_client=``
(``omnilimit.transport.httpx2``), against a provider that enforces its limits.

The provider is ``llm_standin.LLMStandIn`` (both APIs, JSON and streamed), enforcing its limits as
token buckets of one second's worth (``window="bucket"``: the first test says why not fixed 1-s
windows, which ``test_acceptance_llm.py`` keeps). The clients are built as a user builds
them: ``OpenAI(http_client=DefaultHttpxClient(transport=LimitedTransport(limiter)))``, the SDK's
default retries (``max_retries=2``: a 429 is retried by the SDK, through the transport again), and
they call ``chat.completions.create`` / ``messages.create`` in a loop: no ``acquire``, no
``on_response``, no ``record_request``, no 429 handler. 64 threads with a sync client, 500 tasks
with an async one. The limiter is configured at the provider's own limits.

A run ends when the limiter is closed (``close()`` at the deadline: every waiting caller gets
``LimiterClosed`` through the SDK, the calls already admitted finish). The figures, from the
provider's own records over D, from the first admission to the close:

- ``429 share``: 429s / every request the provider saw (the SDK's retries included);
- ``requests ratio``: admitted requests / (the provider's cap per 1-s window x D);
- ``tokens ratio``: what the admitted requests finally count against the token budget / (the
  provider's tokens per 1-s window x D).

The acceptance bounds are the issue's: at most 1% 429s, and at least 95% of the binding budget.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from sdk_runs import (
    CHARGE,
    DRIVERS,
    MESSAGES,
    Run,
    call,
    call_async,
    drive_threads,
    httpx2,
    make_client,
    report,
)

from omnilimit import ConcurrencyLimiter, LimiterClosed, RateLimiter

# ------------------------------------------------------------------------------------------------
# 1. At the budget, no 429s: requests-bound and tokens-bound, streamed and not, threads and tasks


@pytest.mark.parametrize("api", ["openai", "anthropic"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("callers", ["threads", "tasks"])
@pytest.mark.parametrize("binding", ["requests", "tokens"])
def test_the_sdk_with_only_http_client_changed_stays_under_the_providers_limits_at_full_speed(
    provider_factory: Any, api: str, stream: bool, callers: str, binding: str
) -> None:
    """``requests``: RPM 1200 (20 per window) binds, TPM allows three times the traffic.
    ``tokens``: TPM ``20 x CHARGE`` per window binds (each call uses all its ``max_tokens``), RPM
    6000 does not. 10 s. At most 1% 429s over the whole run; the binding budget used at >= 95%
    from 1 s after the first admission: until then 500 tasks are still building their first
    requests (the SDK's CPU, about 1.7 ms each), and on this 2-vCPU machine a 5-s run measured
    from the first admission once fell to 91.8% (windows 6, 20, 19, 20, 8: the edges)."""
    if binding == "requests":
        rpm, tpm = 1200, 3 * 1200 * CHARGE
    else:
        rpm, tpm = 6000, 20 * CHARGE * 60
    # OpenAI's charge stands (settle_tokens=False); Anthropic gives back what is not used (none here).
    # Both enforce a token bucket of one second's worth: against fixed 1-s windows at exactly their
    # cap, a call admitted at the end of one window that reaches the provider a few ms late lands
    # in the next, and the whole-second pause of that stray 429 costs every caller a window (a CI
    # run of the openai threads/tokens/json case: 1 stray 429 in 161 requests, 87.8% of the TPM,
    # windows 20, 0, 20, ...). That is the fixed window's edge, not the transport's; the
    # in-process acceptance (test_acceptance_llm.py) keeps the fixed windows.
    provider = provider_factory(
        rpm=rpm,
        tpm=tpm,
        max_concurrent=64,
        completion_ratio=1.0,
        settle_tokens=(api == "anthropic"),
        window="bucket",
    )
    limiter = RateLimiter(rpm, provider_name="standin", tokens_per_minute=tpm)

    run = DRIVERS[callers](api, provider, limiter, stream, seconds=10.0)

    figures = run.figures(start=provider.served_times[0] + 1.0)  # the 429s: over the whole run
    line = report(f"{api}-{callers}-{binding}-bound-{'stream' if stream else 'json'}", figures)
    assert figures["share_429"] <= 0.01, f"more than 1% 429s: {line}"
    assert figures[f"{binding}_ratio"] >= 0.95, f"the binding budget used below 95%: {line}"
    assert not run.sdk_errors, f"calls failed: {run.sdk_errors[:3]}"


# ------------------------------------------------------------------------------------------------
# 2. Settling: tokens given back where the provider gives them back, and only there

REFUND_BURST = 2 * CHARGE  # the token_burst the README gives: two of the largest requests' reservations


@pytest.mark.parametrize(
    ("callers", "token_burst", "backend"),
    [
        ("threads", REFUND_BURST, None),
        ("tasks", REFUND_BURST, None),
        ("threads", REFUND_BURST, "redis"),
        ("tasks", REFUND_BURST, "redis"),
        ("threads", CHARGE, None),
        ("threads", 1, None),
    ],
    ids=["threads", "tasks", "threads-redis", "tasks-redis", "threads-burst-one-reservation", "threads-burst-1"],
)
def test_tokens_given_back_reach_90_percent_of_the_tpm_against_a_provider_that_gives_them_back(
    provider_factory: Any, callers: str, token_burst: int, backend: Any, request: Any, unique_name: str
) -> None:
    """Anthropic's rule: the output tokens a call did not use are given back at its end. Each call
    reserves ``CHARGE`` and uses half its ``max_tokens``. The stand-in is a token bucket, as
    Anthropic documents its limits (a 1-s window cannot credit what an earlier window's call gives
    back, see docs/guide/sdk-transport.md), TPM ``20 x CHARGE`` per second binding. With
    ``token_burst = 2 x CHARGE`` the tokens really used reach >= 90% of the TPM, with at most 1%
    429s. With a smaller burst (the figures the docs give) the calls still meet no 429; what they
    give back is partly (one reservation) or wholly (1, the default) lost: a reservation larger
    than the burst is paid for by waiting before the call goes, and finds the bucket full when it
    gives tokens back. Only the runs at two reservations assert the 90%, in process and with the
    budget in Redis (``RedisTokenStore``: the transport's settles are its round trips)."""
    rpm, tpm = 6000, 20 * CHARGE * 60
    provider = provider_factory(rpm=rpm, tpm=tpm, max_concurrent=64, completion_ratio=0.5, window="bucket")
    store = request.getfixturevalue("redis_url") if backend == "redis" else None
    limiter = RateLimiter(
        rpm, provider_name=unique_name[-40:], tokens_per_minute=tpm, token_burst=token_burst, backend=store
    )

    run = DRIVERS[callers]("anthropic", provider, limiter, False, seconds=6.0 if backend else 5.0)

    # With Redis, 6 s measured from 1 s after the first admission, as the matrix measures: 500
    # tasks joining the line at once, each look a round trip, start it more slowly than in process.
    figures = run.figures(start=provider.served_times[0] + 1.0) if backend else run.figures()
    line = report(f"refunding-provider-{callers}-{backend or 'process'}-token_burst-{token_burst}", figures)
    assert figures["share_429"] <= 0.01, f"more than 1% 429s: {line}"
    if token_burst >= REFUND_BURST:
        assert figures["tokens_ratio"] >= 0.90, f"the tokens used reached less than 90% of the TPM: {line}"
    else:  # not the promise: the figures the docs give for a burst below two reservations
        assert figures["tokens_ratio"] >= 0.45, f"less than the budget of the reservations alone: {line}"


@pytest.mark.parametrize("settle", [None, "refund_unused"], ids=["openais-rule", "control-wrong-rule"])
def test_settling_by_openais_rule_causes_no_429s_where_the_charge_stands(provider_factory: Any, settle: Any) -> None:
    """OpenAI's rule: a call's charge at arrival (prompt + max_tokens) stands, whatever it used.
    The same configuration as above (calls using half their max_tokens, token_burst 2 x CHARGE),
    against a provider whose charge stands: the transport's default rule for OpenAI gives nothing
    back, and no 429 comes. The control gives the unused half back (``settle="refund_unused"``):
    the limiter then believes in tokens the provider does not have, and the provider answers 429s."""
    rpm, tpm = 6000, 20 * CHARGE * 60
    provider = provider_factory(
        rpm=rpm, tpm=tpm, max_concurrent=64, completion_ratio=0.5, settle_tokens=False, window="bucket"
    )
    limiter = RateLimiter(rpm, provider_name="standin", tokens_per_minute=tpm, token_burst=REFUND_BURST)
    options = {} if settle is None else {"settle": settle}

    run = drive_threads("openai", provider, limiter, False, seconds=5.0, **options)

    figures = run.figures()
    line = report(f"charge-stands-{'control' if settle else 'openai-rule'}", figures)
    if settle is None:
        assert figures["http_429"] == 0, f"429s from settling by OpenAI's rule: {line}"
        assert figures["tokens_ratio"] >= 0.95, f"the TPM used below 95%: {line}"
    else:
        assert figures["http_429"] > 0, f"giving back what the provider keeps went unpunished: {line}"


# ------------------------------------------------------------------------------------------------
# 3. A tier drop, and a concurrency cap held over streams


@pytest.mark.parametrize(("api", "callers"), [("openai", "threads"), ("anthropic", "tasks")])
def test_a_tier_drop_mid_run_is_followed_within_5_s(provider_factory: Any, api: str, callers: str) -> None:
    """The provider's RPM drops from 1200 to 600 3 s into a 10-s run, without telling the client;
    calls take 0.3-0.6 s (as LLM calls do). The limiter stays configured at 1200: only the headers
    the transport feeds it (a lower ``limit``, ``remaining``, the 429s) can tell it. From 5 s after
    the drop: the limiter at the new limit, at most one stray 429 (none measured), and the served
    rate within 10% of the new limit."""
    provider = provider_factory(rpm=1200, tpm=3 * 1200 * CHARGE, max_concurrent=64, latency_s=(0.3, 0.6))
    limiter = RateLimiter(1200, provider_name="standin", tokens_per_minute=3 * 1200 * CHARGE)
    dropped: list[float] = []
    changer = threading.Timer(3.0, lambda: (provider.set_limits(rpm=600), dropped.append(time.monotonic())))
    changer.start()
    try:
        run = DRIVERS[callers](api, provider, limiter, False, seconds=10.0)
    finally:
        changer.cancel()
        changer.join()

    drop = dropped[0]
    late = [round(t - drop, 3) for t in provider.rejected_times if t >= drop + 5.0]
    after = run.figures(start=drop + 5.0)
    line = report(
        f"tier-drop-{api}-{callers}",
        {
            **after,
            "http_429_s_after_drop": [round(t - drop, 3) for t in provider.rejected_times],
            "limiter_rpm_now": limiter.rpm,
        },
    )
    assert limiter.rpm == 600, f"the limiter did not follow the provider's new limit: {line}"
    assert len(late) <= 1, f"429s 5 s or more after the drop: {line}"  # a stray one: see test_acceptance_llm
    assert 0.9 <= after["requests_ratio"] <= 1.1, f"the rate 5 s after the drop is not the new limit: {line}"


def test_a_concurrency_slot_is_held_for_a_streams_life(provider_factory: Any) -> None:
    """The provider takes at most 8 calls at once; 64 threads stream through a
    ``ConcurrencyLimiter(8)``, the slot held from the request to the stream's end. No 429, and the
    provider sees the 8 at once."""
    provider = provider_factory(max_concurrent=8)
    slots = ConcurrencyLimiter(8, name="standin")

    run = drive_threads("anthropic", provider, slots, True, seconds=3.0)

    figures = {**run.figures(), "max_in_flight": provider.max_in_flight}
    line = report("concurrency-streams", figures)
    assert figures["http_429"] == 0, f"429s under the concurrency cap: {line}"
    assert provider.max_in_flight == 8 and slots.active_calls == 0, line


# ------------------------------------------------------------------------------------------------
# 4. The stand-in itself: Anthropic's headers and the bucket


def test_the_standin_speaks_anthropics_headers_and_its_bucket_refills(provider_factory: Any) -> None:
    """RPM 120 (a bucket of 2, refilled at 2 per second): two calls go, the third is answered 429
    with ``retry-after`` and Anthropic's headers, which omnilimit's parser reads; half a second
    later one more goes."""
    from omnilimit import parse_rate_limit_headers

    provider = provider_factory(rpm=120, window="bucket")
    body = {"model": "claude-haiku-4-5", "max_tokens": 10, "messages": MESSAGES}
    with httpx2.Client(base_url=provider.anthropic_url) as client:
        answers = [client.post("/v1/messages", json=body) for _ in range(3)]
        time.sleep(0.6)
        later = client.post("/v1/messages", json=body)
    assert [a.status_code for a in answers] == [200, 200, 429] and later.status_code == 200
    refused = answers[2]
    assert refused.json()["error"]["type"] == "rate_limit_error" and refused.headers["retry-after"] == "1"
    info = parse_rate_limit_headers(refused.headers)
    assert info.requests_limit == 120 and info.requests_remaining == 0 and info.retry_after_s == 1.0
    assert info.requests_reset_s is not None and 0.0 < info.requests_reset_s <= 1.0
    assert answers[0].json()["usage"] == {"input_tokens": 15, "output_tokens": 5}


# ------------------------------------------------------------------------------------------------
# 5. Threads and asyncio on one limiter, in process, in shared memory and in Redis


@pytest.mark.parametrize("backend", ["process", "shm", "redis"])
def test_threads_and_tasks_share_one_limiter_and_the_loop_never_blocks(
    provider_factory: Any, backend: str, request: Any, unique_name: str
) -> None:
    """32 threads with ``OpenAI`` and 250 tasks with ``AsyncOpenAI`` (the main thread's loop) on one
    RPM-1200 limiter (the stores refuse a token budget across processes yet), for 10 s, measured
    from 1 s after the first admission (the 429s over the whole run), as the matrix is. At most 1%
    429s, >= 90% of the RPM (the 95% runs are above, one kind of caller at a time), and the event
    loop never stalls: a ticker task sleeping 10 ms at a time is never late by 0.5 s, which any
    blocking wait in the async transport (hundreds of callers queued at 20 per second) would
    exceed at once.

    The provider is the token-bucket stand-in: this run is about sharing and the loop, not about
    a fixed window's edges. Against fixed 1-s windows, at exactly their cap, 282 callers of one
    process meet a stray 429 now and then (a request that reaches the provider a few ms late lands
    in the next window): 0 to 2 in 180 measured, for every backend. Redis met 4% to 11% there
    before a pause reached the callers already booked on the server (``test_redis.py``:
    ``test_a_pause_reaches_the_callers_already_asleep_on_a_booking``)."""
    provider = provider_factory(rpm=1200, max_concurrent=64, window="bucket")
    store = {
        "process": None,
        "shm": f"shm://{unique_name[-40:]}",
        "redis": request.getfixturevalue("redis_url") if backend == "redis" else None,
    }[backend]
    limiter = RateLimiter(1200, provider_name=unique_name, backend=store)
    sync = make_client("openai", provider, limiter)
    errors: list[str] = []

    def worker() -> None:
        while True:
            try:
                call(sync, "openai", False)
            except LimiterClosed:
                return
            except Exception as error:  # reported by the test
                errors.append(repr(error))
                return

    async def main() -> float:
        aclient = make_client("openai", provider, limiter, True)
        late = 0.0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal late
            await asyncio.sleep(1.0)  # after the tasks' first calls: each builds its request (the SDK's CPU) first
            while not stop.is_set():
                before = time.monotonic()
                await asyncio.sleep(0.01)
                late = max(late, time.monotonic() - before - 0.01)

        async def task() -> None:
            while True:
                try:
                    await call_async(aclient, "openai", False)
                except LimiterClosed:
                    return

        tick = asyncio.ensure_future(ticker())
        tasks = [asyncio.ensure_future(task()) for _ in range(250)]
        await asyncio.sleep(10.0)
        run.closed_at = time.monotonic()
        limiter.close()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
        stop.set()
        await tick
        await aclient.close()
        return late

    run = Run(provider)
    threads = [threading.Thread(target=worker, name=f"mixed-{i}") for i in range(32)]
    for t in threads:
        t.start()
    try:
        late = asyncio.run(main())
    finally:
        limiter.close()
        for t in threads:
            t.join(timeout=60)
        sync.close()
    figures = {
        **run.figures(start=provider.served_times[0] + 1.0),
        "loop_late_max_s": round(late, 3),
        "http_429_s_after_first": [round(t - provider.served_times[0], 3) for t in provider.rejected_times],
    }
    line = report(f"threads-and-tasks-{backend}", figures)
    assert not errors, errors[:3]
    assert late < 0.5, f"the event loop stalled: {line}"
    assert figures["share_429"] <= 0.01, f"more than 1% 429s: {line}"
    assert figures["requests_ratio"] >= 0.90, f"the RPM used below 90%: {line}"
