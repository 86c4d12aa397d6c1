"""What a store is: where a limiter's state lives when it is outside this process.

A limiter is one public class per kind (``RateLimiter``, ``ConcurrencyLimiter``) whose native
core holds the state of an in-process or shared-memory limiter itself. With ``backend=`` a Redis
URL, the limiter composes a store (``backends.redis_rate.RedisRateStore``,
``backends.redis_concurrency.RedisConcurrencyStore``), and its core asks the store instead of
deciding (``cpp/bindings/store.hpp``): ``acquire``, ``release`` and the figures go to the store;
what is written once, above every store, stays with the limiter: counting and logging a refusal,
the pause, ``with``, the decorator, the coroutines' protocol, ``metrics()``.

A store never holds its limiter: every call that needs it gets it (``limiter``), so that a limiter
and its store form no reference cycle (the native core is invisible to the garbage collector).
These protocols say what the limiters call; a store that forgets a method fails mypy here.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from omnilimit._log import logger


class Store(Protocol):
    """What both kinds of store answer."""

    local_fraction: float | None  # the share of the limit of the in-process fallback (None: all of it)

    @property
    def backend(self) -> str:
        """Where the state lives (a URL without its password)."""

    @property
    def backend_available(self) -> bool:
        """False while the store cannot be reached (its outage policy decides meanwhile)."""

    @property
    def on_backend_error(self) -> str:
        """The outage policy: ``closed``, ``open`` or ``local``."""

    def figure(self, name: str, local: Any, *args: Any) -> Any:
        """The figure ``name`` of the limiter (a property or stats method of the native core, with
        its arguments): the store's, or ``local`` (the core's own) when it has none."""

    def held_read(self) -> AbstractContextManager[Any]:
        """A block in which every figure comes from one read of the store (for ``metrics()``)."""

    def get_stats(self, local: dict[str, Any]) -> dict[str, Any]:
        """The guide's stats, from the store; ``local`` is the limiter's own view, for when the
        store is unreachable."""

    def metrics(self) -> dict[str, object]:
        """The keys a store adds to ``metrics()`` (``backend``, ``outage_admitted``...)."""

    def watch_waits(self, hook: Callable[[float], object] | None, threshold_s: float) -> None:
        """Calls ``hook(seconds)`` after each of this process's admitted callers that waited at
        least ``threshold_s`` (None: stop); what ``WithStore.watch_waits`` asks of a store."""

    def described(self) -> str:
        """The arguments ``repr()`` of the limiter shows: its limits and name as configured here,
        ``backend='...', on_backend_error='closed'``."""

    def close(self) -> None:
        """Stops the store's threads; callers of this process are woken by the limiter."""


class ConcurrencyStore(Store, Protocol):
    """A store of slots (permits) held by callers."""

    @property
    def lease_seconds(self) -> float:
        """How long a permit outlives its holder's last renewal."""

    def acquire(self, limiter: Any, timeout: float | None = 120) -> bool:
        """Takes a slot for the calling thread, waiting up to ``timeout``; False when none came
        (the limiter counts and logs it). Waits out a pause in effect with ``limiter``'s help."""

    async def acquire_async(self, limiter: Any, timeout: float | None = 120) -> bool:
        """``acquire`` for a coroutine, waiting on its event loop."""

    def release(self, limiter: Any) -> bool:
        """Gives back a slot of the calling thread (else of this process); False when none was
        held (the limiter counts and logs the over-release)."""

    def bind(self, limiter: Any) -> None:
        """Called once the limiter exists: the store may keep a weak reference to pause it when
        another host declared a pause."""

    def pause(self, seconds: float) -> float | None:
        """Nobody, on any host, goes for ``seconds``; returns the store's seconds until going,
        None when it cannot tell (the limiter's own pause stands)."""

    def set_max_concurrent(self, maximum: int) -> int:
        """Writes the cap; returns the cap of the limiter's in-process fallback."""


class RateStore(Store, Protocol):
    """A store of a request budget (a GCRA bucket)."""

    @property
    def rpm(self) -> int | float:
        """The rate this process configured."""

    def bind(self, limiter: Any) -> None:
        """Called once the limiter exists: the store may keep a weak reference to wake its
        callers standing by when another host changes the budget."""

    def acquire(self, limiter: Any, timeout: float | None = 60, tokens: int = 0, fail_fast: bool = False) -> bool:
        """Takes a request, sleeping until its instant; False when its turn lies beyond
        ``timeout`` (the limiter counts and logs it)."""

    async def acquire_async(
        self, limiter: Any, timeout: float | None = 60, tokens: int = 0, fail_fast: bool = False
    ) -> bool:
        """``acquire`` for a coroutine, waiting on its event loop."""

    def listen_for_changes(self, wait_s: float) -> None:
        """Makes sure this process hears other hosts' changes (and wakes its callers standing by
        on each); the first time, waits up to ``wait_s`` for the subscription."""

    def set_rate(self, requests_per_minute: int | float) -> None:
        """Writes the rate (every host follows)."""

    def set_burst(self, burst_size: int) -> None:
        """Writes the burst (every host follows)."""

    def limit_available(self, requests: int) -> None:
        """Keeps at most ``requests`` available now, for every host."""

    def pause(self, seconds: float) -> float | None:
        """Nobody goes for ``seconds``; returns the store's seconds until going, None when
        unreachable."""


class TokenStore(RateStore, Protocol):
    """A store of a request budget and a token budget taken together (``acquire(tokens=N)``)."""

    def settle(self, reserved: int, used: int) -> None:
        """A finished call used ``used`` of the ``reserved`` tokens: charges or gives back the
        difference, for every host."""

    def detach_local(self) -> bool:
        """Whether the calling thread's (or task's) latest reservation was made by the store's
        in-process fallback (settled there); forgotten by the store."""

    def set_tokens_per_minute(self, tokens_per_minute: int | float) -> None:
        """Writes the token rate (every host follows)."""

    def set_token_burst(self, token_burst: int) -> None:
        """Writes the token burst (every host follows)."""

    def limit_token_budget(self, tokens: int) -> None:
        """Keeps at most ``tokens`` of the token budget available now, for every host."""


S = TypeVar("S", bound=Store)


class WithStore(Generic[S]):
    """Where a limiter's state lives, for both limiter kinds (listed after the native base, which
    provides ``shared_name``; the limiter sets ``_store``): ``store``, ``backend``,
    ``backend_available``, ``on_backend_error``."""

    __slots__ = ()

    if TYPE_CHECKING:
        _store: S | None

        @property
        def shared_name(self) -> str | None: ...

        def _set_wait_hook(self, hook: Callable[[float], object] | None, threshold_s: float = 0.0) -> None: ...

    def watch_waits(self, hook: Callable[[float], object] | None, threshold_s: float = 0.0) -> None:
        """Calls ``hook(seconds)`` after each admitted caller of this process that waited at least
        ``threshold_s`` seconds, in that caller's thread (or task); None stops it. One hook per
        limiter (a second replaces the first). An exception from the hook is reported and the
        caller keeps its admission. The hook must not hold a reference to the limiter: the native
        core is invisible to the garbage collector, and the cycle would never be freed. Raises
        ValueError for a threshold that is not a finite number of seconds >= 0."""
        guarded = None if hook is None else _logging_failures(hook)
        self._set_wait_hook(guarded, threshold_s)
        if self._store is not None:
            self._store.watch_waits(guarded, threshold_s)

    @property
    def store(self) -> S | None:
        """The store that holds the state when it lives in Redis (None: this process or shared
        memory, held by the native core)."""
        return self._store

    @property
    def backend(self) -> str | None:
        """Where the state lives: the Redis URL (without its password), ``shm://NAME``, or None
        (this process)."""
        if self.store is not None:
            return self.store.backend
        return None if self.shared_name is None else f"shm://{self.shared_name}"

    @property
    def backend_available(self) -> bool:
        """False while the Redis store is unreachable (its ``on_backend_error`` decides)."""
        return self.store is None or self.store.backend_available

    @property
    def on_backend_error(self) -> str | None:
        """The Redis store's outage policy (None without a Redis store)."""
        return None if self.store is None else self.store.on_backend_error


def _logging_failures(hook: Callable[[float], object]) -> Callable[[float], None]:
    """``hook``, its exceptions logged (the first one with its traceback, the rest counted in
    silence) instead of reaching the caller it was called for."""
    failures = 0

    def guarded(seconds: float) -> None:
        nonlocal failures
        try:
            hook(seconds)
        except Exception:
            failures += 1
            if failures == 1:
                logger.exception(
                    "the wait hook %r raised; the caller was admitted all the same (not logged again)", hook
                )

    return guarded
