"""Coroutines on the native limiters: the event-loop side of ``acquire_async``.

A coroutine waits in the same C++ queues as threads (so one budget and one arrival order serve
both), with an ``_core.AsyncWait`` in place of a sleeping thread. When the core wakes it (a slot
handed over, a queue re-planned), from whichever thread did so, the waiter is posted to its loop's
``_core.LoopNotifier``, whose eventfd the loop watches; ``_drain`` then resolves the waiter's
current future and the coroutine asks the core where it stands. Timed waits (a rate limiter's
instant, a pause, a timeout) are the loop's own timers. Nothing polls and no thread is parked.

Cancellation. Every wait is wrapped so that a coroutine that leaves early (timeout,
``CancelledError``, ``GeneratorExit``) takes itself out of the queue and gives back whatever was
handed to it meanwhile; a rate reservation whose time has not come is refunded.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from omnilimit import _core

F = TypeVar("F", bound=Callable[..., Any])

_notifiers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _core.LoopNotifier] = weakref.WeakKeyDictionary()
_notifiers_lock = threading.Lock()


def notifier(loop: asyncio.AbstractEventLoop) -> _core.LoopNotifier:
    """The loop's notifier, made and registered with the loop on first use (from the loop's
    thread). It is closed when the loop is garbage-collected."""
    found = _notifiers.get(loop)
    if found is not None:
        return found
    with _notifiers_lock:
        found = _notifiers.get(loop)
        if found is None:
            found = _core.LoopNotifier()
            loop.add_reader(found.fd, _drain, found)
            _notifiers[loop] = found
            weakref.finalize(loop, found.close)
    return found


def _drain(found: _core.LoopNotifier) -> None:
    for waiter in found.take():
        if waiter.future is not None:
            _resolve(waiter.future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def deadline(timeout: object) -> tuple[int, int]:
    """(the timeout in ns, the instant on the core's clock by which the acquire must succeed),
    ``FOREVER_NS`` for None. Raises ValueError for a bad timeout, as ``acquire()`` does."""
    timeout_ns = _core._timeout_ns(timeout)
    if timeout_ns >= _core.FOREVER_NS:
        return timeout_ns, _core.FOREVER_NS
    return timeout_ns, min(_core.monotonic_ns() + timeout_ns, _core.FOREVER_NS)


def seconds_until(instant_ns: int) -> float:
    return max(0.0, (instant_ns - _core.monotonic_ns()) / 1e9)


async def wake_or_timer(loop: asyncio.AbstractEventLoop, future: asyncio.Future[None], at_ns: int) -> None:
    """Waits until `future` is resolved (the core woke the waiter) or the core's clock reaches
    `at_ns` (``FOREVER_NS``: no timer)."""
    handle = None
    if at_ns < _core.FOREVER_NS:
        handle = loop.call_later(seconds_until(at_ns), _resolve, future)
    try:
        await future
    finally:
        if handle is not None:
            handle.cancel()


async def stand_by(limiter: Any, until_ns: int) -> None:
    """Waits until the core's clock reaches `until_ns`, or something changes the limiter's
    prospects (a refund, a new rate, a re-planned queue, ``close()``): the caller looks again
    either way. Raises LimiterClosed when the limiter is (or gets) closed."""
    loop = asyncio.get_running_loop()
    waiter = _core.AsyncWait(notifier(loop))
    waiter.future = future = loop.create_future()
    limiter._async_stand_by(waiter)  # raises LimiterClosed
    try:
        await wake_or_timer(loop, future, until_ns)
    finally:
        limiter._async_stand_by_end(waiter)
    if limiter.closed:
        raise _core.LimiterClosed("the limiter is closed")


async def sleep_until(at_ns: int) -> None:
    """Sleeps on the loop's timer until the core's clock reaches `at_ns` (never earlier: the
    loop may fire a timer up to its clock resolution early, so look again)."""
    while (left := seconds_until(at_ns)) > 0:
        await asyncio.sleep(left)


class AsyncLimiting:
    """``async with limiter:`` and ``@limiter.limit`` for a limiter class, which defines
    ``acquire_async`` (with its default timeout), ``_async_release`` and ``_timeout_error``."""

    __slots__ = ()

    async def acquire_async(self, timeout: float | None = None) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError

    def _async_release(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _timeout_error(self) -> BaseException:  # pragma: no cover - overridden
        raise NotImplementedError

    async def __aenter__(self) -> Any:
        if not await self.acquire_async():
            raise self._timeout_error()  # acquire_async counted and logged the timeout
        return self

    async def __aexit__(self, *exc_info: object) -> bool:
        self._async_release()
        return False

    def limit(self, function: F) -> F:
        """Decorates a function (sync or ``async def``) so that each call runs under this
        limiter: ``with limiter:`` around a sync call, ``async with limiter:`` around a coroutine's
        body. A call that gets nothing within the default timeout raises ``LimiterTimeout``."""
        return limited(lambda: self, function)


def limited(get: Callable[[], Any], function: F) -> F:
    """`function` (sync or async) run under the limiter that ``get()`` returns at each call."""
    if inspect.iscoroutinefunction(function):

        @functools.wraps(function)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            async with get():
                return await cast(Callable[..., Awaitable[Any]], function)(*args, **kwargs)

        return cast(F, run_async)

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> Any:
        with get():
            return function(*args, **kwargs)

    return cast(F, run)
