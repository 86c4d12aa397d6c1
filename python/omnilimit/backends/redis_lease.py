"""LeaseKeeper: a rate limiter in lease mode (``coordination="lease"``) decides every acquire in
its own process, on the native core, at a share of the Redis budget that this process leases.

The limiter is an in-process limiter (no store: ``acquire`` never leaves the native core) whose
rate the keeper sets. One daemon thread per limiter and process renews the lease every
``RENEW_S`` seconds with one round trip (``LEASE_GRANT``): it reports what the process wants and
used, and gets its share back, valid for ``LEASE_S`` seconds. Shares follow demand: a process whose
callers waited or were refused since the last renewal wants the whole capacity; another wants half
as much again as it used (at least ``FLOOR`` of the capacity); the script grants each its
proportional share among the live leases, at most twice its share before (or the equal share),
never more than the others leave free, in whole requests a second when the capacity gives every
process at least one (then no second of the fleet holds more than the capacity's). So the live
leases never sum above the capacity, and one busy process among idle ones gets nearly the whole
budget within a few renewals.

A token budget is leased the same way, beside the requests (the tokens a process used over the
last minute are its report). Each process's local bucket runs at its share with a local burst of
``burst_size`` times its share of the capacity (at least 1; the token burst likewise): in any
window of W seconds the fleet admits at most ``capacity * W / 60 + sum of the local bursts``
plus what changes hands within one renewal (a process gives up a share when it renews, and only
then may another be granted it).

A lease that runs out (Redis unreachable for ``LEASE_S``) hands the decisions to the outage
policy: ``closed`` pauses this process's limiter until a renewal gets through (callers wait up to
their timeout); ``open`` lets it run unlimited; ``local`` runs it at ``local_fraction`` of the
capacity. A 429's ``pause()`` pauses every process at once (published on the limiter's channel,
heard by each process's ``ChangeFeed``), and the renewals carry it while it lasts.
A process that stops renewing (killed, stopped) loses its share when its lease runs out.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from typing import Any

from omnilimit import _core
from omnilimit._log import logger
from omnilimit.backends.redis_changes import ChangeFeed
from omnilimit.backends.redis_leases import owner_id
from omnilimit.backends.redis_link import IDLE_TTL_S, BackendDown, RedisLink, channel_for, keys_for
from omnilimit.spec import check_policy, name_for_key

LEASE_S = 3.0  # a lease's life, from the moment its renewal was sent
RENEW_S = 0.5  # the time between two renewals
FLOOR = 0.01  # of the capacity: what a process that used nothing wants
WANT_MORE = 1.5  # a process whose callers did not wait wants this much more than it used
UNLIMITED = 1e9  # requests per minute: the policy ``open`` once the lease has run out


class LeaseKeeper:
    """One rate limiter's lease, in this process. Thread-safe: the thread renews; ``metrics``,
    ``set_capacity``, ``pause`` and ``close`` may be called from any thread."""

    def __init__(
        self,
        backend: object,
        name: str,
        capacity: float,
        burst: int,
        label: str,
        on_backend_error: str | None = None,
        local_fraction: float | None = None,
        tokens_per_minute: float = 0.0,
        token_burst: int = 1,
    ) -> None:
        self.on_backend_error, self.local_fraction = check_policy(on_backend_error or "closed", local_fraction, True)
        self._link = RedisLink(backend, label)
        self._keys = keys_for("lease", name_for_key(name))
        self._channel = channel_for(name_for_key(name), "lease")
        me = weakref.ref(self)
        self._feed = ChangeFeed(self._link, self._channel, lambda message: _heard(me, message))
        self._label = label
        self.capacity = float(capacity)
        self.burst = burst
        self.token_capacity = float(tokens_per_minute)  # 0: no token budget
        self.token_burst = token_burst
        self.token_share = 0.0
        self.token_wants = 0.0
        self.fleet_tokens_used = 0.0
        self._lock = threading.Lock()
        self._owner = owner_id()
        self._limiter: weakref.ref[Any] | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.share = 0.0  # requests per minute, as last granted
        self.wants = 0.0
        self.live = 0  # live leases, this one included, at the last renewal
        self.fleet_used = 0.0  # what every live lease reported it used (requests per minute)
        self.renewals = 0
        self._expires_at = 0.0  # time.monotonic() when the lease runs out
        self._counted = (0, 0, time.monotonic())  # admitted, refused, when: at the last renewal
        self._on_policy = False
        self._applied = 0.0  # the rate the local bucket runs at
        self._applied_tokens = 0.0  # the token rate of the local token bucket
        _keepers.add(self)

    @property
    def backend(self) -> str:
        return self._link.where

    @property
    def backend_available(self) -> bool:
        return not self._link.down

    def bind(self, limiter: Any) -> None:
        """The limiter exists: the first lease (one round trip; the policy's answer while Redis is
        unreachable), then the renewals."""
        self._limiter = weakref.ref(limiter)
        self._counted = (limiter.total_requests, limiter.blocked_count, time.monotonic())
        self._renew(limiter, first=True)
        self._feed.listen(0.0)  # subscribes in its own thread: another process's pause reaches this one at once
        self._start()

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"omnilimit-lease {self._keys[0]}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        failing = ""
        while not self._stop.wait(RENEW_S):
            limiter = None if self._limiter is None else self._limiter()
            if limiter is None or limiter.closed:
                return
            try:
                self._renew(limiter)
                failing = ""
            except Exception as error:  # a Redis error that is no outage (a key of another type...)
                if str(error) != failing:  # logged once while it lasts; the renewals go on
                    failing = str(error)
                    logger.error("%s: a lease renewal failed: %s: %s", self._label, type(error).__name__, error)
                if time.monotonic() >= self._expires_at:
                    self._apply_policy(limiter)

    def _demand(self, limiter: Any, first: bool) -> tuple[float, float, float, float]:
        """(what this process wants, what it used), in requests per minute since the last renewal,
        then the same in tokens per minute (over the last minute: the core counts no total)."""
        admitted, refused, at = limiter.total_requests, limiter.blocked_count, time.monotonic()
        was_admitted, was_refused, was_at = self._counted
        self._counted = (admitted, refused, at)
        used = (admitted - was_admitted) * 60.0 / max(at - was_at, 1e-3)
        tokens_used = float(limiter.get_current_tpm()) if self.token_capacity else 0.0
        if first:
            return self.capacity * FLOOR, 0.0, self.token_capacity * FLOOR, 0.0
        if limiter.waiting > 0 or refused > was_refused:  # short of its share: it wants all it can get
            return self.capacity, used, self.token_capacity, tokens_used
        tokens_wanted = max(self.token_capacity * FLOOR, tokens_used * WANT_MORE)
        return max(self.capacity * FLOOR, used * WANT_MORE), used, tokens_wanted, tokens_used

    def _renew(self, limiter: Any, first: bool = False) -> None:
        wants, used, tokens_wanted, tokens_used = self._demand(limiter, first)
        sent = time.monotonic()
        args = [repr(self.capacity), self._owner, repr(wants), repr(used), int(LEASE_S * 1e6), IDLE_TTL_S]
        args += [repr(self.token_capacity), repr(tokens_wanted), repr(tokens_used)]
        try:
            reply = self._link.run("LEASE_GRANT", self._keys, args)
        except BackendDown:
            if time.monotonic() >= self._expires_at:
                self._apply_policy(limiter)
            return
        share, live, pause_us, fleet = float(_text(reply[0])), int(reply[1]), int(reply[2]), float(_text(reply[3]))
        token_share, fleet_tokens = float(_text(reply[4])), float(_text(reply[5]))
        with self._lock:
            self.share, self.wants, self.live, self.fleet_used = share, wants, live, fleet
            self.token_share, self.token_wants, self.fleet_tokens_used = token_share, tokens_wanted, fleet_tokens
            self.renewals += 1
            self._expires_at = sent + LEASE_S
            self._on_policy = False
        self._apply(limiter, share, token_share)
        if pause_us > 0:
            _core.RateCore.pause(limiter, pause_us / 1e6)

    def _apply(self, limiter: Any, rate: float, tokens: float | None = None) -> None:
        """Runs the local buckets at ``rate`` requests and ``tokens`` tokens per minute (None: in
        proportion to the requests; a share of 0: as good as nothing, the core needs a positive
        rate), each with its part of the burst. A rate is set only when it changes: a new rate
        re-plans the callers asleep on an instant or queued."""
        none = rate <= 0.0
        rate = max(rate, self.capacity * 1e-9)
        if rate != self._applied:
            _core.RateCore.set_rate(limiter, rate)
            self._applied = rate
        if none:  # not even the burst's one request: an empty bucket (a share later turns it into one interval)
            _core.RateCore.limit_available(limiter, 0)
        local_burst = max(1, int(self.burst * min(rate, self.capacity) / self.capacity))
        if local_burst != limiter.burst:
            _core.RateCore.set_burst(limiter, local_burst)
        if not self.token_capacity:
            return
        fraction = min(rate, self.capacity) / self.capacity
        tokens = max(self.token_capacity * fraction if tokens is None else tokens, self.token_capacity * 1e-9)
        if tokens != self._applied_tokens:
            _core.RateCore.set_tokens_per_minute(limiter, tokens)
            self._applied_tokens = tokens
        local_token_burst = max(1, int(self.token_burst * min(tokens, self.token_capacity) / self.token_capacity))
        if local_token_burst != limiter.token_burst:
            _core.RateCore.set_token_burst(limiter, local_token_burst)

    def _apply_policy(self, limiter: Any) -> None:
        """The lease ran out while Redis is unreachable: the outage policy decides."""
        first = not self._on_policy
        self._on_policy = True
        if self.on_backend_error == "open":
            self._apply(limiter, UNLIMITED, self.token_capacity * UNLIMITED / self.capacity)
        elif self.on_backend_error == "local":  # local_fraction of the capacity, or the last lease
            if self.local_fraction is not None:
                self._apply(limiter, self.capacity * self.local_fraction)
        else:
            self._apply(limiter, 0.0)
            _core.RateCore.pause(limiter, 2 * RENEW_S)  # renewed while Redis stays away
        if first:
            logger.warning(
                "%s: its lease ran out while Redis is unreachable; on_backend_error %r decides until a renewal "
                "gets through",
                self._label,
                self.on_backend_error,
            )

    def set_capacity(self, capacity: float) -> None:
        """A new capacity for the fleet, from this process's next renewal (each process asks with
        the capacity it knows: the latest written wins at each renewal)."""
        self.capacity = float(capacity)

    def set_token_capacity(self, tokens_per_minute: float) -> None:
        """The same for the token budget."""
        self.token_capacity = float(tokens_per_minute)

    def pause(self, seconds: float) -> float | None:
        """Every process pauses for ``seconds`` from its next renewal (this one has already): the
        seconds left of the pause in effect (None: Redis unreachable)."""
        try:
            args = [int(seconds * 1e6), IDLE_TTL_S, self._channel, self._owner]
            return int(self._link.run("LEASE_PAUSE", self._keys, args)) / 1e6
        except BackendDown:
            return None

    def metrics(self) -> dict[str, object]:
        with self._lock:
            return {
                "coordination": "lease",
                "lease_share_rpm": self.share,
                "lease_wants_rpm": self.wants,
                "lease_expires_in_s": max(0.0, self._expires_at - time.monotonic()),
                "lease_renewals": self.renewals,
                "lease_live": self.live,
                "fleet_used_rpm": self.fleet_used,
                **(
                    {
                        "lease_token_share_tpm": self.token_share,
                        "lease_token_wants_tpm": self.token_wants,
                        "fleet_used_tpm": self.fleet_tokens_used,
                    }
                    if self.token_capacity
                    else {}
                ),
                "backend_available": self.backend_available,
                "backend_outages": self._link.outages,
            }

    def close(self) -> None:
        """Stops renewing and gives the lease back: the other processes may be granted it at once."""
        self._stop.set()
        self._feed.stop()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(1.0)  # a renewal in flight would grant the lease again after its return
        with contextlib.suppress(BackendDown):
            self._link.run("LEASE_RETURN", self._keys, [self._owner])

    def after_fork_in_child(self) -> None:
        # The parent's lease is the parent's: the child asks for its own, from nothing.
        self._lock = threading.Lock()
        self._owner = owner_id()
        self._expires_at = 0.0
        limiter = None if self._limiter is None else self._limiter()
        if limiter is None or self._stop.is_set():
            return
        self._apply(limiter, 0.0)
        self._start()


def _heard(keeper: weakref.ref[LeaseKeeper], message: str) -> None:
    """The subscription heard ``pause µs ORIGIN`` from a process (its own already paused)."""
    found = keeper()
    limiter = None if found is None or found._limiter is None else found._limiter()
    kind, _, rest = message.partition(" ")
    if found is None or limiter is None or kind != "pause":
        return
    value, _, origin = rest.partition(" ")
    if origin != found._owner:
        _core.RateCore.pause(limiter, int(value) / 1e6)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


_keepers: weakref.WeakSet[LeaseKeeper] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for keeper in list(_keepers):
        keeper.after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
