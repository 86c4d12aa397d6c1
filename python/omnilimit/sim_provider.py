"""SimulatedProvider: an in-process stand-in for an LLM API key, for ``omnilimit simulate``.

It enforces what providers enforce, at the instant a request arrives, under one lock:

- **requests per minute** over sliding slices of ``slice_s`` (1 s at real speed): a per-minute
  limit L admits at most ``ceil(L / 60)`` requests whose arrival fell in the last slice (the
  arrivals of ``(now - slice_s, now]``), so the cap holds for every slice, not just whole ones;
- **tokens per minute** over the same slices (at most ``ceil(tpm / 60)`` tokens, a request's
  tokens charged at its arrival);
- **concurrent requests**: at most ``concurrency`` in flight.

A request over a limit is answered at once with a 429 and a retry-after (the time until the
slice would admit it; a small constant for the concurrency limit); it counts against nothing. An
admitted request holds its slot for a latency drawn from a log-normal distribution around
``latency_s`` (``LATENCY_SIGMA``: most calls within a factor of 1.5 of the mean, a long tail, as
LLM calls are). ``None`` for a limit means no such limit. Thread-safe.
"""

from __future__ import annotations

import collections
import math
import random
import threading
import time
from dataclasses import dataclass, field

LATENCY_SIGMA = 0.35  # of the latency's logarithm
CONCURRENCY_RETRY_S = 0.05  # retry-after of a request refused for the concurrency limit, at real speed


@dataclass
class ProviderCounts:
    """What the provider saw. ``refused_by``: 429s by the limit that refused them."""

    admitted: int = 0
    refused: int = 0
    refused_by: dict[str, int] = field(default_factory=lambda: {"rpm": 0, "tpm": 0, "concurrency": 0})
    most_in_flight: int = 0
    first_arrival: float | None = None
    last_arrival: float | None = None
    latency_total_s: float = 0.0


class SimulatedProvider:
    """One API key's limits. ``call(tokens)`` returns ``(True, latency)`` after the call's latency,
    or ``(False, retry_after)`` at once for a 429; times in seconds on ``time.monotonic()``."""

    def __init__(
        self,
        rpm: float | None,
        tpm: float | None = None,
        concurrency: int | None = None,
        *,
        latency_s: float,
        slice_s: float = 1.0,
        seed: int = 0,
    ) -> None:
        if latency_s <= 0 or slice_s <= 0:
            raise ValueError("latency_s and slice_s must be > 0")
        self.requests_per_slice = None if rpm is None else math.ceil(rpm / 60)
        self.tokens_per_slice = None if tpm is None else math.ceil(tpm / 60)
        self.concurrency = concurrency
        self.slice_s = slice_s
        self.latency_s = latency_s
        self._mu = math.log(latency_s) - LATENCY_SIGMA**2 / 2  # so that the mean is latency_s
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._arrivals: collections.deque[tuple[float, int]] = collections.deque()  # (time, tokens)
        self._tokens_in_slice = 0
        self._in_flight = 0
        self.counts = ProviderCounts()

    def call(self, tokens: int = 0) -> tuple[bool, float]:
        with self._lock:
            now = time.monotonic()
            while self._arrivals and self._arrivals[0][0] <= now - self.slice_s:
                self._tokens_in_slice -= self._arrivals.popleft()[1]
            refusal = self._refusal(now, tokens)
            if refusal is not None:
                limit, retry_after = refusal
                self.counts.refused += 1
                self.counts.refused_by[limit] += 1
                return False, retry_after
            self._arrivals.append((now, tokens))
            self._tokens_in_slice += tokens
            self._in_flight += 1
            counts = self.counts
            counts.admitted += 1
            counts.most_in_flight = max(counts.most_in_flight, self._in_flight)
            if counts.first_arrival is None:
                counts.first_arrival = now
            counts.last_arrival = now
            latency = self._rng.lognormvariate(self._mu, LATENCY_SIGMA)
            counts.latency_total_s += latency
        try:
            time.sleep(latency)
        finally:
            with self._lock:
                self._in_flight -= 1
        return True, latency

    def _refusal(self, now: float, tokens: int) -> tuple[str, float] | None:
        """(the limit, seconds until it would admit) for a request arriving now, or None."""
        if self.concurrency is not None and self._in_flight >= self.concurrency:
            return "concurrency", CONCURRENCY_RETRY_S * self.slice_s
        if self.requests_per_slice is not None and len(self._arrivals) >= self.requests_per_slice:
            oldest = self._arrivals[len(self._arrivals) - self.requests_per_slice][0]
            return "rpm", oldest + self.slice_s - now
        if self.tokens_per_slice is not None and self._tokens_in_slice + tokens > self.tokens_per_slice:
            freed, at = 0, now
            for arrival, spent in self._arrivals:  # oldest first: until enough tokens leave the slice
                freed += spent
                at = arrival
                if self._tokens_in_slice - freed + tokens <= self.tokens_per_slice:
                    break
            return "tpm", max(0.0, at + self.slice_s - now)
        return None
