"""The ``omnilimit`` logger, shared by every module of the package, and the throttle that keeps a
limiter's timeout warnings readable."""

from __future__ import annotations

import logging
import math
import threading
import time

logger = logging.getLogger("omnilimit")

TIMEOUT_WARNING_INTERVAL_S = 10.0
"""At most one timeout WARNING per limiter in this many seconds (the first one always)."""


class TimeoutWarnings:
    """The timeout WARNINGs of one limiter. The first timeout is logged with the guide's text;
    after that at most one line per ``TIMEOUT_WARNING_INTERVAL_S``, which says how many more timed
    out since the last line (``... (and 1,234 more in the last 10 s)``). A retry loop that times
    out thousands of times a second thus writes one line every 10 s, not thousands; the exact
    counts stay in ``blocked_count`` and ``metrics()``. Thread-safe."""

    __slots__ = ("_last_logged", "_lock", "_suppressed", "text")

    def __init__(self, text: str = "limit timeout after {}s") -> None:
        self.text = text  # the message, with {} where the timeout goes
        self._lock = threading.Lock()
        self._last_logged: float | None = None  # time.monotonic() of the last line
        self._suppressed = 0  # timeouts since then, not logged

    def message(self, timeout: object) -> str:
        """The message of a timeout after ``timeout`` seconds, as the user wrote them."""
        return self.text.format(shown_timeout(timeout))

    def __call__(self, timeout: object) -> str:
        """A caller waited ``timeout`` seconds in vain: logs it (throttled) and returns the
        message. The native core calls this (its ``on_timeout``)."""
        message = self.message(timeout)
        self.warn(message)
        return message

    def warn(self, message: str) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last_logged
            if last is not None and now - last < TIMEOUT_WARNING_INTERVAL_S:
                self._suppressed += 1
                return
            suppressed, self._suppressed = self._suppressed, 0
            self._last_logged = now
        if suppressed and last is not None:
            message += f" (and {suppressed:,} more in the last {now - last:.0f} s)"
        logger.warning(message)


def shown_timeout(timeout: object) -> str:
    """A timeout as the user wrote it (``60``, ``0.5``, ``120.0``), or rounded to the millisecond
    when it has more decimals (a timeout counted down to a deadline): never a float's full repr."""
    if isinstance(timeout, int):
        return str(timeout)
    try:
        seconds = float(timeout)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(timeout)
    if not math.isfinite(seconds):
        return str(seconds)
    text = repr(seconds)
    if "e" not in text and len(text.partition(".")[2]) <= 3:
        return text
    rounded = f"{seconds:.3f}".rstrip("0").rstrip(".")
    return "<0.001" if rounded == "0" and seconds > 0 else rounded
