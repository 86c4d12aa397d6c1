"""The peers whose limiter lives in a Redis server (section 10): pyrate-limiter's ``RedisBucket``
and ``StateBucket`` over a ``RedisStateStore``, limits' fixed and moving windows over
``RedisStorage`` (``redis_rate_deciders``)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from functools import partial
from typing import Any, cast

from .base import KEY, RateDecider, Skipped, _check_rate, _unavailable, _window

# --- limiters in Redis (section 10) ------------------------------------------------------------------
#
# ``redis_rate_deciders(per_minute, burst, url)`` returns, as ``rate_deciders`` does, one
# ``RateDecider`` per Redis limiter of the installed peers, each with a client of its own on the
# server at ``url`` and keys of its own (``omnilimit-bench:PID:N:...``); ``close()`` deletes its keys
# and closes its client. Each is configured as its in-memory counterpart (``_window`` for the windows):
#
# * pyrate-limiter: its ``RedisBucket`` (a sliding-window log in a sorted set, one member per
#   admission, checked and added to by a Lua script), and a ``StateBucket`` over a
#   ``RedisStateStore`` with the ``TokenBucket`` algorithm (a GCRA in a hash, by a Lua script: the
#   exact counterpart of omnilimit's), each in a ``Limiter`` asked ``try_acquire(key, 1,
#   blocking=False)``. Without the "Leaker" thread (``SingleBucketFactory(bucket,
#   schedule_leak=False)``): it trims the log every 10 s, a round trip of its own. The ``Limiter``
#   decides under a lock of its own, and ``blocking=False`` does not wait for that lock either:
#   while another thread decides, it refuses at once. Threads deciding together call
#   ``try_acquire(key, 1)`` instead (``decide_in_threads``), which waits for the lock (never for the
#   limit, which these runs never exhaust).
# * limits: ``FixedWindowRateLimiter`` (a counter, INCRBY by a Lua script) and
#   ``MovingWindowRateLimiter`` (a list of timestamps, by a Lua script) over ``RedisStorage``, asked
#   ``hit(item, key)``.
#
# Both libraries stamp a decision with the client's clock; omnilimit's scripts read the server's.

_redis_keys = itertools.count()


def _redis_prefix() -> str:
    """A key prefix no other decider, run or process uses: ``omnilimit-bench:PID:N``."""
    return f"omnilimit-bench:{os.getpid()}:{next(_redis_keys)}"


def _close_pyrate_redis(limiter: Any, bucket: Any, client: Any) -> None:
    """Stop the limiter, delete the bucket's key (``flush``), close the client."""
    limiter.close()
    bucket.flush()
    client.close()


REDIS_LOG = "RedisBucket"
REDIS_TOKEN_BUCKET = "StateBucket, RedisStateStore, TokenBucket"


def _pyrate_redis(per_minute: int, burst: int, url: str) -> list[RateDecider]:
    import pyrate_limiter as pyrate
    import redis

    version = pyrate.__version__
    limit, interval_ms = _window(per_minute, burst, 60_000)
    prefix = _redis_prefix()
    deciders = []
    try:
        for variant in (REDIS_LOG, REDIS_TOKEN_BUCKET):
            client = redis.Redis.from_url(url)
            bucket: Any
            if variant == REDIS_LOG:  # init() loads the script (SCRIPT LOAD) and returns the bucket
                bucket = pyrate.RedisBucket.init([pyrate.Rate(limit, interval_ms)], client, f"{prefix}:log")
            else:
                rates = [pyrate.Rate(per_minute, pyrate.Duration.MINUTE, burst=burst)]
                store = pyrate.RedisStateStore(client, f"{prefix}:state")
                bucket = pyrate.StateBucket(rates, algorithm=pyrate.TokenBucket(), store=store)
            limiter = pyrate.Limiter(pyrate.SingleBucketFactory(bucket, schedule_leak=False))
            deciders.append(
                RateDecider(
                    f"pyrate-limiter {version} ({variant})",
                    cast("Callable[[], bool]", partial(limiter.try_acquire, KEY, 1, False)),
                    partial(_close_pyrate_redis, limiter, bucket, client),
                    "try_acquire(key, 1, blocking=False)",
                    cast("Callable[[], bool]", partial(limiter.try_acquire, KEY, 1)),
                    "try_acquire(key, 1)",
                )
            )
    except BaseException:
        for decider in deciders:
            decider.close()
        raise
    return deciders


def _close_limits_redis(storage: Any, key: str) -> None:
    """Delete the limit's key, close the storage's client."""
    storage.clear(key)
    storage.storage.close()


def _limits_redis(per_minute: int, burst: int, url: str) -> list[RateDecider]:
    import limits
    from limits.storage import RedisStorage
    from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter

    version = limits.__version__
    amount, seconds = _window(per_minute, burst, 60)
    item = limits.RateLimitItemPerSecond(amount, seconds)
    deciders = []
    strategies: tuple[tuple[str, type[FixedWindowRateLimiter | MovingWindowRateLimiter]], ...] = (
        ("fixed window", FixedWindowRateLimiter),
        ("moving window", MovingWindowRateLimiter),
    )
    try:
        for variant, strategy in strategies:
            # One storage each (its own key prefix): the two strategies name the same key for an item.
            storage = RedisStorage(url, key_prefix=_redis_prefix())
            limiter = strategy(storage)
            deciders.append(
                RateDecider(
                    f"limits {version} {variant} (redis)",
                    partial(limiter.hit, item, KEY),
                    partial(_close_limits_redis, storage, item.key_for(KEY)),
                    "hit(item, key)",
                )
            )
    except BaseException:
        for decider in deciders:
            decider.close()
        raise
    return deciders


# (name shown, module imported, builder taking (per_minute, burst, url))
_REDIS_PEERS: tuple[tuple[str, str, Callable[[int, int, str], list[RateDecider]]], ...] = (
    ("pyrate-limiter", "pyrate_limiter", _pyrate_redis),
    ("limits", "limits", _limits_redis),
)


def redis_rate_deciders(per_minute: int, burst: int, url: str) -> tuple[list[RateDecider], list[Skipped]]:
    """Every installed peer's Redis limiter on the server at ``url``, configured as
    ``rate_deciders`` configures the in-memory ones. Peers that cannot be imported go to Skipped,
    with the reason; redis-py itself must be installed (omnilimit's Redis backend needs it too).

    The caller owns the deciders and should ``close()`` each when done: that deletes their keys.
    """
    _check_rate(per_minute, burst)
    deciders: list[RateDecider] = []
    skipped: list[Skipped] = []
    try:
        for name, module, build in _REDIS_PEERS:
            reason = _unavailable(module)
            if reason is None:
                deciders.extend(build(per_minute, burst, url))
            else:
                skipped.append(Skipped(name, reason))
    except BaseException:
        for decider in deciders:
            decider.close()
        raise
    return deciders, skipped
