"""A short demonstration: a thread pool drives both limiters the way OmniGen's workers do, and
prints what each limiter let through next to its stats."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from omnilimit.concurrency import ConcurrencyLimiter
from omnilimit.rate import RateLimiter


def _fake_api_call(rng: random.Random) -> None:
    time.sleep(rng.uniform(0.02, 0.08))  # network latency of an LLM call, scaled down


def run_concurrency(workers: int, calls: int, max_concurrent: int) -> None:
    limiter = ConcurrencyLimiter(max_concurrent=max_concurrent, name="openai_gpt-4o-mini_user_followup")
    in_flight = 0
    most_in_flight = 0
    guard = threading.Lock()

    def call(seed: int) -> None:
        nonlocal in_flight, most_in_flight
        rng = random.Random(seed)
        if not limiter.acquire(timeout=120):
            return
        try:
            with guard:
                in_flight += 1
                most_in_flight = max(most_in_flight, in_flight)
            _fake_api_call(rng)
            with guard:
                in_flight -= 1
        finally:
            limiter.release()

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(call, range(calls)))
    elapsed = time.monotonic() - started
    print(f"ConcurrencyLimiter(max_concurrent={max_concurrent}) with {workers} worker threads, {calls} calls:")
    print(f"  most calls in flight at once: {most_in_flight} (limit {max_concurrent})")
    print(f"  wall time {elapsed:.2f} s, current RPM {limiter.get_current_rpm()}")
    print(f"  get_stats(): {limiter.get_stats()}")


def run_rate(workers: int, calls: int, rpm: int) -> None:
    limiter = RateLimiter(requests_per_minute=rpm, provider_name="anthropic_claude-3-haiku_assistant_response")
    stamps: list[float] = []
    guard = threading.Lock()
    started = time.monotonic()

    def call(seed: int) -> None:
        rng = random.Random(seed)
        if not limiter.acquire(timeout=60):
            return
        with guard:
            stamps.append(time.monotonic() - started)
        _fake_api_call(rng)
        limiter.record_request()

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(call, range(calls)))
    burst = limiter.burst_size
    ideal_s = (calls - burst) / (rpm / 60.0)
    print(f"RateLimiter(requests_per_minute={rpm}, burst_size={burst}) with {workers} worker threads, {calls} calls:")
    print(f"  first {burst} admitted within {stamps[burst - 1] * 1000:.1f} ms (the burst)")
    print(f"  last admitted at {stamps[-1]:.3f} s; burst + rate x time predicts {ideal_s:.3f} s")
    print(f"  get_stats(): {limiter.get_stats()}")


def main() -> int:
    print("omnilimit demonstration\n")
    run_concurrency(workers=32, calls=400, max_concurrent=8)
    print()
    run_rate(workers=32, calls=80, rpm=1200)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
