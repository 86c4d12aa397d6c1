"""How a coroutine waits on a rate limiter's native core (``RateLimiter.acquire_async`` without
a store, and a Redis store's in-process fallback): the pause waited out on the loop's timer, then
one booking of the bucket (``reserve``) or, with a token budget, one ticket of the core's queue
(``ticket``), each woken by the core when the budget changes. Cancellation-safe: a booking whose
time has not come is refunded, a ticket leaves the queue."""

from __future__ import annotations

import asyncio

from omnilimit import _async, _core


async def acquire_here(core: _core.RateCore, timeout: float | None, tokens: int, fail_fast: bool) -> bool:
    """A request of ``core`` itself (and ``tokens`` with a budget); False, nothing counted, when
    its turn lies beyond ``timeout`` (at once with ``fail_fast``). Raises LimiterClosed."""
    _, deadline = _async.deadline(timeout)
    if core.closed:
        raise _core.LimiterClosed("the limiter is closed")
    while True:
        go_in = core._pause_go_in()
        if go_in > 0:  # paused: book only at the end (plus this caller's jitter)
            now = _core.monotonic_ns()
            go_at = now + int(go_in * 1e9)
            if go_at > deadline and (fail_fast or now >= deadline):
                return False
            await _async.stand_by(core, min(go_at, deadline))
            continue
        took: bool | None
        if core.has_token_budget:
            took = await ticket(core, tokens, deadline, fail_fast)
        else:
            took = await reserve(core, deadline, fail_fast)
        if took is None:
            continue  # book again (the rate changed too often to follow, or the loop ran late)
        if not took:
            return False
        if core._pause_go_in() > 0:
            continue  # a pause declared meanwhile voids the slot: wait for its end
        if core.has_token_budget:
            core._async_reservation.set(tokens)
        return True


async def reserve(core: _core.RateCore, deadline: int, fail_fast: bool) -> bool | None:
    """One booking: True once its instant came, False at the deadline (or at once, failing
    fast), None to book again. The booking is a handle whose future the loop's timed waits
    resolve at the instant; a turn beyond the deadline stands by (``stand_by_to_book``)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()
    booked = core._async_book(_async.here(loop).notifier, future, deadline)
    if booked is True:
        return True
    if booked is None:  # the turn lies beyond the deadline: nothing booked
        if fail_fast or _core.monotonic_ns() >= deadline:
            return False
        return await stand_by_to_book(core, deadline)
    try:
        while True:  # until the instant, or a rate change (which may move it either way)
            await future
            at = core._async_turn(booked)
            if at == 0:
                return True
            if at < 0:
                return None
            if _core.monotonic_ns() >= deadline:
                core._async_unbook(booked)  # a slower rate moved the instant past the deadline
                return False
            future = loop.create_future()
            core._async_rewatch(booked, future, min(at, deadline))
    except BaseException:
        core._async_unbook(booked)
        raise


async def stand_by_to_book(core: _core.RateCore, deadline: int) -> bool | None:
    """A turn beyond the deadline books nothing: stand by until a change brings it within reach
    (then book and wait as ``reserve``) or the deadline comes (False)."""
    loop = asyncio.get_running_loop()
    waiter = _core.AsyncWait(_async.notifier(loop))
    standing_by = False
    try:
        while True:
            waiter.future = future = loop.create_future()
            delay = core._async_reserve(waiter, deadline)
            if delay is not None:
                break
            if _core.monotonic_ns() >= deadline:
                return False
            if not standing_by:  # registered from now on: look once more before waiting
                core._async_stand_by(waiter)
                standing_by = True
                continue
            await _async.wake_or_timer(loop, future, deadline)
    finally:
        if standing_by:
            core._async_stand_by_end(waiter)
    try:
        while delay > 0:  # until the instant, or a rate change (which may move it either way)
            await _async.wake_or_timer(loop, future, min(deadline, _core.monotonic_ns() + int(delay * 1e9)))
            waiter.future = future = loop.create_future()
            delay = core._async_reserve_check(waiter)
            if delay > 0 and _core.monotonic_ns() >= deadline:
                core._async_refund(waiter)  # a slower rate moved the instant past the deadline
                return False
    except BaseException:
        core._async_refund(waiter)
        raise
    return None if delay < 0 else True


async def ticket(core: _core.RateCore, tokens: int, deadline: int, fail_fast: bool) -> bool:
    """One ticket of the token budget's queue: True once it may go, False at the deadline (or at
    once, failing fast)."""
    loop = asyncio.get_running_loop()
    waiter = _core.AsyncWait(_async.notifier(loop))
    waiter.future = future = loop.create_future()
    status = core._async_ticket(waiter, tokens, deadline, fail_fast)
    try:
        while status == 1:  # queued, or standing by: woken by every re-plan
            status, wake_in = core._async_ticket_poll(waiter)
            if status != 1:
                break
            if _core.monotonic_ns() >= deadline:
                core._async_ticket_leave(waiter)
                return False
            at = deadline if wake_in is None else min(deadline, _core.monotonic_ns() + int(wake_in * 1e9))
            await _async.wake_or_timer(loop, future, at)
            waiter.future = future = loop.create_future()
    except BaseException:
        core._async_ticket_leave(waiter)
        raise
    return status == 0
