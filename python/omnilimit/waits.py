"""How long callers waited, as a histogram: what ``wait_histogram()`` returns.

A native limiter counts the waits of the callers that had to wait in log-linear buckets (32 per
power of two from 1 µs to 4.9 h: ``cpp/include/omnilimit/histogram.hpp``), so each bucket is at
most 1/32 of its value wide. ``WaitCounts`` is a copy of those counts taken at one call, with the
total of the waits and the longest one; ``cumulative(bounds)`` turns them into the counts of a
histogram with fewer, rounder bounds (the exporters' ``omnilimit_wait_seconds``).

A bound that falls inside a bucket splits that bucket's count in proportion to where it falls (the
same linear interpolation ``wait_quantile`` uses): the count at a bound is then exact to within the
waits of that one bucket, which all lie within 1/32 of the bound.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

NS_PER_S = 1e9

# The bounds, in seconds, of the histograms the exporters publish: from a millisecond (a thread
# woken at its instant) to two minutes (the default timeout), with room for the 1-2-5 steps.
EXPORT_BOUNDS_S: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
)


@dataclass(frozen=True)
class WaitCounts:
    """The waits of the callers that had to wait, counted at one instant.

    ``buckets``: the non-empty buckets as ``(lower_s, upper_s, count)``, ascending, each holding
    the waits ``w`` with ``lower_s <= w < upper_s``; ``sum_s``: the total of the waits (each
    truncated to a whole microsecond); ``max_s``: the longest one."""

    buckets: tuple[tuple[float, float, int], ...]
    sum_s: float
    max_s: float

    @classmethod
    def from_native(cls, native: tuple[list[tuple[int, int, int]], int, int]) -> WaitCounts:
        """From a core's ``_wait_buckets()`` (nanoseconds, microseconds)."""
        buckets, sum_us, max_ns = native
        return cls(
            tuple((lo / NS_PER_S, up / NS_PER_S, n) for lo, up, n in buckets),
            sum_us / 1e6,
            max_ns / NS_PER_S,
        )

    @property
    def count(self) -> int:
        """The waits counted."""
        return sum(n for _, _, n in self.buckets)

    def cumulative(self, bounds_s: Sequence[float]) -> list[int]:
        """For each bound (ascending, in seconds), the waits of at most that long (the last
        bound's count may be below ``count``: the rest lie above it). A bound inside a bucket
        takes the bucket's share below it, rounded down. Raises ValueError for bounds that are
        not ascending finite numbers."""
        previous = -math.inf
        for bound in bounds_s:
            if not math.isfinite(bound) or bound <= previous:
                raise ValueError(f"the bounds must be ascending finite numbers, got {list(bounds_s)!r}")
            previous = bound
        counts: list[int] = []
        for bound in bounds_s:
            below = 0
            for lower, upper, n in self.buckets:
                if upper <= bound:
                    below += n
                elif lower <= bound:
                    below += math.floor(n * (bound - lower) / (upper - lower))
                else:
                    break
            counts.append(below)
        return counts
