"""One limiter's link to Redis: the client, the scripts, and what happens while Redis is away.

``rate_limit_backend: redis://host:port/db`` (``rediss://`` for TLS, ``redis+cluster://`` /
``rediss+cluster://`` for a Redis Cluster), or a ``redis.Redis`` / ``redis.cluster.RedisCluster``
client object (``redis.asyncio`` ones too: ``redis_clients``), names the server. redis-py is the
optional extra ``omnilimit[redis]``. Each operation on Redis is written once (an ``Op``) and run
in a thread (``drive``) or awaited on a coroutine's loop (``drive_async``, with an asyncio client).

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

import asyncio
import collections
import concurrent.futures
import contextlib
import os
import threading
import time
import weakref
from collections.abc import Callable, Generator, Iterator
from typing import Any, NamedTuple, TypeVar

from omnilimit._log import logger
from omnilimit.backends import redis_lua
from omnilimit.backends.redis_clients import clients_for, import_redis

RETRY_S = 0.5  # during an outage, the time between two probes of Redis
IN_FLIGHT = 8  # with a redis.asyncio client: the most round trips of one loop at once, per limiter
IDLE_TTL_S = 24 * 3600  # a limiter's keys expire after this long without a write

T = TypeVar("T")


class BackendDown(Exception):
    """Redis is unreachable (an outage is open); the limiter applies its policy."""


class Call(NamedTuple):
    """One script to run: what an operation (``Op``) yields, to receive the script's reply."""

    script: str
    keys: list[str]
    args: list[Any]


# An operation on Redis, written once for threads and coroutines: a generator that yields the
# ``Call`` of each round trip and receives its reply (or has BackendDown thrown in), and returns
# its result. ``RedisLink.drive`` runs one in the calling thread, ``drive_async`` on the loop.
Op = Generator[Call, Any, T]


def unreachable_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "Redis is not there" (an outage), as opposed to a bug."""
    redis = import_redis()
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
        self.client, self.async_client, self.where = clients_for(backend)
        self._what = what  # "rate limiter 'openai'", for the logs
        names = [name for name in dir(redis_lua) if name.isupper() and not name.startswith("_")]
        self._scripts = {name: self.client.register_script(getattr(redis_lua, name)) for name in names}
        self._async_scripts = (
            {}
            if self.async_client is None
            else {name: self.async_client.register_script(getattr(redis_lua, name)) for name in names}
        )
        self._unreachable = unreachable_errors()
        self._gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Gate] = weakref.WeakKeyDictionary()
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
        with self._reaching():
            return self._scripts[script](keys=keys, args=args)

    async def run_async(self, script: str, keys: list[str], args: list[Any]) -> Any:
        """``run`` on the ``redis.asyncio`` client, awaited on the loop: at most ``IN_FLIGHT`` of a
        loop's round trips at once on this link (each takes a connection of the client's pool:
        hundreds of waiting coroutines would exhaust it), the others wait their turn in order."""
        loop = asyncio.get_running_loop()
        gate = self._gates.get(loop)
        if gate is None:
            gate = self._gates[loop] = Gate(IN_FLIGHT)
        with self._reaching():
            async with gate:
                return await self._async_scripts[script](keys=keys, args=args)

    @contextlib.contextmanager
    def _reaching(self) -> Iterator[None]:
        """Around one round trip: raises BackendDown while an outage is open (unless it is this
        caller's turn to probe), or when the round trip fails to reach Redis; closes an outage
        when it succeeds."""
        if self._down_since is not None:
            with self._lock:
                now = time.monotonic()
                if self._down_since is not None:
                    if now < self._retry_at:
                        raise BackendDown(self._last_error)
                    self._retry_at = now + RETRY_S  # this caller probes; the others wait for the next turn
        try:
            yield
        except self._unreachable as error:
            self._note_down(error)
            raise BackendDown(self._last_error) from error
        if self._down_since is not None:
            self._note_up()

    def drive(self, op: Op[T]) -> T:
        """Runs an operation in the calling thread, one round trip per ``Call`` it yields."""
        try:
            call = next(op)
            while True:
                try:
                    reply = self.run(*call)
                except BackendDown as error:
                    call = op.throw(error)
                else:
                    call = op.send(reply)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    async def drive_async(self, op: Op[T]) -> T:
        """``drive`` on the loop: each round trip awaited on the ``redis.asyncio`` client."""
        try:
            call = next(op)
            while True:
                try:
                    reply = await self.run_async(*call)
                except BackendDown as error:
                    call = op.throw(error)
                else:
                    call = op.send(reply)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    @property
    def on_the_loop(self) -> bool:
        """Whether a coroutine's round trips are awaited on its loop (a ``redis.asyncio`` client was
        given) rather than run in the loop's default executor."""
        return self.async_client is not None

    def submit(
        self, loop: asyncio.AbstractEventLoop, op: Op[T], executor: concurrent.futures.Executor | None = None
    ) -> asyncio.Future[T]:
        """A coroutine's operation, started now: a task on the loop (``on_the_loop``), else a job of
        ``executor`` (the loop's default one if None). Either way a future, which the caller may
        shield, and whose result a cancelled caller can still read."""
        if self.async_client is not None:
            return asyncio.ensure_future(self.drive_async(op))
        return loop.run_in_executor(executor, self.drive, op)

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
    heartbeats, claims, window of tokens), ``lease`` (a rate limiter in lease mode: its leases and
    state) or ``sem`` (leases, config and counters, window, line, heartbeats)."""
    tag = f"omnilimit:{{{name}}}:{kind}"
    if kind == "rate":
        return [f"{tag}:bucket", f"{tag}:window"]
    if kind == "lease":  # a rate limiter in lease mode: the leases, and the state (its pause)
        return [f"{tag}:leases", f"{tag}:state"]
    if kind == "tokens":  # the rate limiter's keys, and its line of waiters and window of tokens
        rate = f"omnilimit:{{{name}}}:rate"
        return [f"{rate}:{key}" for key in ("bucket", "window", "line", "heartbeats", "claims", "tokens")]
    return [f"{tag}:leases", f"{tag}:state", f"{tag}:window", f"{tag}:line", f"{tag}:heartbeats"]


def channel_for(name: str, kind: str = "sem") -> str:
    """The pub/sub channel of a limiter: a concurrency limiter's (``sem``) scripts publish there
    the ids of the waiters that may go; a rate limiter's (``rate``), that its budget changed in a
    way that may bring a turn closer (a refund, a new configuration); a rate limiter's in lease
    mode (``lease``), its pauses."""
    if kind == "lease":
        return f"omnilimit:{{{name}}}:lease:changed"
    return f"omnilimit:{{{name}}}:sem:go" if kind == "sem" else f"omnilimit:{{{name}}}:rate:changed"


class Gate:
    """At most ``size`` holders at once, the others served in arrival order: ``async with gate:``.
    For one event loop; it keeps no reference to the loop while nobody waits (a loop that ends
    drops its gate)."""

    __slots__ = ("_free", "_waiting")

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()

    async def __aenter__(self) -> None:
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._pass_on()  # handed the place as it was cancelled: the next one takes it
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        self._pass_on()

    def _pass_on(self) -> None:
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():  # a cancelled waiter's future is done: skipped
                future.set_result(None)
                return
        self._free += 1
