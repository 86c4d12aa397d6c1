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
file lock; ``open_shared(handle)`` opens one in any process (see the section below).

``redis_rate_deciders(per_minute, burst, url)`` returns the peers' limiters whose state lives in a
Redis server (section 10): pyrate-limiter's ``RedisBucket`` and ``StateBucket`` over a
``RedisStateStore``, limits' fixed and moving windows over ``RedisStorage`` (see the section below).

Window limiters cannot express a token bucket: they admit ``amount`` per window. The window is
chosen so that ``amount == burst`` and ``amount / window == per_minute / 60 s`` where the library's
time unit allows it (see ``_window``).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import itertools
import math
import os
from contextlib import AbstractAsyncContextManager
from functools import partial
from typing import Any, Callable, NamedTuple, cast

EXTRA = "bench"  # the optional extra that installs the peers: pip install "omnilimit[bench]"
INSTALL_HINT = f"pip install 'omnilimit[{EXTRA}]'"
KEY = "bench"  # the one key every decision is made on


class Skipped(NamedTuple):
    """A peer that could not be built: ``name`` as in ``RateDecider.name`` without the version."""

    name: str  # e.g. "pyrate-limiter"
    reason: str  # e.g. "not installed; pip install 'omnilimit[bench]'" or the import error text


class RateDecider(NamedTuple):
    """One peer, configured; ``decide()`` admits (True) or refuses (False) one request at once."""

    name: str  # the library with its version and, where it has several, the variant
    decide: Callable[[], bool]  # one non-blocking admission decision on one key
    close: Callable[[], None]  # frees background threads and memory (a no-op where there are none)
    call: str = "decide()"  # the library call that decide() makes, for the report
    # decide() for threads deciding on the same limiter at once, where decide() would refuse rather
    # than wait for another thread's decision to finish (pyrate-limiter's lock); None: decide() itself
    decide_in_threads: Callable[[], bool] | None = None
    call_in_threads: str = ""  # the library call that decide_in_threads() makes


class AsyncRatePeer(NamedTuple):
    """One asyncio peer, configured: ``make()`` builds a fresh limiter (one per event loop: these
    libraries bind to the loop that first uses them), to be used as ``async with limiter:``."""

    name: str  # the library with its version
    make: Callable[[], AbstractAsyncContextManager[Any]]
    config: str  # how it was built, for the report


def _nothing() -> None:
    """``close`` of a peer that holds no threads."""


def _round(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded half up, in integers (exact for any size)."""
    return (2 * numerator + denominator) // (2 * denominator)


def _window(per_minute: int, burst: int, units_per_minute: int) -> tuple[int, int]:
    """``(amount, window)``: admit ``amount`` per ``window`` time units, for a window limiter whose
    unit is ``1 / units_per_minute`` minute (60 for seconds, 60_000 for milliseconds).

    A window limiter is not a token bucket: it admits ``amount`` at once and then nothing until the
    window (fixed) or the oldest admission (moving) is ``window`` old. The closest it comes to
    "``burst`` at once, refilling at ``per_minute`` per minute" is ``amount = burst`` over a window of
    ``burst / per_minute`` minutes: the same burst and the same long-run rate, but the refill comes
    in one step per window rather than one request at a time. The window has to be a whole number of
    units, so it is rounded (at least 1 unit) and ``amount`` is then recomputed from the rate: it
    stays ``burst`` whenever the window comes out whole, and is otherwise off from ``burst`` by at
    most half a unit's refill. When a window of ``burst`` is shorter than half a unit (e.g. more than
    ``2 * burst`` per second for limits), the window is one unit and ``amount`` one unit of traffic,
    more than ``burst``: the rate is kept rather than the burst.
    """
    window = max(1, _round(burst * units_per_minute, per_minute))
    amount = max(1, _round(per_minute * window, units_per_minute))
    return amount, window


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


def _unavailable(module: str) -> str | None:
    """Why ``module`` cannot be imported, or None if it can."""
    try:
        importlib.import_module(module)
    except ImportError as exc:
        if exc.name == module:
            return f"not installed; {INSTALL_HINT}"
        return f"cannot import {module} ({type(exc).__name__}: {exc}); {INSTALL_HINT}"
    except Exception as exc:  # e.g. a release that does not run on this Python
        return f"cannot import {module} ({type(exc).__name__}: {exc})"
    return None


def _check_rate(per_minute: object, burst: object) -> None:
    """ValueError unless both are whole numbers >= 1."""
    if isinstance(per_minute, bool) or not isinstance(per_minute, int) or per_minute < 1:
        raise ValueError(f"per_minute must be a whole number >= 1, not {per_minute!r}")
    if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
        raise ValueError(f"burst must be a whole number >= 1, not {burst!r}")


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


# --- limiters shared between processes (section 9) --------------------------------------------------
#
# ``shared_rate_peers(per_minute, burst)`` returns the peers whose limiter several processes can
# share without a server, each as a ``SharedRatePeer``: its ``handle`` goes to every process (as a
# ``multiprocessing.Process`` argument: it may hold a multiprocessing lock, which travels no other
# way), where ``open_shared(handle)`` builds the library's limiter on it. Only pyrate-limiter has
# such limiters:
#
# * ``MultiprocessBucket``: a sliding-window log in a ``multiprocessing.Manager`` list (a server
#   process; every read or write of the list is a round trip to it), under a multiprocessing
#   ``RLock``;
# * ``SQLiteBucket`` with ``use_file_lock=True``: the log in an SQLite file (WAL), each decision under
#   a ``filelock.FileLock`` (the library's way to share it between processes; without the file lock
#   it is a one-process bucket).
#
# Both are window logs, configured by ``_window`` as the in-process peers are. limits keeps its
# counters in memory (one process) or in a server (Redis, Memcached, MongoDB): it is listed as
# skipped. RedisBucket and PostgresBucket of pyrate-limiter need a server too.


class SharedTaker(NamedTuple):
    """A peer's limiter opened in one process."""

    decide: Callable[[], bool]  # one decision that never waits while the limit is not exhausted
    take: Callable[[float], bool]  # waits up to `timeout` seconds for an admission
    close: Callable[[], None]
    call: str  # the library call that decide() makes, for the report


class SharedRatePeer(NamedTuple):
    """A peer's limiter shared between processes: pass ``handle`` to each process and call
    ``open_shared(handle)`` there (the creating process may open it too); ``close()`` when every
    process is done."""

    name: str  # the library with its version and the bucket
    shared_through: str  # what the processes share, for the report
    config: str  # how it was built, for the report
    handle: Any
    close: Callable[[], None]
    helper_pids: tuple[int, ...] = ()  # the library's own processes, which work for every decision


class _PyrateHandle(NamedTuple):
    """What a process needs to open a shared pyrate-limiter bucket (picklable)."""

    kind: str  # "multiprocess" or "sqlite"
    limit: int
    interval_ms: int
    bucket: Any = None  # the MultiprocessBucket (its list proxy and lock go to each process)
    db_path: str = ""  # the SQLite file


MULTIPROCESS = "multiprocess"
SQLITE = "sqlite"


def open_shared(handle: Any) -> SharedTaker:
    """Opens a ``SharedRatePeer.handle`` in this process: one ``Limiter`` over the shared bucket.

    The bucket comes in a ``SingleBucketFactory`` without the "Leaker" thread, which trims the log
    every 10 s (no run here lasts that long). ``Limiter(bucket)``, the documented form, starts it,
    and while it trims a MultiprocessBucket it holds the bucket's lock for one round trip to the
    Manager per list operation; a ``blocking=False`` decision meanwhile is refused. The bucket takes
    its lock for each decision either way (``MultiprocessBucket.put``, ``SQLiteBucket.put``), so the
    processes share one budget."""
    if not isinstance(handle, _PyrateHandle):
        raise TypeError(f"not a shared peer's handle: {handle!r}")
    import pyrate_limiter as pyrate

    if handle.kind == MULTIPROCESS:
        bucket = handle.bucket
        call = "try_acquire(key, 1, blocking=False)"
        decide_args: tuple[Any, ...] = (KEY, 1, False)
    else:
        rates = [pyrate.Rate(handle.limit, handle.interval_ms)]
        # The same file in every process; the table is created once (IF NOT EXISTS), under the lock.
        bucket = pyrate.SQLiteBucket.init_from_file(rates, db_path=handle.db_path, use_file_lock=True)
        # blocking=False cannot be asked with a file lock: pyrate-limiter 4.5 passes it on as
        # FileLock.acquire(False), which filelock takes for its timeout (4.3 rejects a bool there).
        # A wait of at most 0 s is the same decision: the lock is tried once, a refusal is not waited out.
        call = "try_acquire(key, 1, timeout=0)"
        decide_args = (KEY, 1, True, 0)
    limiter = pyrate.Limiter(pyrate.SingleBucketFactory(bucket, schedule_leak=False))

    def take(timeout: float) -> bool:
        return bool(limiter.try_acquire(KEY, 1, True, timeout))

    # try_acquire returns a plain bool for these synchronous buckets (an awaitable only for async ones)
    decide = cast("Callable[[], bool]", partial(limiter.try_acquire, *decide_args))
    return SharedTaker(decide, take, limiter.close, call)


def _pyrate_shared(per_minute: int, burst: int, context: Any) -> tuple[list[SharedRatePeer], list[Skipped]]:
    import shutil
    import tempfile

    import pyrate_limiter as pyrate

    version = pyrate.__version__
    limit, interval_ms = _window(per_minute, burst, 60_000)
    config = f"Rate({limit}, {interval_ms} ms)"
    manager = context.Manager()  # a server process holding the list; shut down by close()
    try:
        bucket = pyrate.MultiprocessBucket([pyrate.Rate(limit, interval_ms)], manager.list(), context.RLock())
    except BaseException:
        manager.shutdown()
        raise
    found = [
        SharedRatePeer(
            f"pyrate-limiter {version} (MultiprocessBucket)",
            "Manager list + multiprocessing RLock",
            config,
            _PyrateHandle(MULTIPROCESS, limit, interval_ms, bucket=bucket),
            manager.shutdown,
            (manager._process.pid,),
        )
    ]
    reason = _unavailable("filelock")
    if reason is not None:
        return found, [Skipped(SQLITE_NAME, reason.replace(INSTALL_HINT, "pip install filelock"))]
    try:
        folder = tempfile.mkdtemp(prefix="omnilimit-bench-")
    except BaseException:
        manager.shutdown()
        raise
    found.append(
        SharedRatePeer(
            f"pyrate-limiter {version} (SQLiteBucket, file lock)",
            "SQLite file (WAL) + FileLock",
            config,
            _PyrateHandle(SQLITE, limit, interval_ms, db_path=os.path.join(folder, "bucket.sqlite")),
            partial(shutil.rmtree, folder, ignore_errors=True),
        )
    )
    return found, []


SQLITE_NAME = "pyrate-limiter (SQLiteBucket, file lock)"
LIMITS_SHARED = "limits (shared between processes)"
NO_SHARED_STORAGE = (
    "no storage shared between processes without a server (MemoryStorage is per process; Redis, Memcached and"
    " MongoDB are servers)"
)


def shared_rate_peers(per_minute: int, burst: int, context: Any = None) -> tuple[list[SharedRatePeer], list[Skipped]]:
    """Every installed peer that can share one limiter between processes without a server,
    configured as ``rate_deciders`` configures it; `context` is the multiprocessing context the
    processes will be started with (its locks and Manager are used), the default one if None.
    The rest go to Skipped, with the reason. The caller owns the peers and must ``close()`` each."""
    import multiprocessing

    _check_rate(per_minute, burst)
    context = context or multiprocessing.get_context()
    found: list[SharedRatePeer] = []
    skipped: list[Skipped] = []
    reason = _unavailable("pyrate_limiter")
    if reason is None:
        found, skipped = _pyrate_shared(per_minute, burst, context)
    else:
        skipped.append(Skipped("pyrate-limiter", reason))
    if _unavailable("limits") is None:
        skipped.append(Skipped(LIMITS_SHARED, NO_SHARED_STORAGE))
    return found, skipped


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
