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
import os
from typing import Any, NamedTuple

from omnilimit import _core
from omnilimit._log import logger
from omnilimit.backends.redis_link import IDLE_TTL_S, BackendDown, Call, Op, RedisLink, channel_for, keys_for

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

    @property
    def origin(self) -> str:
        """This bucket's id in this process (a forked child's differs), in what it publishes: the
        process that made a change has followed it already and skips its own message."""
        return f"{os.getpid()}:{id(self):x}"

    def configure(self, announce: bool = False) -> Move | None:
        """Writes this bucket's rate and burst for every host; while Redis is unreachable, when it
        returns (``configure_pending``). ``announce``: warns when it replaces another host's.
        Returns how the instants still to come moved (None: the pace did not change)."""
        try:
            reply = self.link.run("RATE_CONFIGURE", self.keys, [*self.args(), self.channel])
        except BackendDown:
            self._pending = True
            return None
        self._pending = False
        interval, burst, *moved = (text(v) for v in reply)
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
        return Move.parse(moved)

    def configure_pending(self) -> None:
        if self._pending:
            self.configure()

    def book(self, deadline: int, count_refusal: bool = True) -> tuple[float, Booking | None]:
        """Books the next instant if it comes by ``deadline`` (the core's clock): (the wait in
        seconds, the booking; None when its wait would have passed the deadline: nothing booked).
        Raises BackendDown."""
        return self.link.drive(self.book_op(deadline, count_refusal))

    def book_op(self, deadline: int, count_refusal: bool = True) -> Op[tuple[float, Booking | None]]:
        max_wait_us = -1 if deadline >= _core.FOREVER_NS else max(0, (deadline - _core.monotonic_ns()) // 1000)
        reply = yield Call("RATE_ACQUIRE", self.keys, [*self.args(), 1, max_wait_us, int(count_refusal)])
        wait_s = int(reply[1]) / 1e6
        if int(reply[0]) != 1:
            return wait_s, None
        return wait_s, Booking(float(text(reply[2])), float(text(reply[3])), wait_s)

    def refund(self, go_at: float) -> None:
        """Gives a booking back, if its time has not come (unreachable: it stays, delaying the
        others one interval)."""
        self.link.drive(self.refund_op(go_at))

    def refund_op(self, go_at: float, how: str = "refund") -> Op[None]:
        with contextlib.suppress(BackendDown):
            yield Call("RATE_REFUND", self.keys, [*self.args(), 1, repr(go_at), self.channel, how])

    def void(self, go_at: float) -> None:
        """Uncounts a booking whose instant came inside a pause, and was not used (the instant is
        spent: the bucket does not move). Unreachable: it stays counted."""
        self.link.drive(self.refund_op(go_at, "void"))

    def cap(self, requests: int) -> None:
        """Keeps at most ``requests`` available now, for every host (unreachable: nothing)."""
        with contextlib.suppress(BackendDown):
            self.link.run("RATE_HOLD", self.keys, [*self.args(), "cap", requests])

    def pause(self, seconds: float) -> float | None:
        """Nobody goes for ``seconds``, on any host (the pause is published for the callers already
        booked): the seconds until the bucket admits again (None: unreachable)."""
        try:
            wait_us = self.link.run(
                "RATE_HOLD", self.keys, [*self.args(), "pause", int(seconds * 1e6), self.channel, self.origin]
            )
        except BackendDown:
            return None
        return int(wait_us) / 1e6

    def latest(self) -> tuple[float, Move | None]:
        """RATE_LATEST: (seconds left of the latest pause, <= 0 for none; the latest move of a new
        rate). Unreachable: (0, None)."""
        return self.link.drive(self.latest_op())

    def latest_op(self) -> Op[tuple[float, Move | None]]:
        try:
            left_us, move = yield Call("RATE_LATEST", self.keys, [])
        except BackendDown:
            return 0.0, None
        return int(left_us) / 1e6, Move.parse(text(move).split(" "))

    def snapshot(self) -> list[Any] | None:
        """RATE_STATS, one round trip (None: unreachable): requests available, the interval (µs),
        the burst, admissions, refusals, admissions in the last minute, the wait of a newcomer (µs)."""
        try:
            return list(self.link.run("RATE_STATS", self.keys, self.args()))
        except BackendDown:
            return None


class Move(NamedTuple):
    """How a new rate moved the instants still to come: made under a configuration counted below
    ``cfg``, an instant at ``at_us`` + d (the server's clock) moved to ``at_us`` + d * ``ratio``."""

    cfg: float
    at_us: float
    ratio: float

    @staticmethod
    def parse(fields: list[str]) -> Move | None:
        """From a script's reply or a ``configure`` message: None when the pace did not change."""
        if len(fields) != 3 or not all(fields):
            return None
        cfg, at_us, ratio = (float(f) for f in fields)
        return Move(cfg, at_us, ratio)


class Booking:
    """An instant a caller booked: ``go_at_us`` on the server's clock, under the configuration
    ``cfg``, ``wait_s`` after the caller's clock read ``booked_ns``. ``instant_us(moves)`` follows the
    moves of the rates set since."""

    __slots__ = ("booked_ns", "cfg", "go_at_us", "wait_s")

    def __init__(self, go_at_us: float, cfg: float, wait_s: float) -> None:
        self.go_at_us = go_at_us
        self.cfg = cfg
        self.wait_s = wait_s
        self.booked_ns = _core.monotonic_ns()

    def instant_us(self, moves: dict[float, Move]) -> float:
        """The instant after every move made since the booking, in their order."""
        at = self.go_at_us
        for cfg in sorted(k for k in moves if k > self.cfg):
            move = moves[cfg]
            if at > move.at_us:
                at = move.at_us + (at - move.at_us) * move.ratio
        return at

    def until_ns(self, instant_us: float) -> int:
        """When the caller may go, on its own clock, for the instant ``instant_us``."""
        return self.booked_ns + int(self.wait_s * 1e9) + int((instant_us - self.go_at_us) * 1000)


def interval_us(rpm: float) -> float:
    """The µs between two requests at `rpm`, at most ``MAX_INTERVAL_US`` (never inf: a rate so slow
    admits one request and then, in practice, nothing, as the in-process limiter does)."""
    interval = 60e6 / float(rpm)
    return interval if interval < MAX_INTERVAL_US else MAX_INTERVAL_US


def text(value: Any) -> str:
    """A script's reply item as text."""
    return value.decode() if isinstance(value, bytes) else str(value)
