"""``omnilimit demo``: a thread pool drives both limiters the way OmniGen's workers do, on
simulated calls, and the command prints what each limiter let through next to its stats and
whether it held its limit. No configuration, no network, nothing shared; about 7 seconds.

Exit status 0 when both limiters held their limits, 1 when one did not (a bug: the line on stderr
says which), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from omnilimit.cli import error_line
from omnilimit.concurrency import ConcurrencyLimiter
from omnilimit.rate import RateLimiter

DESCRIPTION = (
    "Show both limiters at work on this machine, with no configuration file: about 7 seconds, no "
    "network, nothing shared with other processes. First a ConcurrencyLimiter(max_concurrent=8) "
    "under 32 worker threads making 400 simulated calls of 20 to 80 ms: it prints the most calls "
    "in flight at once against the limit, the wall time and get_stats(). Then a "
    "RateLimiter(requests_per_minute=1200) under 32 threads making 80 calls: it prints when the "
    "burst and the last call were admitted against what burst + rate x time predicts, and "
    "get_stats()."
)
EPILOG = (
    "Exit status 0 when both limiters held their limits, 1 when one did not (a bug: "
    "'omnilimit demo: error: ...' on stderr says which), 2 for a usage error."
)
LATENCY_S = (0.02, 0.08)  # a simulated call's latency, uniform between these


def _fake_api_call(rng: random.Random) -> None:
    time.sleep(rng.uniform(*LATENCY_S))  # network latency of an LLM call, scaled down


def run_concurrency(workers: int, calls: int, max_concurrent: int) -> str | None:
    """Runs and prints the concurrency part; returns what went wrong (None: the limit held)."""
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
    held = most_in_flight <= max_concurrent
    best_s = calls * sum(LATENCY_S) / 2 / max_concurrent
    print(f"ConcurrencyLimiter(max_concurrent={max_concurrent}) with {workers} worker threads, {calls} calls:")
    print(f"  most calls in flight at once: {most_in_flight} (limit {max_concurrent}): {_held(held)}")
    print(f"  wall time {elapsed:.2f} s (at best about {best_s:.2f} s), current RPM {limiter.get_current_rpm()}")
    print(f"  get_stats(): {limiter.get_stats()}")
    if held:
        return None
    return f"the ConcurrencyLimiter let {most_in_flight} calls in flight at once (limit {max_concurrent})"


def run_rate(workers: int, calls: int, rpm: int) -> str | None:
    """Runs and prints the rate part; returns what went wrong (None: the limit held)."""
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
    per_s = rpm / 60.0
    ideal_s = (calls - burst) / per_s
    stamps.sort()
    # the n-th admission (1-based) may come no earlier than (n - burst) / rate; one call of slack
    # for the instants between the limiter's creation and `started`
    ahead = max((n - (burst + per_s * t) for n, t in enumerate(stamps, 1)), default=0.0)
    held = ahead < 1
    print(f"RateLimiter(requests_per_minute={rpm}, burst_size={burst}) with {workers} worker threads, {calls} calls:")
    if len(stamps) >= burst:
        print(f"  the first {burst} (the burst) admitted within {stamps[burst - 1] * 1000:.1f} ms")
    if stamps:
        print(f"  last admitted at {stamps[-1]:.3f} s; burst + rate x time predicts {ideal_s:.3f} s")
    print(f"  never ahead of burst + rate x time: {_held(held)}")
    if len(stamps) < calls:
        print(f"  {calls - len(stamps)} calls timed out waiting")
    print(f"  get_stats(): {limiter.get_stats()}")
    if held:
        return None
    return f"the RateLimiter admitted {int(ahead)} call(s) ahead of burst + rate x time"


def _held(held: bool) -> str:
    return "held" if held else "NOT HELD"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="omnilimit demo", description=DESCRIPTION, epilog=EPILOG)
    parser.parse_args(argv)
    print("omnilimit demo: both limiters under a thread pool, on simulated calls (about 7 s)\n")
    problems = [run_concurrency(workers=32, calls=400, max_concurrent=8)]
    print()
    problems.append(run_rate(workers=32, calls=80, rpm=1200))
    for problem in problems:
        if problem is not None:
            print(error_line("demo", problem), file=sys.stderr)
    return 1 if any(problems) else 0


if __name__ == "__main__":
    raise SystemExit(main())
