"""Wakeups: how a waiter of a Redis concurrency limiter learns that its turn may have come.

The limiter's scripts publish, on its channel, the ids of the waiters now allowed to take a
permit (the head of the line, as many as permits are free). The keeper thread of each process
hands each id to ``Wakeups.wake``, which wakes that waiter, if it is one of this process's: exactly
the waiters whose turn came, nobody else, one round trip each.

A waiter registers under its id before its first try and stays registered until it is done, and
a wake is sticky until the waiter next looks: a message that arrives while it is trying is not
lost, it only makes it try once more.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from omnilimit import _async


class Waiter:
    """One caller waiting for a permit: a thread (``wait``) or a coroutine (``future``)."""

    __slots__ = ("_event", "_future", "_loop", "rung")

    def __init__(self) -> None:
        self._event = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._future: asyncio.Future[None] | None = None
        self.rung = False

    def wake(self) -> None:
        """Called from any thread."""
        self.rung = True
        self._event.set()
        loop, future = self._loop, self._future
        if loop is not None and future is not None:
            with contextlib.suppress(RuntimeError):  # the loop was closed: its waiter is gone
                loop.call_soon_threadsafe(_async.resolve, future)

    def before_try(self) -> None:
        """Forgets earlier wakes: the try about to run sees what they announced."""
        self.rung = False
        self._event.clear()

    def wait(self, timeout: float) -> None:
        """A thread sleeps until woken (or woken since ``before_try``), at most ``timeout`` s."""
        self._event.wait(timeout)

    def future(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        """A coroutine's future, resolved when woken (at once if woken since ``before_try``)."""
        future = loop.create_future()
        self._loop, self._future = loop, future
        if self.rung:
            future.set_result(None)
        return future


class Wakeups:
    """This process's waiters of one limiter, by id. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, Waiter] = {}

    def register(self, owner: str) -> Waiter:
        waiter = Waiter()
        with self._lock:
            self._waiters[owner] = waiter
        return waiter

    def unregister(self, owner: str) -> None:
        with self._lock:
            self._waiters.pop(owner, None)

    def __len__(self) -> int:
        return len(self._waiters)

    def wake(self, owners: list[str]) -> None:
        """Wakes those of ``owners`` that wait in this process."""
        with self._lock:
            found = [self._waiters[owner] for owner in owners if owner in self._waiters]
        for waiter in found:
            waiter.wake()

    def wake_all(self) -> None:
        """Wakes every waiter (the subscription broke, or the limiter closed): each looks again."""
        with self._lock:
            found = list(self._waiters.values())
        for waiter in found:
            waiter.wake()
