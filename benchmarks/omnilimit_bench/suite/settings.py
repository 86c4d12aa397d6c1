"""What every section of the suite is given: ``Settings`` (how long each runs: ``SETTINGS``, short,
full or smoke) and ``Impls`` (the reference module when found, the peers installed, the Redis
server given), and ``HUGE``, a limit no run can exhaust."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any

import omnilimit

HUGE = 10**12  # a rate and a burst no run can exhaust: the decision is measured, never a wait


@dataclass(frozen=True)
class Settings:
    """How long each section runs. ``short`` is the default of ``omnilimit bench`` (about 35 s on a
    2-core machine); ``full`` produced benchmarks/README.md."""

    name: str
    micro_repeat: int  # timeit repeats per case (the minimum is reported, with the median)
    micro_repeat_s: float  # seconds per repeat
    threads: tuple[int, ...]  # contention: thread counts
    trials: int  # contention: trials per thread count
    warmup_s: float  # contention: time before counting starts (threads start and the queue forms)
    measure_s: float  # contention: counted time per trial
    accuracy_s: float  # rate accuracy: seconds per run
    gil_idle_s: float  # GIL section: seconds counting context switches while everyone waits
    wake_rounds: int  # wake-up latency: hand-overs measured per implementation
    gil_rounds: int  # GIL section: rounds (alone / beside the waiters) per implementation
    async_tasks: int  # asyncio section: tasks per run
    async_trials: int  # asyncio concurrency: trials per implementation (the median is reported)
    async_rate_runs: int  # asyncio rate: runs per limiter and burst
    async_window_s: float  # asyncio rate: the window in which the most admissions are counted
    async_sustained_s: float  # asyncio rate: seconds of the sustained run (every task acquiring in a loop)
    shared_processes: int  # shared section: processes taking from one limiter
    shared_seconds: float  # shared section: seconds per multi-process run
    shared_runs: int  # shared section: runs per limiter (the worst error and windows are reported)
    redis_counted: int  # Redis section: decisions whose round trips and server commands are counted
    redis_threads: int  # Redis section: threads sharing each limiter in the multi-thread run
    redis_trials: int  # Redis section: multi-thread trials per limiter (interleaved; the median is reported)
    redis_seconds: float  # Redis section: counted seconds per multi-thread trial (after `warmup_s`)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


SETTINGS = {
    "short": Settings(
        "short",
        3,
        0.05,
        (8, 64, 256),
        2,
        0.3,
        0.4,
        2.0,
        0.5,
        200,
        9,
        10_000,
        3,
        1,
        1.0,
        3.0,
        4,
        1.5,
        1,
        1000,
        8,
        1,
        0.5,
    ),
    "full": Settings(
        "full",
        7,
        0.3,
        (8, 64, 256),
        3,
        1.0,
        2.0,
        5.0,
        2.0,
        1000,
        31,
        10_000,
        7,
        3,
        1.0,
        10.0,
        4,
        2.0,
        3,
        5000,
        8,
        3,
        1.0,
    ),
    # For the tests of the suite itself: every code path, as fast as possible. Figures meaningless.
    "smoke": Settings(
        "smoke", 1, 0.002, (4,), 1, 0.05, 0.05, 0.3, 0.05, 5, 1, 300, 1, 1, 0.01, 0.3, 2, 0.2, 1, 20, 2, 1, 0.02
    ),
}


@dataclass
class Impls:
    """What this run can compare: the reference module when found, the peers that are installed,
    the Redis server given."""

    reference: ModuleType | None
    reference_origin: str  # where the reference came from, or why it is missing
    skipped: list[dict[str, str]]
    redis_url: str | None = None  # the server of section 10 (``omnilimit bench --redis URL``)

    def concurrency(self) -> dict[str, Callable[[int], Any]]:
        makers: dict[str, Callable[[int], Any]] = {
            "omnilimit": lambda n: omnilimit.ConcurrencyLimiter(n, name="bench"),
            "threading.Semaphore": threading.Semaphore,
            "threading.BoundedSemaphore": threading.BoundedSemaphore,
        }
        if self.reference is not None:
            ref = self.reference
            makers["reference"] = lambda n: ref.ConcurrencyLimiter(n, name="bench")
        return makers

    def rate(self) -> dict[str, Callable[[float, int], Any]]:
        """RateLimiter makers taking (requests per minute, burst)."""
        makers: dict[str, Callable[[float, int], Any]] = {
            "omnilimit": lambda rpm, burst: omnilimit.RateLimiter(rpm, burst_size=burst, provider_name="bench"),
        }
        if self.reference is not None:
            ref = self.reference
            makers["reference"] = lambda rpm, burst: ref.RateLimiter(int(rpm), burst, provider_name="bench")
        return makers
