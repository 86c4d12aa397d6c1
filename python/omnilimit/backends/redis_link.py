"""One limiter's link to Redis: the client, the scripts, and what happens while Redis is away.

``rate_limit_backend: redis://host:port/db`` (``rediss://`` for TLS, ``redis+cluster://`` /
``rediss+cluster://`` for a Redis Cluster), or a ``redis.Redis`` / ``redis.cluster.RedisCluster``
client object, names the server. redis-py is the optional extra ``omnilimit[redis]``.

**Outages.** A call that cannot reach Redis (refused, reset, timed out, a cluster without a
master, a server still loading) opens an *outage*: one warning names it, and for the next
``RETRY_S`` nobody tries Redis again (so a dead server costs a caller nothing); then one caller
probes, and the first call that succeeds closes the outage with one info line (how long it
lasted). What a limiter does meanwhile is its policy, ``rate_limit_on_backend_error``:

- ``closed`` (default): callers wait for Redis up to their timeout, then are denied
  (``acquire()`` returns False). Nothing goes past the shared limit, at the price of stalling.
- ``open``: callers go at once, unlimited. For a limit that is a courtesy, not a contract.
- ``local``: callers are limited by an in-process limiter at ``rate_limit_local_fraction`` of the
  limit (1/number of hosts keeps the sum within the limit).

Any other Redis error (a script error, a wrong password, a key of another type) is raised: it is
a bug or a misconfiguration, and no policy hides it.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from omnilimit._log import logger
from omnilimit._shown import redact, shown
from omnilimit.backends import redis_lua
from omnilimit.spec import _is_client, check_url

RETRY_S = 0.5  # during an outage, the time between two probes of Redis
IDLE_TTL_S = 24 * 3600  # a limiter's keys expire after this long without a write
# For clients made from a URL. A round trip on loopback or a LAN takes well under a millisecond; a
# server that takes longer than this is hung (stopped, swapping, a long script): the call counts as
# an outage, and the policy answers the callers until a probe gets through.
CONNECT_TIMEOUT_S = 0.25
SOCKET_TIMEOUT_S = 0.25


class BackendDown(Exception):
    """Redis is unreachable (an outage is open); the limiter applies its policy."""


def _import_redis() -> Any:
    try:
        import redis
    except ImportError:
        raise ImportError(
            "a Redis backend needs redis-py: pip install 'omnilimit[redis]' (or pip install redis)"
        ) from None
    return redis


def client_for(backend: object) -> tuple[Any, str]:
    """(a redis-py client, a description without secrets) for a URL or a client object."""
    if not isinstance(backend, str):
        if not _is_client(backend):
            raise TypeError(
                f"backend must be a URL or a redis-py client (redis.Redis, RedisCluster), got {shown(backend)}"
            )
        if type(backend).__module__.startswith("redis.asyncio"):
            raise TypeError(
                "backend must be a synchronous redis-py client (redis.Redis or RedisCluster), not redis.asyncio"
            )
        return backend, f"a {type(backend).__name__} client"
    redis = _import_redis()
    url = check_url(backend)
    options: dict[str, Any] = {
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "socket_timeout": SOCKET_TIMEOUT_S,
        # One immediate retry on a fresh connection (a pooled connection the server closed, as on a
        # restart), not after a timeout (a hung server would cost a caller twice): an outage then
        # fails fast and the limiter's policy takes over.
        "retry": redis.retry.Retry(redis.backoff.NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,)),
    }
    if "+cluster://" in url:
        from redis.cluster import RedisCluster

        plain = url.replace("+cluster://", "://", 1)
        return RedisCluster.from_url(plain, **options), redact(url)
    return redis.Redis.from_url(url, **options), redact(url)


def unreachable_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "Redis is not there" (an outage), as opposed to a bug."""
    redis = _import_redis()
    errors: list[type[BaseException]] = [
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        redis.exceptions.BusyLoadingError,
        redis.exceptions.ClusterDownError,
        redis.exceptions.TryAgainError,
        redis.exceptions.MasterDownError,
        ConnectionError,
        TimeoutError,
    ]
    return tuple(errors)


_links: weakref.WeakSet[RedisLink] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for link in list(_links):
        link._lock = threading.Lock()  # a thread of the parent may have held it at the fork


os.register_at_fork(after_in_child=_after_fork_in_child)


class RedisLink:
    """The scripts of one limiter on one Redis, with its outage state. Thread-safe."""

    def __init__(self, backend: object, what: str) -> None:
        self.client, self.where = client_for(backend)
        self._what = what  # "rate limiter 'openai'", for the logs
        self._scripts = {
            name: self.client.register_script(getattr(redis_lua, name))
            for name in dir(redis_lua)
            if name.isupper() and not name.startswith("_")
        }
        self._unreachable = unreachable_errors()
        self._lock = threading.Lock()
        self._down_since: float | None = None  # time.monotonic() when the outage began
        self._retry_at = 0.0
        self._last_error = ""
        self.outages = 0
        self.on_recovery: list[Any] = []  # callables run (outside the lock) when an outage closes
        _links.add(self)

    @property
    def down(self) -> bool:
        """Whether an outage is open."""
        return self._down_since is not None

    @property
    def last_error(self) -> str:
        return self._last_error

    def retry_in(self) -> float:
        """Seconds until the next probe of Redis may run (0.0 when up or due)."""
        with self._lock:
            if self._down_since is None:
                return 0.0
            return max(0.0, self._retry_at - time.monotonic())

    def run(self, script: str, keys: list[str], args: list[Any]) -> Any:
        """Runs one script (one round trip). Raises BackendDown while an outage is open and it is
        not this caller's turn to probe, or when the attempt fails to reach Redis."""
        if self._down_since is not None:
            with self._lock:
                now = time.monotonic()
                if self._down_since is not None:
                    if now < self._retry_at:
                        raise BackendDown(self._last_error)
                    self._retry_at = now + RETRY_S  # this caller probes; the others wait for the next turn
        try:
            result = self._scripts[script](keys=keys, args=args)
        except self._unreachable as error:
            self._note_down(error)
            raise BackendDown(self._last_error) from error
        if self._down_since is not None:
            self._note_up()
        return result

    def _note_down(self, error: BaseException) -> None:
        with self._lock:
            self._last_error = f"{type(error).__name__}: {error}"
            self._retry_at = time.monotonic() + RETRY_S
            if self._down_since is not None:
                return
            self._down_since = time.monotonic()
            self.outages += 1
        logger.warning(
            "%s: Redis at %s is unreachable (%s); applying the backend-error policy until it returns",
            self._what,
            self.where,
            self._last_error,
        )

    def _note_up(self) -> None:
        with self._lock:
            if self._down_since is None:
                return
            lasted = time.monotonic() - self._down_since
            self._down_since = None
        logger.info("%s: Redis at %s is back after %.1f s", self._what, self.where, lasted)
        for callback in list(self.on_recovery):
            callback()

    def unreachable(self, error: BaseException) -> BackendDown:
        """For a caller that met an unreachable error outside ``run`` (the subscriber thread)."""
        self._note_down(error)
        return BackendDown(self._last_error)

    @property
    def unreachable_types(self) -> tuple[type[BaseException], ...]:
        return self._unreachable


class OneRead:
    """The shared state read at most once per ``metrics()`` call in a thread: inside ``held()``,
    every ``get()`` of this thread returns the one read made on entry, so the numbers a metrics
    dictionary gathers from many properties come from one round trip and agree. Elsewhere each
    ``get()`` reads afresh."""

    __slots__ = ("_local", "_read")

    def __init__(self, read: Callable[[], list[Any] | None]) -> None:
        self._read = read
        self._local = threading.local()

    def get(self) -> list[Any] | None:
        held: tuple[list[Any] | None] | None = getattr(self._local, "held", None)
        return self._read() if held is None else held[0]

    @contextlib.contextmanager
    def held(self) -> Iterator[list[Any] | None]:
        outer: tuple[list[Any] | None] | None = getattr(self._local, "held", None)
        if outer is not None:  # inside another held(): its read stands
            yield outer[0]
            return
        state = self._read()
        self._local.held = (state,)
        try:
            yield state
        finally:
            del self._local.held


def keys_for(kind: str, name: str) -> list[str]:
    """The keys of one limiter, hash-tagged by name (one Cluster slot): ``kind`` is ``rate`` (bucket
    and counters, window), ``tokens`` (a rate limiter with a token budget: those two, then line,
    heartbeats, claims, window of tokens) or ``sem`` (leases, config and counters, window, line,
    heartbeats)."""
    tag = f"omnilimit:{{{name}}}:{kind}"
    if kind == "rate":
        return [f"{tag}:bucket", f"{tag}:window"]
    if kind == "tokens":  # the rate limiter's keys, and its line of waiters and window of tokens
        rate = f"omnilimit:{{{name}}}:rate"
        return [f"{rate}:{key}" for key in ("bucket", "window", "line", "heartbeats", "claims", "tokens")]
    return [f"{tag}:leases", f"{tag}:state", f"{tag}:window", f"{tag}:line", f"{tag}:heartbeats"]


def channel_for(name: str, kind: str = "sem") -> str:
    """The pub/sub channel of a limiter: a concurrency limiter's (``sem``) scripts publish there
    the ids of the waiters that may go; a rate limiter's (``rate``), that its budget changed in a
    way that may bring a turn closer (a refund, a new configuration)."""
    return f"omnilimit:{{{name}}}:sem:go" if kind == "sem" else f"omnilimit:{{{name}}}:rate:changed"
