"""Third-party rate limiters ("peers") that the benchmark suite compares omnilimit against.

``rate_deciders(per_minute, burst)`` returns one ``RateDecider`` per installed peer: ``decide()`` is
one non-blocking admission decision on one fixed key, made the cheapest correct way the library
offers in memory, in one process; ``close()`` frees the library's threads, if it has any. A peer that
is not installed is reported as ``Skipped`` instead. The peers come with the ``bench`` extra
(``pip install 'omnilimit[bench]'``) and are only imported when ``rate_deciders`` runs:

* pyrate-limiter 4.x: a ``Limiter`` over an ``InMemoryBucket`` (a sliding-window log, the library's
  default) and a ``Limiter`` over a ``StateBucket`` with the ``TokenBucket`` algorithm (the exact
  counterpart of omnilimit's GCRA), both asked ``try_acquire(key, 1, blocking=False)``.
* limits: ``FixedWindowRateLimiter`` and ``MovingWindowRateLimiter`` over ``MemoryStorage``, asked
  ``hit(item, key)``.
* token-bucket: ``Limiter(per_minute / 60, burst, MemoryStorage())``, asked ``consume(key)``.

``async_rate_limiters(per_second, burst)`` does the same for the asyncio peers, which are used as
``async with limiter:`` by the tasks of the asyncio section:

* aiolimiter: ``AsyncLimiter(burst, burst / per_second)``, a leaky bucket of capacity ``burst``
  draining at ``per_second``: ``burst`` at once on an empty bucket, then one per ``1 / per_second``.

``shared_rate_peers(per_minute, burst)`` returns the peers that share one limiter between processes
without a server (section 9): pyrate-limiter's ``MultiprocessBucket`` and ``SQLiteBucket`` with a
file lock; ``open_shared(handle)`` opens one in any process (see ``shared``).

``redis_rate_deciders(per_minute, burst, url)`` returns the peers' limiters whose state lives in a
Redis server (section 10): pyrate-limiter's ``RedisBucket`` and ``StateBucket`` over a
``RedisStateStore``, limits' fixed and moving windows over ``RedisStorage`` (see ``in_redis``).

Window limiters cannot express a token bucket: they admit ``amount`` per window. The window is
chosen so that ``amount == burst`` and ``amount / window == per_minute / 60 s`` where the library's
time unit allows it (see ``base._window``).

By module: ``base`` (what they share), ``in_process`` (in memory, and asyncio), ``shared`` (between
processes), ``in_redis`` (in Redis); this package's namespace holds what the suite uses.
"""

from __future__ import annotations

from .base import EXTRA, INSTALL_HINT, KEY, AsyncRatePeer, RateDecider, Skipped
from .in_process import async_rate_limiters, rate_deciders
from .in_redis import REDIS_LOG, REDIS_TOKEN_BUCKET, redis_rate_deciders
from .shared import (
    LIMITS_SHARED,
    MULTIPROCESS,
    NO_SHARED_STORAGE,
    SQLITE,
    SQLITE_NAME,
    SharedRatePeer,
    SharedTaker,
    open_shared,
    shared_rate_peers,
)

__all__ = [
    "EXTRA",
    "INSTALL_HINT",
    "KEY",
    "LIMITS_SHARED",
    "MULTIPROCESS",
    "NO_SHARED_STORAGE",
    "REDIS_LOG",
    "REDIS_TOKEN_BUCKET",
    "SQLITE",
    "SQLITE_NAME",
    "AsyncRatePeer",
    "RateDecider",
    "SharedRatePeer",
    "SharedTaker",
    "Skipped",
    "async_rate_limiters",
    "open_shared",
    "rate_deciders",
    "redis_rate_deciders",
    "shared_rate_peers",
]
