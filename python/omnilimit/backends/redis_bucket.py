"""RedisBucket: the store of a Redis rate limiter, one GCRA kept in Redis by the scripts of
``redis_lua``: its configuration (the latest one written wins, on every host), bookings and their
refunds, caps and pauses, and the snapshot of its state. One round trip per call; the waiting and
the policy around it (timeouts, standing by, the outage policy, counters) are the limiter's
(``redis_rate``).

Times in Redis are µs since the epoch as doubles, exact below 2**53 (until the year 2255); the
interval is capped at ``MAX_INTERVAL_US`` so that now + the interval stays below it too.
"""

from __future__ import annotations

import contextlib
from typing import Any

from omnilimit import _core
from omnilimit._log import logger
from omnilimit.backends.redis_link import IDLE_TTL_S, BackendDown, RedisLink, channel_for, keys_for

MAX_INTERVAL_US = 2.0**52  # about 142 years


class RedisBucket:
    """One rate limiter's bucket in Redis, named by ``key_name``, at ``rpm`` with ``burst``."""

    __slots__ = ("_pending", "burst", "channel", "keys", "label", "link", "rpm")

    def __init__(self, link: RedisLink, key_name: str, rpm: int | float, burst: int, label: str) -> None:
        self.link = link
        self.keys = keys_for("rate", key_name)
        self.channel = channel_for(key_name, "rate")  # where the scripts announce changes
        self.rpm = rpm  # as given: shown as given
        self.burst = burst
        self.label = label  # the limiter, for the log
        self._pending = False  # a configuration to write when Redis returns

    def args(self) -> list[Any]:
        return [repr(interval_us(self.rpm)), self.burst, IDLE_TTL_S]

    def configure(self, announce: bool = False) -> None:
        """Writes this bucket's rate and burst for every host; while Redis is unreachable, when it
        returns (``configure_pending``). ``announce``: warns when it replaces another host's."""
        try:
            before = self.link.run("RATE_CONFIGURE", self.keys, [*self.args(), self.channel])
        except BackendDown:
            self._pending = True
            return
        self._pending = False
        interval, burst = (text(v) for v in before)
        if announce and interval and (float(interval) != interval_us(self.rpm) or int(burst) != self.burst):
            logger.warning(
                "%s: the shared limiter on Redis ran at %.6g RPM with burst %s: it now runs at "
                "this limiter's %s RPM with burst %d, on every host (the latest configuration wins)",
                self.label,
                60e6 / float(interval),
                burst,
                self.rpm,
                self.burst,
            )

    def configure_pending(self) -> None:
        if self._pending:
            self.configure()

    def book(self, deadline: int, count_refusal: bool = True) -> tuple[bool, float, str]:
        """Books the next instant if it comes by ``deadline`` (the core's clock): (booked, the wait
        in seconds, the instant booked, to refund it by). Raises BackendDown."""
        max_wait_us = -1 if deadline >= _core.FOREVER_NS else max(0, (deadline - _core.monotonic_ns()) // 1000)
        reply = self.link.run("RATE_ACQUIRE", self.keys, [*self.args(), 1, max_wait_us, int(count_refusal)])
        booked = int(reply[0]) == 1
        return booked, int(reply[1]) / 1e6, text(reply[2]) if booked else ""

    def refund(self, go_at: str) -> None:
        """Gives a booking back, if its time has not come (unreachable: it stays, delaying the
        others one interval)."""
        with contextlib.suppress(BackendDown):
            self.link.run("RATE_REFUND", self.keys, [*self.args(), 1, go_at, self.channel])

    def cap(self, requests: int) -> None:
        """Keeps at most ``requests`` available now, for every host (unreachable: nothing)."""
        with contextlib.suppress(BackendDown):
            self.link.run("RATE_HOLD", self.keys, [*self.args(), "cap", requests])

    def pause(self, seconds: float) -> float | None:
        """Nobody goes for ``seconds``: the seconds until the bucket admits again (None: unreachable)."""
        try:
            wait_us = self.link.run("RATE_HOLD", self.keys, [*self.args(), "pause", int(seconds * 1e6)])
        except BackendDown:
            return None
        return int(wait_us) / 1e6

    def snapshot(self) -> list[Any] | None:
        """RATE_STATS, one round trip (None: unreachable): requests available, the interval (µs),
        the burst, admissions, refusals, admissions in the last minute, the wait of a newcomer (µs)."""
        try:
            return list(self.link.run("RATE_STATS", self.keys, self.args()))
        except BackendDown:
            return None


def interval_us(rpm: float) -> float:
    """The µs between two requests at `rpm`, at most ``MAX_INTERVAL_US`` (never inf: a rate so slow
    admits one request and then, in practice, nothing, as the in-process limiter does)."""
    interval = 60e6 / float(rpm)
    return interval if interval < MAX_INTERVAL_US else MAX_INTERVAL_US


def text(value: Any) -> str:
    """A script's reply item as text."""
    return value.decode() if isinstance(value, bytes) else str(value)
