"""The measurements of ``omnilimit bench``, one function a section, and their index ``SECTIONS``.

Every section measures omnilimit and its peers in the same run, under the same settings, so the
ratios mean something on whatever machine runs them. Each function returns plain dicts (JSON-ready);
``report.py`` prints them and checks the targets.

The sections, by module: ``per_call`` (1, 2, 7: uncontended cost per call), ``threads`` (3 to 6:
contention, rate accuracy, GIL friendliness, wake-up latency), ``event_loop`` (8: asyncio),
``processes`` (9: shared between processes), ``redis_hosts`` (10: Redis); ``settings`` holds what
each is given (``Settings``, ``Impls``).

The implementations compared:
- concurrency: omnilimit's ConcurrencyLimiter, ``_thread.lock`` (the floor for any lock Python can
  see), ``threading.Semaphore`` / ``BoundedSemaphore``, and the reference ConcurrencyLimiter of
  omnigen-usf 0.1.18;
- rate: omnilimit's RateLimiter, the reference RateLimiter, and the third-party limiters of
  ``peers`` (pyrate-limiter, limits, token-bucket);
- asyncio (section 8): omnilimit's ConcurrencyLimiter against ``asyncio.Semaphore`` /
  ``BoundedSemaphore``, and its RateLimiter against aiolimiter's ``AsyncLimiter``;
- shared between processes (section 9): omnilimit's limiters with ``backend="shm://NAME"`` against
  the same in-process, and against pyrate-limiter's ``MultiprocessBucket`` and ``SQLiteBucket`` with
  a file lock;
- shared through a Redis server (section 10, when one is given): omnilimit's limiters with
  ``backend="redis://..."`` against pyrate-limiter's ``RedisBucket`` and ``StateBucket`` over a
  ``RedisStateStore``, limits' windows over ``RedisStorage``, and redis-py's PING.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .event_loop import ASYNC_CONCURRENCY, ASYNC_MAX_CONCURRENT, ASYNC_WITH, NO_TIMEOUT, TASKS_ONLY, asyncio_tasks
from .per_call import manager_path, rate_decision, uncontended
from .processes import (
    CONCURRENCY_PAIR,
    IN_PROCESS,
    OWN_LIMITERS,
    RATE_DECISION,
    SHARED_BURST,
    SHARED_RATE_PER_S,
    SHM,
    TOKEN_DECISION,
    shared_processes,
)
from .redis_hosts import NO_LIMITER, REDIS_ENV_VAR, ROUND_TRIP, redis_across_hosts, redis_problem
from .settings import HUGE, SETTINGS, Impls, Settings
from .threads import contention, gil_friendliness, most_in_window, rate_accuracy, wakeup_latency

__all__ = [
    "ASYNC_CONCURRENCY",
    "ASYNC_MAX_CONCURRENT",
    "ASYNC_WITH",
    "CONCURRENCY_PAIR",
    "HUGE",
    "IN_PROCESS",
    "NO_LIMITER",
    "NO_TIMEOUT",
    "OWN_LIMITERS",
    "RATE_DECISION",
    "REDIS_ENV_VAR",
    "ROUND_TRIP",
    "SECTIONS",
    "SETTINGS",
    "SHARED_BURST",
    "SHARED_RATE_PER_S",
    "SHM",
    "TASKS_ONLY",
    "TOKEN_DECISION",
    "Impls",
    "Settings",
    "most_in_window",
    "redis_problem",
]

SECTIONS: dict[str, Callable[[Impls, Settings], list[dict[str, Any]]]] = {
    "uncontended": uncontended,
    "rate_decision": rate_decision,
    "manager": manager_path,
    "contention": contention,
    "rate_accuracy": rate_accuracy,
    "gil": gil_friendliness,
    "wakeup": wakeup_latency,
    "asyncio": asyncio_tasks,
    "shared": shared_processes,
    "redis": redis_across_hosts,
}
