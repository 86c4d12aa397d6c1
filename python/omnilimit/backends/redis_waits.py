"""Wait-time quantiles for the limiters whose waits happen in Python (the Redis backend)."""

from __future__ import annotations

import collections
import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from omnilimit import _core


class WaitRecorder:
    """The waits of the latest ``capacity`` admitted callers, for ``wait_quantile``, and the
    longest wait of all, for ``wait_max``. Thread-safe. The quantiles are exact samples (the
    nearest rank, as the native limiters' histogram defines them), so never above the maximum."""

    def __init__(self, capacity: int = 4096) -> None:
        self._waits: collections.deque[float] = collections.deque(maxlen=capacity)
        self.histogram = _core.WaitHistogram()  # every wait, for wait_histogram() (lock-free)
        self._max = 0.0
        self._lock = threading.Lock()

    def record(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.histogram.record(round(seconds * 1e9))
        with self._lock:
            self._waits.append(seconds)
            self._max = max(self._max, seconds)

    def quantile(self, q: float) -> float:
        """The q-quantile (0 < q <= 1) of the recorded waits, in seconds: the smallest wait that
        at least ``q`` of them do not exceed (0.0 when none). Raises ValueError for another q."""
        if not 0.0 < q <= 1.0:
            raise ValueError(f"q must be in (0, 1], got {q!r}")
        with self._lock:
            ordered = sorted(self._waits)
        if not ordered:
            return 0.0
        rank = math.ceil(q * len(ordered) - 1e-9)  # 1-based; 1e-9: 0.07 * 100 is 7.000000000000001
        return ordered[min(len(ordered), max(1, rank)) - 1]

    def maximum(self) -> float:
        """The longest wait recorded (over all of them, not only the latest), in seconds; 0.0 when none."""
        with self._lock:
            return self._max


class ProcessWaits:
    """The figures a Redis store keeps in this process, not in Redis: the callers waiting now
    (``waiting``) and the waits of the admitted ones (``wait_quantile``, ``wait_max``).
    Thread-safe."""

    __slots__ = ("_hook", "_lock", "_threshold_s", "now", "recorder")

    FIGURES = frozenset({"waiting", "wait_quantile", "wait_max", "wait_buckets"})

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0  # callers waiting now
        self.recorder = WaitRecorder()
        self._hook: Callable[[float], object] | None = None  # watch()
        self._threshold_s = 0.0

    def watch(self, hook: Callable[[float], object] | None, threshold_s: float) -> None:
        """Calls ``hook(seconds)`` after each admitted caller that waited at least ``threshold_s``."""
        self._hook, self._threshold_s = hook, threshold_s

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Counts the caller in ``waiting`` for the block."""
        with self._lock:
            self.now += 1
        try:
            yield
        finally:
            with self._lock:
                self.now -= 1

    def admitted(self, started: float) -> None:
        """A caller that began to wait at ``started`` (``time.monotonic()``) may go now."""
        seconds = time.monotonic() - started
        self.recorder.record(seconds)
        hook = self._hook
        if hook is not None and seconds >= self._threshold_s:
            hook(seconds)  # WithStore.watch_waits gives a hook that logs its own failures

    def figure(self, name: str, *args: Any) -> Any:
        """One of ``FIGURES``, with its arguments (``wait_quantile``'s q)."""
        if name == "waiting":
            return self.now
        if name == "wait_quantile":
            return self.recorder.quantile(*args)
        if name == "wait_buckets":
            return self.recorder.histogram.buckets()
        return self.recorder.maximum()
