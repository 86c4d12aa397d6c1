"""ConcurrencyLimiter: at most ``max_concurrent`` calls in flight at once."""

from __future__ import annotations

from omnilimit import _core
from omnilimit._log import logger
from omnilimit._validate import label, whole_number
from omnilimit.backoff import ProviderFeedback, _common_metrics

MAX_CONCURRENT = 2**31 - 1


class ConcurrencyLimiter(_core.ConcurrencyCore, ProviderFeedback):
    """At most ``max_concurrent`` calls in flight at once (the guide's concurrency limiting).

    ``acquire(timeout=120) -> bool`` takes a slot, waiting up to ``timeout`` seconds (``None``
    waits forever, ``0`` tries once); ``release()`` frees it. Waiters are served in arrival order.
    ``with limiter:`` acquires with the default timeout (raising ``LimiterTimeout`` when none came)
    and releases on exit.

    The uncontended ``acquire()``/``release()`` pair runs entirely in C++ with the GIL held; the GIL
    is released only while a caller waits. Every method is thread-safe. ``get_stats()`` reads
    atomics and never blocks.

    A release without a matching acquire is ignored, counted in ``over_release_count`` and logged
    once: capacity never exceeds ``max_concurrent``.
    """

    __slots__ = ("name",)

    def __init__(self, max_concurrent: int, name: str = "default") -> None:
        super().__init__(whole_number("max_concurrent", max_concurrent, maximum=MAX_CONCURRENT))
        self.name = label("name", name)
        logger.debug("ConcurrencyLimiter %r: at most %d concurrent calls", self.name, self.max_concurrent)

    def record_request(self) -> None:
        """Does nothing: kept so code written for RateLimiter runs unchanged. For this kind,
        ``release()`` records the call (it counts in ``get_current_rpm()``)."""

    def set_max_concurrent(self, max_concurrent: int) -> int:
        """Changes the limit now. Extra slots go at once to the oldest waiters (returns how many
        got one); with fewer, calls in flight finish and slots are handed on only below the new
        limit."""
        granted = super().set_max_concurrent(whole_number("max_concurrent", max_concurrent, maximum=MAX_CONCURRENT))
        logger.info("ConcurrencyLimiter %r: max_concurrent set to %d", self.name, max_concurrent)
        return granted

    def get_stats(self) -> dict[str, int]:
        """The guide's four keys: ``max_concurrent``, ``active_calls``, ``total_requests``,
        ``available_slots``."""
        maximum = self.max_concurrent
        active = self.active_calls
        return {
            "max_concurrent": maximum,
            "active_calls": active,
            "total_requests": self.total_requests,
            "available_slots": maximum - active,
        }

    def metrics(self) -> dict[str, object]:
        """``get_stats()`` plus: ``admitted``, ``timed_out``, ``denied`` (``acquire(timeout=0)``
        refused), ``rate_limited`` (429s reported), ``pauses``, ``paused_for`` (s), ``waiting`` (callers
        queued now), ``wait_p50_s`` / ``wait_p99_s`` (admitted callers' waits, upper bounds within
        25%), ``predicted_wait_s`` (for a caller arriving now: 0 with a slot free, else its place in
        line over the releases per second of the last minute; None when nothing was released)."""
        return {**self.get_stats(), **_common_metrics(self), "predicted_wait_s": self._predicted_wait()}

    def _predicted_wait(self) -> float | None:
        paused = self.paused_for
        ahead = self.waiting
        if ahead == 0 and self.active_calls < self.max_concurrent:
            return paused
        per_second = self.get_current_rpm() / 60.0
        if per_second == 0:
            return None
        return max(paused, (ahead + 1) / per_second)

    def __repr__(self) -> str:
        return f"ConcurrencyLimiter(max_concurrent={self.max_concurrent}, name={self.name!r})"

    def _feedback_label(self) -> str:
        return f"concurrency limiter {self.name!r}"

    # Hooks called by the core.
    def _on_timeout(self, timeout: object) -> str:
        message = f"Concurrency limit timeout after {timeout}s for {self.name}"
        logger.warning(message)
        return message

    def _on_over_release(self) -> None:
        logger.warning(
            "ConcurrencyLimiter %r: release() without a held slot was ignored; further ones are "
            "counted in over_release_count without being logged",
            self.name,
        )
