"""Acceptance: one token budget shared by 4 processes through Redis or shared memory, against a
provider that enforces it.

The provider is ``tests/llm_standin.py``'s stand-in in this process (429 with OpenAI's headers),
enforcing its RPM and TPM as token buckets holding one second's worth (``window="bucket"``). Against
fixed 1-s windows at exactly their cap, the shared budget met 0 429s in two local runs and 1 in a
CI run: a request admitted at the end of one window that reaches the provider a few ms late lands
in the next, and that 429's whole-second pause then costs everyone a window (80% of the tokens).
Such strays are the fixed window's edge, not the budget's; the in-process acceptance
(``test_acceptance_llm.py``) keeps the fixed windows. Four child processes of 16 threads each call it through the
real ``openai`` client as ``test_acceptance_llm.py``'s clients do (``acquire(tokens=estimate)``,
the call with ``max_retries=0``, ``on_response`` after every response, ``record_request(tokens=
usage)`` after a success). Behind one shared budget (``backend=`` a Redis URL, or ``shm://NAME``)
they meet no 429;
the control, each process with its own in-process budget at the full limits, meets hundreds.
Figures in the output (``pytest -s``)."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import common_start, need, run_children
from llm_standin import per_second
from llm_wire import prompt_tokens

from omnilimit import remove_shared

need("openai")
need("redis")

MESSAGES = [{"role": "user", "content": "Summarise the plot of Hamlet in one sentence, in plain English."}]
MAX_TOKENS = 100
ESTIMATE = prompt_tokens(MESSAGES) + MAX_TOKENS

CHILD = """
import json, threading, time
import openai
from omnilimit import RateLimiter
backend = {backend!r} or None
limiter = RateLimiter({rpm}, provider_name="{name}", tokens_per_minute={tpm}, backend=backend)
client = openai.OpenAI(base_url="{base_url}", api_key="x", max_retries=0, timeout=30.0)
start, end = {start}, {start} + {seconds}
figures = {{"ok": 0, "rejected": 0, "tokens": 0, "first": None, "last": 0.0, "errors": [], "calls": []}}
lock = threading.Lock()

def worker():
    while time.monotonic() < start:
        time.sleep(0.001)
    while True:
        left = end - time.monotonic()
        if left <= 0 or not limiter.acquire(tokens={estimate}, timeout=left):
            return
        admitted = time.monotonic()
        try:
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages={messages!r}, max_tokens={max_tokens})
        except openai.RateLimitError as error:
            if {feedback}:
                limiter.on_response(error.response.status_code, error.response.headers)
            with lock:
                figures["rejected"] += 1
            continue
        except Exception as error:
            with lock:
                figures["errors"].append(repr(error))
            return
        if {feedback}:
            limiter.on_response(raw.http_response.status_code, raw.headers)
        used = raw.parse().usage.total_tokens
        limiter.record_request(tokens=used)
        done = time.monotonic()
        with lock:
            figures["ok"] += 1
            figures["tokens"] += used
            figures["first"] = admitted if figures["first"] is None else min(figures["first"], admitted)
            figures["last"] = max(figures["last"], done)
            figures["calls"].append((admitted, used))

threads = [threading.Thread(target=worker) for _ in range(16)]
for t in threads: t.start()
for t in threads: t.join()
client.close()
print(json.dumps(figures))
"""


@pytest.mark.parametrize(
    ("where", "feedback"),
    [("redis", True), ("shm", True), ("", True), ("", False)],
    ids=["one-budget-in-redis", "one-budget-in-shm", "control-a-budget-per-process", "control-without-headers"],
)
def test_four_processes_behind_one_token_budget_meet_no_429(
    provider_factory: Any, request: pytest.FixtureRequest, unique_name: str, where: str, feedback: bool
) -> None:
    """TPM binds (20 calls' worth of tokens per 1-s window; RPM 6000 does not bind), every call
    uses what it reserved. One budget in Redis, or in shared memory: no 429 and >= 95% of the
    sustainable tokens (the window's cap times the span from 1 s after the first admission to the
    last; a CI run on Valkey measured from the first admission to the last completion fell to
    94.9%, windows 11, 20, 20, 19, 20, 15). The controls: four in-process budgets at the full
    limits, each sending up to the whole rate: hundreds of 429s (165 to 172 fed the provider's
    headers and 429s through ``on_response``, 319 to 341 without)."""
    shared = bool(where)
    backend = request.getfixturevalue("redis_url") if where == "redis" else f"shm://{unique_name}" if shared else ""
    if where == "shm":
        request.addfinalizer(lambda: remove_shared(unique_name))
    rpm, tpm = 6000, 20 * ESTIMATE * 60
    provider = provider_factory(rpm=rpm, tpm=tpm, max_concurrent=64, completion_ratio=1.0, window="bucket")
    start = common_start(4)
    seconds = 6.0
    results = run_children(
        4,
        CHILD,
        backend=backend,
        feedback=feedback,
        rpm=rpm,
        tpm=tpm,
        name=unique_name,
        base_url=provider.base_url,
        start=start,
        seconds=seconds,
        estimate=ESTIMATE,
        messages=MESSAGES,
        max_tokens=MAX_TOKENS,
    )
    errors = [e for child in results for e in child["errors"]]
    assert not errors, errors[:3]
    ok = sum(child["ok"] for child in results)
    rejected = sum(child["rejected"] for child in results)
    tokens = sum(child["tokens"] for child in results)
    span = max(child["last"] for child in results) - min(child["first"] for child in results if child["first"])
    cap = per_second(tpm)
    assert cap is not None
    # The budget used from 1 s after the first admission to the last: until then 64 threads are
    # joining (with Redis, each look a round trip), as in the transport's shared runs.
    calls = sorted(call for child in results for call in child["calls"])
    begin, last = calls[0][0] + 1.0, calls[-1][0]
    ratio = sum(used for at, used in calls if begin <= at < last) / (cap * (last - begin))
    run = (f"shared-{where}" if shared else "control") + ("" if feedback else "-without-headers")
    line = (
        f"[four-processes-{run}] calls={ok} http_429={rejected} tokens={tokens} "
        f"span_s={span:.2f} ratio={ratio:.3f} per_window={provider.served_per_second()}"
    )
    print(line)
    if shared:
        assert rejected == 0 and provider.rejected_count == 0, line
        assert ratio >= 0.95, line
    elif feedback:
        assert rejected >= 50, line
    else:
        assert rejected >= 100, line
