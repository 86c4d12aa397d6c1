"""RateLimiter: at most ``requests_per_minute`` requests per minute (a GCRA token bucket)."""

from __future__ import annotations

import math

from omnilimit import _core
from omnilimit._log import logger
from omnilimit._validate import MAX_COUNT, label, positive_rate, whole_number
from omnilimit.backoff import ProviderFeedback
from omnilimit.feedback import RateLimitInfo


def default_burst(requests_per_minute: float) -> int:
    """One second of traffic, ``ceil(rpm / 60)``, and at least 1.

    Providers enforce per-minute limits over short slices, so a fresh limiter must not release a
    whole minute of requests at once (omnigen's default, ``burst_size = rpm``, lets a new 6000-RPM
    limiter admit 6000 requests within milliseconds)."""
    return max(1, min(MAX_COUNT, math.ceil(requests_per_minute / 60.0)))


class RateLimiter(_core.RateCore, ProviderFeedback):
    """At most ``requests_per_minute`` requests per minute, with bursts of ``burst_size``.

    The bucket is one atomic word (GCRA): ``acquire(timeout=60) -> bool`` reserves the next free
    instant and sleeps exactly until it (no polling), so waiters go in arrival order; a wait that
    would exceed ``timeout`` fails at once and takes nothing. ``None`` waits forever, ``0`` tries
    once. ``record_request()`` records a request made, which ``get_current_rpm()`` counts over the
    last 60 seconds. ``with limiter:`` acquires with the default timeout (raising
    ``LimiterTimeout``) and records the request on exit.

    ``burst_size`` defaults to one second of traffic (``default_burst``). Every method is
    thread-safe; ``get_stats()`` reads atomics and never blocks.
    """

    __slots__ = ("_rpm", "provider_name")

    def __init__(
        self,
        requests_per_minute: int | float = 60,
        burst_size: int | None = None,
        provider_name: str = "default",
    ) -> None:
        rpm = positive_rate("requests_per_minute", requests_per_minute)
        burst = default_burst(rpm) if burst_size is None else whole_number("burst_size", burst_size)
        super().__init__(rpm, burst)
        self.provider_name = label("provider_name", provider_name)
        self._rpm = requests_per_minute  # shown as given: 500 stays 500, 0.5 stays 0.5
        logger.debug("RateLimiter %r: %s RPM, burst %d", self.provider_name, self._rpm, burst)

    @property
    def rpm(self) -> int | float:
        """The limit in requests per minute, as given."""
        return self._rpm

    @property
    def burst_size(self) -> int:
        """Requests that may go at once on a full bucket."""
        return self.burst

    def get_rpm(self) -> int:
        """Alias of ``get_current_rpm()``."""
        return self.get_current_rpm()

    def get_stats(self) -> dict[str, object]:
        """The guide's keys: ``provider``, ``rpm_limit``, ``current_rpm``, ``tokens_available``,
        ``total_requests``, ``blocked_count``, ``utilization`` (current RPM as % of the limit)."""
        current = self.get_current_rpm()
        return {
            "provider": self.provider_name,
            "rpm_limit": self._rpm,
            "current_rpm": current,
            "tokens_available": self.tokens_available(),
            "total_requests": self.total_requests,
            "blocked_count": self.blocked_count,
            "utilization": current / self._rpm * 100.0,
        }

    def __repr__(self) -> str:
        return (
            f"RateLimiter(requests_per_minute={self._rpm!r}, burst_size={self.burst}, "
            f"provider_name={self.provider_name!r})"
        )

    def _feedback_label(self) -> str:
        return f"rate limiter {self.provider_name!r}"

    def _apply_budget(self, info: RateLimitInfo) -> None:
        if info.requests_remaining is not None:
            self.limit_available(min(info.requests_remaining, MAX_COUNT))

    # Hook called by the core.
    def _on_timeout(self, timeout: object) -> str:
        message = f"Rate limit timeout after {timeout}s for {self.provider_name}"
        logger.warning(message)
        return message
