"""What a Redis limiter answers while Redis is unreachable: its ``on_backend_error`` policy,
written once for both kinds of limiter, for threads and coroutines alike.

- ``open``: the caller goes at once, unlimited.
- ``local``: the caller takes the limiter's in-process fallback (its native core, at
  ``local_fraction`` of the limit), waiting up to its timeout.
- ``closed``: the caller waits until the next probe of Redis (``RedisLink.retry_in()``) and tries
  Redis again, until its deadline; then it is denied (``acquire()`` returns False, and the
  limiter reports the timeout as any other).

The limiter says what going means for it (``admit``: a concurrency limiter records which of its
permits the owner holds; a rate limiter has nothing to record) and gives its fallback
(``take_local`` / ``take_local_async``). Every admission and denial is counted here, so that
``outage_admitted`` and ``outage_denied`` mean the same for both kinds and both ways of waiting.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import Any

from omnilimit import _async, _core
from omnilimit.backends.redis_link import RedisLink
from omnilimit.pause import sleep_until


class OutagePolicy:
    """One limiter's policy while Redis is away, and the count of what it decided."""

    __slots__ = ("_link", "_lock", "admitted", "denied", "fraction", "name")

    def __init__(self, name: str, fraction: float | None, link: RedisLink) -> None:
        self.name = name  # closed | open | local (checked by spec.check_policy)
        self.fraction = fraction  # of the limit, for the local fallback
        self._link = link
        self._lock = threading.Lock()
        self.admitted = 0  # callers let through by the policy
        self.denied = 0  # callers refused by it (closed, at their deadline)

    def answer(
        self,
        limiter: Any,
        deadline: int,
        take_local: Callable[[float | None], bool],
        admit: Callable[[str], None],
    ) -> bool | None:
        """A thread's answer: True (go), False (refused), or None after waiting for the next probe
        (try Redis again). Raises LimiterClosed if the limiter is closed meanwhile."""
        if self.name == "open":
            return self._admitted(admit)
        if self.name == "local":
            return take_local(_async.timeout_left(deadline)) and self._admitted(admit)
        retry_at = self._retry_at(deadline)
        if retry_at is None:
            return self._denied()
        sleep_until(limiter, retry_at)
        return None

    async def answer_async(
        self,
        limiter: Any,
        deadline: int,
        take_local: Callable[[float | None], Awaitable[bool]],
        admit: Callable[[str], None],
    ) -> bool | None:
        """``answer()`` for a coroutine: the fallback is awaited, the wait is the loop's timer."""
        if self.name == "open":
            return self._admitted(admit)
        if self.name == "local":
            return await take_local(_async.timeout_left(deadline)) and self._admitted(admit)
        retry_at = self._retry_at(deadline)
        if retry_at is None:
            return self._denied()
        while _core.monotonic_ns() < retry_at:
            await _async.stand_by(limiter, retry_at)  # raises LimiterClosed
        return None

    def _retry_at(self, deadline: int) -> int | None:
        """When a ``closed`` caller tries Redis again: the next probe, or its deadline if sooner;
        None once the deadline has passed."""
        now = _core.monotonic_ns()
        if now >= deadline:
            return None
        return min(deadline, now + int(max(self._link.retry_in(), 0.001) * 1e9))

    def _admitted(self, admit: Callable[[str], None]) -> bool:
        admit(self.name)
        with self._lock:
            self.admitted += 1
        return True

    def _denied(self) -> bool:
        with self._lock:
            self.denied += 1
        return False  # the limiter counts and reports the timeout
