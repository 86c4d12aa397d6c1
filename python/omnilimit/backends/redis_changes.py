"""ChangeFeed: how the callers standing by on a Redis rate limiter hear of changes on other hosts.

A caller whose turn lies beyond its deadline books nothing and stands by (in the native core's
``Standby``, where this process's own changes and ``close()`` wake it). The scripts that may bring
a turn closer on any host (a refund, a new configuration) publish on the limiter's ``changed``
channel; this process's feed, one daemon thread subscribed to that channel, passes each message
on (``on_change(message)``), and every caller standing by looks again. A pause or a new
configuration (``pause SECONDS ORIGIN``, ``configure ORIGIN``) also reaches the callers asleep on an
instant they booked: they give it up and book again (``redis_rate``). The thread starts when a
caller first books a wait or stands by, and runs until the limiter is closed or collected.

A subscription that breaks wakes everyone too (they look again, and meet the outage policy or a
free turn), and is made again after ``RETRY_S``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections.abc import Callable

from omnilimit import _async
from omnilimit.backends.redis_link import RETRY_S, RedisLink


class ChangeFeed:
    """One limiter's subscription to its ``changed`` channel, in this process. Thread-safe."""

    def __init__(self, link: RedisLink, channel: str, on_change: Callable[[str], None]) -> None:
        self._link = link
        self._channel = channel
        self._on_change = on_change
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.listening = threading.Event()  # set once the subscription is confirmed
        _feeds.add(self)

    def listen(self, wait_s: float) -> bool:
        """Makes sure the subscription runs; the first time, waits up to ``wait_s`` for it to be
        confirmed. Returns whether it had to start it (the caller should look again: a change may
        have been published before the subscription)."""
        if self.listening.is_set() or not self._start():
            return False
        self.listening.wait(wait_s)
        return True

    async def listen_async(self, wait_s: float) -> bool:
        """``listen`` for a coroutine: waits on the loop."""
        if self.listening.is_set() or not self._start():
            return False
        await _async.event_set(self.listening, wait_s)
        return True

    def _start(self) -> bool:
        """Starts the subscriber thread if it does not run; False once stopped."""
        with self._lock:
            if self._stop.is_set():
                return False
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=f"omnilimit-redis {self._channel}", daemon=True)
                self._thread.start()
        return True

    def stop(self) -> None:
        self._stop.set()
        self.listening.set()  # a caller waiting for the subscription goes on (and meets the closed limiter)

    def after_fork_in_child(self) -> None:
        # The parent's thread is not the child's: the child subscribes again when it needs to.
        self._lock = threading.Lock()
        self._thread = None
        self.listening = threading.Event()

    def _run(self) -> None:
        unreachable = self._link.unreachable_types
        while not self._stop.is_set():
            pubsub = None
            try:
                pubsub = self._link.client.pubsub()
                pubsub.subscribe(self._channel)
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.25)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        self.listening.set()
                    elif message["type"] == "message":
                        data = message["data"]
                        self._on_change(data.decode() if isinstance(data, bytes) else str(data))
            except unreachable as error:
                self.listening.clear()
                self._link.unreachable(error)
                self._on_change("")  # everyone looks again, and meets the outage policy
                self._stop.wait(RETRY_S)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        pubsub.close()
        self.listening.clear()


_feeds: weakref.WeakSet[ChangeFeed] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for feed in list(_feeds):
        feed.after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
