"""One request's way through a limiter, whatever the HTTP package: taken before the request is
sent (``take``: a slot, a request, its estimated tokens), told of the response's status and
headers (``heard``), and ended once, when the response is done or abandoned (``end``: the tokens
settled by the provider's rule, the slot freed). The transports of ``omnilimit.transport.httpx2``
and ``.httpx`` drive it.

A ``ConcurrencyLimiter`` holds its slot until ``end``. A ``RateLimiter`` takes a request (and,
with a token budget, the estimate, detached from the thread at once so that ``end`` may run in
any thread: a stream is often closed elsewhere). A ``CombinedLimiter`` does both, taken together
by its own ``acquire``. ``end`` is idempotent and thread-safe.

A slot released in another thread than the one that took it leaves that thread's account of
the over-release rule (``thread_account.hpp``) one slot too high: the rule may then let a later
``finally`` release of that thread through. It never makes a release ignored, so no slot leaks.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from omnilimit import _async
from omnilimit._async import DEFAULT_TIMEOUT as DEFAULT
from omnilimit.combined import CombinedLimiter
from omnilimit.concurrency import ConcurrencyLimiter
from omnilimit.rate import RateLimiter, TokenReservation
from omnilimit.transport.settle import SettleRule, charged

Limited = ConcurrencyLimiter | RateLimiter | CombinedLimiter


def limiter_of(limiter: object) -> Limited:
    """The limiter a transport was given: a ``ConcurrencyLimiter``, a ``RateLimiter``, a
    ``CombinedLimiter``, or a ``(manager, role)`` pair naming one. TypeError for anything else,
    naming what it got."""
    if isinstance(limiter, tuple) and len(limiter) == 2:
        manager, role = limiter
        limiter_for = getattr(manager, "limiter_for", None)
        if limiter_for is None or not isinstance(role, str):
            raise TypeError(f"a (manager, role) pair needs a ProviderRateLimitManager and a role name, got {limiter!r}")
        limiter = limiter_for(role)
    if isinstance(limiter, (ConcurrencyLimiter, RateLimiter, CombinedLimiter)):
        return limiter
    raise TypeError(
        "limiter must be a ConcurrencyLimiter, a RateLimiter, a CombinedLimiter or a (manager, role) pair, "
        f"got {type(limiter).__name__}"
    )


class Passage:
    """One request through ``limiter``: ``estimate`` tokens reserved (with a token budget),
    settled by ``rule`` at the end."""

    __slots__ = (
        "_ended",
        "_lock",
        "_rate",
        "_reservation",
        "_slots",
        "_taken",
        "estimate",
        "limiter",
        "rule",
        "timeout",
    )

    def __init__(self, limiter: Limited, estimate: int, rule: SettleRule, timeout: object = DEFAULT) -> None:
        self.limiter = limiter
        self.timeout = timeout  # acquire()'s, as given (DEFAULT: the limiter's own default)
        self.estimate = estimate
        self.rule = rule
        self._lock = threading.Lock()
        self._taken = False
        self._ended = False
        self._reservation: TokenReservation | None = None
        # Its parts: the rate limiter that counts the request (and its tokens), the one that holds a slot.
        parts = (limiter.rate, limiter.concurrency) if isinstance(limiter, CombinedLimiter) else (limiter, limiter)
        self._rate = parts[0] if isinstance(parts[0], RateLimiter) else None
        self._slots = parts[1] if isinstance(parts[1], ConcurrencyLimiter) else None

    def _budgeted(self) -> bool:
        return self._rate is not None and self._rate.has_token_budget

    def take(self) -> None:
        """Acquires with the limiter's default timeout (its timeout contract); raises
        ``LimiterTimeout`` when it refuses (the SDK does not retry it: not an HTTP error)."""
        limiter = self.limiter
        took = limiter.acquire(**self._arguments())
        if not took:
            raise _async.timeout_error(limiter, self.timeout)
        self._after_take()

    async def take_async(self) -> None:
        """``take`` for a coroutine, on its event loop."""
        limiter = self.limiter
        took = await limiter.acquire_async(**self._arguments())
        if not took:
            raise _async.timeout_error(limiter, self.timeout)
        self._after_take()

    def _arguments(self) -> dict[str, Any]:
        arguments: dict[str, Any] = {} if self.timeout is DEFAULT else {"timeout": self.timeout}
        if self._budgeted():
            arguments["tokens"] = self.estimate
        return arguments

    def _after_take(self) -> None:
        if self._budgeted():
            assert self._rate is not None
            self._reservation = self._rate.detach_reservation()
        self._taken = True

    def heard(self, status: int, headers: Mapping[str, str]) -> None:
        """The response's status and headers: a 429 pauses, a 2xx caps the budget (``on_response``)."""
        self.limiter.on_response(status, headers)

    def end(self, used: int | None) -> None:
        """The response is done (``used``: the tokens it says it used, None when it did not say):
        settles and frees, once."""
        with self._lock:
            if self._ended or not self._taken:
                return
            self._ended = True
        try:
            if self._reservation is not None:
                self._reservation.settle(charged(self.rule, self.estimate, used))
            elif self._rate is not None:
                self._rate.record_request()
        finally:
            if self._slots is not None:
                self._slots.release()
