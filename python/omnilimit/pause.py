"""What a caller that has its slot does about a pause in effect (a provider's 429, see
feedback.py): it waits the pause out, holding the slot (and so its place in line), if the pause
ends by the caller's deadline; otherwise it gives the slot back at once and waits out its timeout
holding nothing, since a pause never shortens. Written once, for threads and coroutines, for every
limiter whose waiting happens in Python (the native in-process ``acquire()`` does the same in the
core). Also ``sleep_until``: a thread's wait on a limiter's native stand-by, which ``close()`` and
Ctrl-C end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from omnilimit import _async, _core


def sleep_until(limiter: Any, until_ns: int) -> None:
    """Sleeps (GIL released) until the core's clock reaches `until_ns`, in the limiter's native
    stand-by, so that ``close()`` (LimiterClosed) and Ctrl-C end it."""
    while _core.monotonic_ns() < until_ns:
        seen = limiter._standby_generation()  # before the look at closed: close() sets it, then wakes
        if limiter.closed:
            raise _core.LimiterClosed("the limiter is closed")
        limiter._stand_by(seen, until_ns)
    if limiter.closed:
        raise _core.LimiterClosed("the limiter is closed")


def wait_out(limiter: Any, deadline: int, give_back: Callable[[], None]) -> bool:
    """Holding a slot: True once no pause is in effect (waited out, if there was one); False after
    giving the slot back and waiting until the deadline, when the pause outlasts it. Closed or
    interrupted meanwhile, gives the slot back and raises."""
    go_at = _pause_end(limiter)
    if go_at is None:
        return True
    try:
        if go_at <= deadline:
            sleep_until(limiter, go_at)
            return True
    except BaseException:
        give_back()
        raise
    give_back()
    sleep_until(limiter, deadline)
    return False


async def wait_out_async(limiter: Any, deadline: int, give_back: Callable[[], Awaitable[None]]) -> bool:
    """``wait_out`` for a coroutine, on its loop's timer. Cancelled meanwhile, gives the slot back
    (shielded from a second cancellation) and raises."""
    go_at = _pause_end(limiter)
    if go_at is None:
        return True
    try:
        if go_at <= deadline:
            while _core.monotonic_ns() < go_at:
                await _async.stand_by(limiter, go_at)
            return True
    except BaseException:
        await asyncio.shield(give_back())
        raise
    await give_back()
    while _core.monotonic_ns() < deadline:
        await _async.stand_by(limiter, deadline)
    return False


def _pause_end(limiter: Any) -> int | None:
    """The instant the limiter's pause ends on the core's clock (None: no pause in effect)."""
    go_in = limiter._pause_go_in()
    return None if go_in <= 0 else _core.monotonic_ns() + int(go_in * 1e9)
