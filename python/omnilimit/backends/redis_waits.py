"""Wait-time quantiles for the limiters whose waits happen in Python (the Redis backend)."""

from __future__ import annotations

import collections
import threading


class WaitRecorder:
    """The waits of the latest ``capacity`` admitted callers, for ``wait_quantile``. Thread-safe."""

    def __init__(self, capacity: int = 4096) -> None:
        self._waits: collections.deque[float] = collections.deque(maxlen=capacity)
        self._lock = threading.Lock()

    def record(self, seconds: float) -> None:
        with self._lock:
            self._waits.append(max(0.0, seconds))

    def quantile(self, q: float) -> float:
        """The q-quantile (0 <= q <= 1) of the recorded waits, in seconds; 0.0 when none."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"q must be in [0, 1], got {q!r}")
        with self._lock:
            ordered = sorted(self._waits)
        if not ordered:
            return 0.0
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
