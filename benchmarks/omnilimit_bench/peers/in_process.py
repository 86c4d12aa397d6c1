"""The peers in one process: pyrate-limiter, limits and token-bucket in memory
(``rate_deciders``), and aiolimiter for asyncio (``async_rate_limiters``)."""

from __future__ import annotations

import importlib
import importlib.metadata
import math
from collections.abc import Callable
from functools import partial
from typing import Any, cast

from .base import KEY, AsyncRatePeer, RateDecider, Skipped, _check_rate, _nothing, _unavailable, _window


def _close_pyrate_log(limiter: Any, bucket: Any) -> None:
    """Stop the Leaker and drop the log: every admission stays in it for a whole window (a minute for
    huge limits), which is what the decider's owner would otherwise keep alive."""
    limiter.close()
    bucket.flush()


def _pyrate_limiter(per_minute: int, burst: int) -> list[RateDecider]:
    import pyrate_limiter as pyrate

    version = pyrate.__version__
    limit, interval_ms = _window(per_minute, burst, 60_000)
    # The default bucket: a log of timestamps, one per admission, searched by bisection. Limiter(bucket)
    # starts the factory's "Leaker" daemon thread, which trims the log every 10 s; without it the log
    # only grows. Limiter.close() stops it, but the thread only sees that after its current 10 s sleep.
    log_bucket = pyrate.InMemoryBucket([pyrate.Rate(limit, interval_ms)])
    log_limiter = pyrate.Limiter(log_bucket)
    # A token bucket (GCRA state, one number) is exactly the configuration asked for. It has nothing
    # to leak, so no Leaker thread is started for it.
    token_bucket = pyrate.StateBucket(
        [pyrate.Rate(per_minute, pyrate.Duration.MINUTE, burst=burst)], algorithm=pyrate.TokenBucket()
    )
    state_limiter = pyrate.Limiter(pyrate.SingleBucketFactory(token_bucket, schedule_leak=False))
    # try_acquire(name, weight, blocking): blocking=False refuses at once instead of sleeping until
    # the bucket has room. It returns a plain bool for these synchronous buckets (an awaitable only
    # for async ones), hence the cast.
    return [
        RateDecider(
            f"pyrate-limiter {version} (InMemoryBucket)",
            cast("Callable[[], bool]", partial(log_limiter.try_acquire, KEY, 1, False)),
            partial(_close_pyrate_log, log_limiter, log_bucket),
            "try_acquire(key, 1, blocking=False)",
        ),
        RateDecider(
            f"pyrate-limiter {version} (StateBucket, TokenBucket)",
            cast("Callable[[], bool]", partial(state_limiter.try_acquire, KEY, 1, False)),
            state_limiter.close,
            "try_acquire(key, 1, blocking=False)",
        ),
    ]


def _close_limits_storage(storage: Any) -> None:
    """limits' MemoryStorage arms a one-shot ``threading.Timer`` (10 ms) to expire entries, re-armed
    by every hit once the last has fired: cancel the pending one and drop the stored entries."""
    storage.timer.cancel()
    storage.reset()


def _limits(per_minute: int, burst: int) -> list[RateDecider]:
    import limits
    from limits.storage import MemoryStorage
    from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter

    version = limits.__version__
    # `amount` per `seconds` seconds (see _window): limits' windows are whole multiples of a second.
    amount, seconds = _window(per_minute, burst, 60)
    item = limits.RateLimitItemPerSecond(amount, seconds)
    deciders = []
    strategies: tuple[tuple[str, type[FixedWindowRateLimiter | MovingWindowRateLimiter]], ...] = (
        ("fixed window", FixedWindowRateLimiter),  # one counter per key; the window opens at the first hit
        ("moving window", MovingWindowRateLimiter),  # one timestamp per admission, kept for a window
    )
    for variant, strategy in strategies:
        storage = MemoryStorage()  # one each, so the two never share a counter
        limiter = strategy(storage)
        deciders.append(
            RateDecider(
                f"limits {version} {variant} (memory)",
                partial(limiter.hit, item, KEY),
                partial(_close_limits_storage, storage),
                "hit(item, key)",
            )
        )
    return deciders


def _token_bucket(per_minute: int, burst: int) -> list[RateDecider]:
    import token_bucket

    # Tokens per second (a float), a capacity of whole tokens; the bucket starts full. No lock: the
    # library accepts that racing threads may overdraw the bucket slightly. No threads either.
    limiter = token_bucket.Limiter(per_minute / 60, burst, token_bucket.MemoryStorage())
    return [
        RateDecider(f"token-bucket {token_bucket.__version__}", partial(limiter.consume, KEY), _nothing, "consume(key)")
    ]


# (name shown, module imported, builder)
_PEERS: tuple[tuple[str, str, Callable[[int, int], list[RateDecider]]], ...] = (
    ("pyrate-limiter", "pyrate_limiter", _pyrate_limiter),
    ("limits", "limits", _limits),
    ("token-bucket", "token_bucket", _token_bucket),
)


def rate_deciders(per_minute: int, burst: int) -> tuple[list[RateDecider], list[Skipped]]:
    """Every installed peer configured as close as the library allows to: at most ``burst``
    decisions admitted at once, refilling at ``per_minute`` per minute. Peers that cannot be
    imported go to Skipped, with the reason.

    The caller owns the deciders and should ``close()`` each when done.
    """
    _check_rate(per_minute, burst)
    deciders: list[RateDecider] = []
    skipped: list[Skipped] = []
    try:
        for name, module, build in _PEERS:
            reason = _unavailable(module)
            if reason is None:
                deciders.extend(build(per_minute, burst))
            else:
                skipped.append(Skipped(name, reason))
    except BaseException:
        for decider in deciders:
            decider.close()
        raise
    return deciders, skipped


def _aiolimiter(per_second: float, burst: int) -> list[AsyncRatePeer]:
    import aiolimiter

    version = importlib.metadata.version("aiolimiter")  # not every release has __version__

    # A leaky bucket of capacity `max_rate` that drains `max_rate` per `time_period` seconds: `burst`
    # per `burst / per_second` s is exactly "`burst` at once, then one per 1 / per_second".
    period = burst / per_second
    return [
        AsyncRatePeer(
            f"aiolimiter {version}",
            partial(aiolimiter.AsyncLimiter, burst, period),
            f"AsyncLimiter({burst}, {burst}/{per_second:g})",
        )
    ]


# (name shown, module imported, builder)
_ASYNC_PEERS: tuple[tuple[str, str, Callable[[float, int], list[AsyncRatePeer]]], ...] = (
    ("aiolimiter", "aiolimiter", _aiolimiter),
)


def async_rate_limiters(per_second: float, burst: int) -> tuple[list[AsyncRatePeer], list[Skipped]]:
    """Every installed asyncio peer configured as close as the library allows to: at most
    ``burst`` admitted at once, then ``per_second`` a second. Peers that cannot be imported go to
    Skipped, with the reason. Nothing to close: they hold no threads."""
    if isinstance(per_second, bool) or not isinstance(per_second, (int, float)) or not 0 < per_second < math.inf:
        raise ValueError(f"per_second must be a number > 0, not {per_second!r}")
    if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
        raise ValueError(f"burst must be a whole number >= 1, not {burst!r}")
    found: list[AsyncRatePeer] = []
    skipped: list[Skipped] = []
    for name, module, build in _ASYNC_PEERS:
        reason = _unavailable(module)
        if reason is None:
            found.extend(build(per_second, burst))
        else:
            skipped.append(Skipped(name, reason))
    return found, skipped
