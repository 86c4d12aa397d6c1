"""What a limiter does with a provider's answers: ``on_rate_limited`` and ``on_response``.

Both limiter classes inherit ``ProviderFeedback``. A 429 pauses the whole limiter once (every role
sharing it, every waiter, every newcomer), for as long as the provider says; the pause is the
native ``pause()``, which extends and never shortens, so the 429s of calls that were already in
flight do not stack. A successful response may carry the provider's remaining budget: a rate
limiter then keeps no more tokens than the provider has left, and a budget reported at 0 pauses
until its reset.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from omnilimit._log import logger
from omnilimit.headers import RateLimitInfo, parse_rate_limit_headers
from omnilimit.waits import WaitCounts

# How long a 429 that says nothing usable (no Retry-After, no exhausted budget with a reset)
# pauses the limiter. One second is the granularity providers enforce their per-minute limits at.
DEFAULT_PAUSE_S = 1.0

Headers = Mapping[str, str] | Iterable[tuple[str, str]] | None


def _explicit_pause(retry_after: object) -> float | None:
    """A caller's own ``retry_after``: a number of seconds (checked: ValueError if bad), or the raw
    text of a Retry-After header (parsed like one: garbage is ignored with a warning)."""
    if retry_after is None:
        return None
    if isinstance(retry_after, (str, bytes)):
        text = retry_after.decode("latin-1") if isinstance(retry_after, bytes) else retry_after
        return parse_rate_limit_headers({"retry-after": text}).retry_after_s
    if isinstance(retry_after, bool) or not isinstance(retry_after, numbers.Real):
        raise ValueError(f"retry_after must be seconds (a number >= 0) or a Retry-After value, got {retry_after!r}")
    seconds = float(retry_after)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"retry_after must be a finite number of seconds >= 0, got {retry_after!r}")
    return seconds


class ProviderFeedback:
    """``on_rate_limited()`` and ``on_response()``. A limiter class lists it after its native base,
    which provides ``pause()``, ``pauses`` and ``paused_for``; it also defines ``_feedback_label()``."""

    __slots__ = ()

    if TYPE_CHECKING:  # provided by the native core

        def pause(self, seconds: float) -> float: ...

        def _note_rate_limited(self) -> None: ...

        @property
        def pauses(self) -> int: ...

        @property
        def paused_for(self) -> float: ...

        def _wait_buckets(self) -> tuple[list[tuple[int, int, int]], int, int]: ...

    def wait_histogram(self) -> WaitCounts:
        """How long the callers that had to wait waited, as buckets 1/32 of their value wide
        (``omnilimit.waits.WaitCounts``): the histogram behind ``wait_quantile()``, read now. A
        limiter shared through a segment: every process's callers; with Redis: this process's
        admitted callers, each with the time its acquire took (round trips included)."""
        return WaitCounts.from_native(self._wait_buckets())

    def _feedback_label(self) -> str:
        raise NotImplementedError

    def _apply_budget(self, info: RateLimitInfo) -> None:
        """A successful response's remaining budget; the rate limiter caps its bucket with it."""

    def _exhausted_pause(self, info: RateLimitInfo, paced: tuple[str, ...] = ()) -> float:
        """How long a successful response reporting a budget at 0 pauses: for each exhausted
        budget not in `paced` (the dimensions the limiter's own buckets pace), the time one unit
        takes to come back, ``reset / limit`` (OpenAI and Anthropic replenish continuously, and
        their reset is the time until the budget is *full*), or the reset itself when the limit is
        not given. 0.0 when nothing is exhausted."""
        waits = [
            reset / limit if limit else reset
            for name, remaining, reset, limit in (
                ("requests", info.requests_remaining, info.requests_reset_s, info.requests_limit),
                ("tokens", info.tokens_remaining, info.tokens_reset_s, info.tokens_limit),
            )
            if name not in paced and remaining == 0 and reset is not None
        ]
        return max(waits, default=0.0)

    def _follow_limits(self, info: RateLimitInfo) -> None:
        """The provider's own limits (x-ratelimit-limit-*); a rate limiter configured above them
        lowers itself to them."""

    def on_rate_limited(self, retry_after: float | str | None = None, headers: Headers = None) -> float:
        """The provider answered 429: pause the whole limiter once.

        The length is ``retry_after`` (seconds, or a Retry-After header's text) if given, else what
        ``headers`` say (Retry-After, retry-after-ms, or the reset of an exhausted OpenAI /
        Anthropic budget), else ``DEFAULT_PAUSE_S``. A pause already in effect that ends later
        stays. Waiters and newcomers go at the end, each with a small positive jitter. Returns the
        seconds until the pause in effect ends."""
        seconds = _explicit_pause(retry_after)
        self._note_rate_limited()
        if headers is not None:
            info = parse_rate_limit_headers(headers)
            self._follow_limits(info)
            if seconds is None:
                seconds = info.pause_s()
        if seconds is None:
            seconds = DEFAULT_PAUSE_S
            logger.info("429 for %s without a usable retry time: pausing %.1f s", self._feedback_label(), seconds)
        return self._pause_and_log(seconds, "429")

    def on_response(self, status: int, headers: Headers = None) -> float:
        """What a caller runs after every HTTP response. A 429 is ``on_rate_limited(headers=...)``.
        On a 2xx, a rate limiter keeps no more requests and tokens than the provider reports
        remaining (0 included: its buckets then pace the next calls), and a budget at 0 that the
        limiter does not pace itself pauses it for one unit's worth (``_exhausted_pause``). On both, a rate limiter
        configured above the provider's reported per-minute limits (``x-ratelimit-limit-*``)
        lowers itself to them (never raises itself). Other statuses change nothing. Returns the
        seconds until the pause in effect ends (0.0: none)."""
        if isinstance(status, bool) or not isinstance(status, numbers.Integral):
            raise ValueError(f"status must be an HTTP status code (int), got {status!r}")
        if status == 429:
            return self.on_rate_limited(headers=headers)
        if 200 <= status < 300 and headers is not None:
            info = parse_rate_limit_headers(headers)
            self._follow_limits(info)
            self._apply_budget(info)
            seconds = self._exhausted_pause(info)
            if seconds > 0:
                return self._pause_and_log(seconds, f"{status} reporting an exhausted budget")
        return self.paused_for

    def _pause_and_log(self, seconds: float, why: str) -> float:
        before = self.pauses
        in_effect = self.pause(seconds)
        if self.pauses != before:  # this call moved the end: say so once, not once per 429
            logger.warning("%s for %s: pausing for %.3f s", why, self._feedback_label(), in_effect)
        return in_effect


def _common_metrics(limiter: Any) -> dict[str, object]:
    """The metrics() keys both limiter kinds share (their native cores provide the counters).
    ``timed_out`` and ``denied`` come from the same counters (with Redis, this process's refusals:
    Redis counts every host's in one number, ``blocked_count``)."""
    denied = limiter.denied_count
    return {
        "admitted": limiter.total_requests,
        "timed_out": limiter._blocked_here - denied,
        "denied": denied,
        "rate_limited": limiter.rate_limited_count,
        "pauses": limiter.pauses,
        "paused_for": limiter.paused_for,
        "waiting": limiter.waiting,
        "wait_p50_s": limiter.wait_quantile(0.5),
        "wait_p99_s": limiter.wait_quantile(0.99),
        "wait_max_s": limiter.wait_max(),
    }
