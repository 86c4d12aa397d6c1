"""Coroutines on a Redis limiter: the same limiter over a URL (each round trip of a coroutine in
the loop's default executor) and over a ``redis.asyncio`` client (each awaited on the loop).

    python benchmarks/redis_coroutines.py redis://127.0.0.1:6379/14     # a server of your own

Two workloads, interleaved rounds, the median per form:
- **slots**: 500 tasks share a ``ConcurrencyLimiter(16)``; each ``async with`` holds its slot for
  1 ms (``asyncio.sleep``): the hand-offs per second, and the threads the process ran;
- **turns**: 200 tasks each take a turn of a ``RateLimiter`` no run exhausts (10 million RPM)
  in a loop for the round's seconds (``acquire_async(timeout=10)``): the decisions per second.
Every key the run makes is deleted at the end.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable

import redis
import redis.asyncio

from omnilimit import ConcurrencyLimiter, RateLimiter

SECONDS = 3.0
ROUNDS = 3


async def in_tasks(tasks: int, step: Callable[[], Awaitable[bool]]) -> tuple[float, int]:
    """``tasks`` tasks run ``step`` in a loop for ``SECONDS``: (steps that returned True per
    second, the most threads the process ran meanwhile)."""
    done = 0
    until = time.monotonic() + SECONDS
    peak_threads = threading.active_count()

    async def task() -> None:
        nonlocal done, peak_threads
        while time.monotonic() < until:
            if await step():
                done += 1
            peak_threads = max(peak_threads, threading.active_count())

    started = time.monotonic()
    await asyncio.gather(*(task() for _ in range(tasks)))
    return done / (time.monotonic() - started), peak_threads


async def slots(backend: object, name: str) -> tuple[float, int]:
    limiter = ConcurrencyLimiter(16, name, backend=backend)

    async def hand_off() -> bool:
        async with limiter:
            await asyncio.sleep(0.001)
        return True

    try:
        return await in_tasks(500, hand_off)
    finally:
        limiter.close()


async def turns(backend: object, name: str) -> tuple[float, int]:
    limiter = RateLimiter(10_000_000, provider_name=name, backend=backend, burst_size=1000)
    try:
        return await in_tasks(200, lambda: limiter.acquire_async(timeout=10))
    finally:
        limiter.close()


def one(url: str, form: str, workload: str, round_: int) -> tuple[float, int]:
    async def main() -> tuple[float, int]:
        name = f"bench-coroutines-{workload}-{form}-{round_}"
        if form == "URL (executor)":
            return await WORKLOADS[workload](url, name)
        client = redis.asyncio.Redis.from_url(url, socket_timeout=0.25, socket_connect_timeout=0.25)
        try:
            return await WORKLOADS[workload](client, name)
        finally:
            await client.aclose()

    return asyncio.run(main())


WORKLOADS = {"slots": slots, "turns": turns}
FORMS = ("URL (executor)", "redis.asyncio client")


def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 else "redis://127.0.0.1:6379/14"
    results: dict[tuple[str, str], list[tuple[float, int]]] = {}
    for round_ in range(ROUNDS):
        for workload in WORKLOADS:
            for form in FORMS:
                results.setdefault((workload, form), []).append(one(url, form, workload, round_))
    print(f"{'workload':8} {'form':22} {'per second (median)':>20} {'threads (max)':>14}")
    for (workload, form), runs in results.items():
        rate = statistics.median(r for r, _ in runs)
        print(f"{workload:8} {form:22} {rate:20,.0f} {max(t for _, t in runs):14d}")
    client = redis.Redis.from_url(url)
    for key in client.scan_iter(match="omnilimit:{bench-coroutines-*"):
        client.delete(key)


if __name__ == "__main__":
    main()
