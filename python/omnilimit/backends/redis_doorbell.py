"""Doorbell: how waiters of a Redis concurrency limiter learn that a permit may be free.

The limiter's subscriber thread rings it for each message on the limiter's channel (a release,
a lease taken back, a raised cap, published by the Lua scripts of any host). A ring wakes the
oldest ``n`` waiting threads and ``n`` waiting coroutines; each then tries Redis again. The
generation counter closes the gap between a waiter's failed try and its wait: a ring in between
changes the generation, and the waiter tries again instead of sleeping.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Doorbell:
    """Wakes waiting threads and coroutines in arrival order. Thread-safe."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._generation = 0
        self._futures: collections.deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = collections.deque()

    @property
    def generation(self) -> int:
        return self._generation

    def ring(self, n: int = 1) -> None:
        """Wakes the ``n`` oldest thread waiters and ``n`` oldest coroutine waiters."""
        with self._cond:
            self._generation += 1
            self._cond.notify(n)
            woken = [self._futures.popleft() for _ in range(min(n, len(self._futures)))]
        for loop, future in woken:
            _wake(loop, future)

    def ring_all(self) -> None:
        with self._cond:
            self._generation += 1
            self._cond.notify_all()
            woken = list(self._futures)
            self._futures.clear()
        for loop, future in woken:
            _wake(loop, future)

    def wait(self, generation: int, timeout: float) -> None:
        """Sleeps up to ``timeout`` seconds for a ring, unless one came since ``generation``."""
        with self._cond:
            if self._generation == generation:
                self._cond.wait(timeout)

    def future(self, loop: asyncio.AbstractEventLoop, generation: int) -> asyncio.Future[None]:
        """A future resolved by the next ring (at once if one came since ``generation``)."""
        future = loop.create_future()
        with self._cond:
            if self._generation != generation:
                future.set_result(None)
            else:
                self._futures.append((loop, future))
        return future

    def forget(self, future: asyncio.Future[None], leaving: bool = False) -> None:
        """Takes a coroutine's future out of the line. ``leaving``: the coroutine stops waiting
        without trying again (cancelled), so a ring it took goes on to the next waiter."""
        with self._cond:
            for i, (_, queued) in enumerate(self._futures):
                if queued is future:
                    del self._futures[i]
                    return
        if leaving:
            self.ring(1)


def _wake(loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> None:
    with contextlib.suppress(RuntimeError):  # the loop was closed: its waiter is gone
        loop.call_soon_threadsafe(_resolve, future)
