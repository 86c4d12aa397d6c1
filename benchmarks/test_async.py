"""pytest-benchmark view of the asyncio concurrency part of ``omnilimit bench`` (section 8):

    pip install ".[bench]"
    pytest benchmarks/test_async.py --benchmark-group-by=group --benchmark-columns=min,median,ops

Each round runs a batch on one event loop (made once per test): 1,000 tasks started at once
through ``max_concurrent=64``, or one task entering ``async with`` 1,000 times in a row. The
rate part (pacing accuracy, windows, CPU per admission against aiolimiter) is not a per-call
timing and lives in ``omnilimit bench --only asyncio`` only. Nothing here asserts a timing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from omnilimit_bench.suite import ASYNC_CONCURRENCY, ASYNC_MAX_CONCURRENT, ASYNC_WITH, TASKS_ONLY

BATCH = 1000

# the `async with` implementations of the suite, and the tasks alone
MAKERS: dict[str, Callable[[int], Any] | None] = {
    impl: make for impl, call, make in ASYNC_CONCURRENCY if call == ASYNC_WITH or impl == TASKS_ONLY
}


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.mark.parametrize("impl", list(MAKERS))
def test_tasks_through_the_limit(benchmark: Any, loop: asyncio.AbstractEventLoop, impl: str) -> None:
    benchmark.group = f"{BATCH:,} tasks, async with lim: await asyncio.sleep(0), max_concurrent={ASYNC_MAX_CONCURRENT}"
    make = MAKERS[impl]
    lim = None if make is None else make(ASYNC_MAX_CONCURRENT)

    async def task() -> None:
        if lim is None:
            await asyncio.sleep(0)
            return
        async with lim:
            await asyncio.sleep(0)

    async def batch() -> None:
        await asyncio.gather(*[task() for _ in range(BATCH)])

    benchmark(lambda: loop.run_until_complete(batch()))


@pytest.mark.parametrize("impl", [impl for impl in MAKERS if impl != TASKS_ONLY])
def test_uncontended_async_with(benchmark: Any, loop: asyncio.AbstractEventLoop, impl: str) -> None:
    benchmark.group = f"one task, {BATCH:,} x async with lim (never waits)"
    make = MAKERS[impl]
    assert make is not None
    lim = make(ASYNC_MAX_CONCURRENT)

    async def batch() -> None:
        for _ in range(BATCH):
            async with lim:
                pass

    benchmark(lambda: loop.run_until_complete(batch()))
