"""What ``omnilimit.transport.httpx2.LimitedTransport`` adds to a request of the real openai SDK,
without the network: the same calls through a bare ``httpx2.MockTransport`` and through the
transport wrapping it (estimate + acquire + on_response + usage read + settle), per request.

    python benchmarks/transport_overhead.py          # needs openai and httpx2 (omnilimit[test-all])

Interleaved rounds, the minimum per form (this machine has fast and slow phases). Prompts of 1 KB
and 100 KB: the estimate reads every string of the body, cached per string.
"""

from __future__ import annotations

import json
import time

import httpx2
import openai

from omnilimit import RateLimiter
from omnilimit.transport.httpx2 import LimitedTransport

ANSWER = {
    "id": "c1",
    "object": "chat.completion",
    "created": 0,
    "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110},
}
HEADERS = {"x-ratelimit-limit-requests": "10000000", "x-ratelimit-remaining-requests": "9999999"}
BODY = json.dumps(ANSWER).encode()


def answer(request: httpx2.Request) -> httpx2.Response:
    return httpx2.Response(200, headers={**HEADERS, "content-type": "application/json"}, content=BODY)


def client(limited: bool) -> openai.OpenAI:
    transport: httpx2.BaseTransport = httpx2.MockTransport(answer)
    if limited:
        limiter = RateLimiter(10_000_000, burst_size=1_000_000, tokens_per_minute=10**12, token_burst=10**11)
        transport = LimitedTransport(limiter, transport)
    return openai.OpenAI(api_key="k", max_retries=0, http_client=httpx2.Client(transport=transport))


def per_request_us(sdk: openai.OpenAI, prompt: str, calls: int) -> float:
    messages = [{"role": "user", "content": prompt}]
    started = time.perf_counter()
    for _ in range(calls):
        sdk.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=200)  # type: ignore[arg-type]
    return (time.perf_counter() - started) / calls * 1e6


def main() -> None:
    for size in (1_000, 100_000):
        prompt = "word " * (size // 5)
        bare, limited = client(False), client(True)
        best = {"bare": float("inf"), "limited": float("inf")}
        for _ in range(7):
            best["bare"] = min(best["bare"], per_request_us(bare, prompt, 300))
            best["limited"] = min(best["limited"], per_request_us(limited, prompt, 300))
        print(
            f"prompt {size // 1000:>3} KB: bare {best['bare']:7.1f} us, through LimitedTransport "
            f"{best['limited']:7.1f} us: +{best['limited'] - best['bare']:.1f} us per request"
        )


if __name__ == "__main__":
    main()
