"""The peers that share one limiter between processes without a server (section 9):
pyrate-limiter's ``MultiprocessBucket`` and ``SQLiteBucket`` with a file lock
(``shared_rate_peers``), opened in each process by ``open_shared``."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple, cast

from .base import INSTALL_HINT, KEY, Skipped, _check_rate, _unavailable, _window

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
