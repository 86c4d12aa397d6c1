"""The permits one process holds on one Redis concurrency limiter (``Keeper``): which owner holds
which (a Redis lease, or the outage policy's ``local`` / ``open``), the keeper thread that renews
the leases every third of a lease while calls run and listens on the limiter's channel (handing
each published waiter id to ``redis_wakeups``), and what a forked child does with them (it holds
none of its parent's).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import threading
import time
import weakref
from typing import Any

from omnilimit import _async
from omnilimit._log import logger
from omnilimit.backends.redis_link import RETRY_S, BackendDown, Call, RedisLink
from omnilimit.backends.redis_wakeups import Wakeups

HEARTBEAT_S = 3.0  # a waiter that has not looked for this long leaves the line
REDIS = "redis"  # where a held permit came from: a Redis lease ...
LOCAL = "local"  # ... the local fallback (policy local) ...
OPEN = "open"  # ... or nowhere (policy open)

_counter = itertools.count()


def owner_id() -> str:
    """A new owner id, unique across hosts and processes: host:pid:counter:random."""
    host = socket.gethostname().replace(" ", "_")  # ids travel space-separated in messages
    return f"{host}:{os.getpid()}:{next(_counter)}:{os.urandom(4).hex()}"


class Keeper:
    """One limiter's permits held by this process, its lease renewals and its channel subscriber:
    one daemon thread, started on first use, stopped when the limiter is closed or collected."""

    def __init__(self, link: RedisLink, keys: list[str], channel: str, lease_s: float, args: list[Any]) -> None:
        self.link = link
        self.keys = keys
        self.channel = channel
        self.lease_s = lease_s
        self.args = args  # [lease_us, max, ttl_s], the scripts' first arguments (max updated in place)
        self.wakeups = Wakeups()
        self.lock = threading.Lock()
        self.held: dict[str, str] = {}  # owner id -> REDIS | LOCAL | OPEN, oldest first
        self.mine = threading.local()  # .owners: the ids this thread acquired, latest last
        self.listening = threading.Event()
        self._wanted_listening = False
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._renew_now = False  # set by renew_soon()
        self._poke = threading.Event()  # wakes the thread when it has no subscription to wait on

    def run(self, script: str, owner: str = "", *extra: Any) -> Any:
        """One script of this limiter (one round trip); raises BackendDown."""
        return self.link.run(*self.call(script, owner, *extra))

    def call(self, script: str, owner: str = "", *extra: Any) -> Call:
        """What ``run`` runs, for an operation (``Op``) to yield."""
        return Call(script, self.keys, [*self.args, owner, self.channel, int(HEARTBEAT_S * 1e6), *extra])

    # ---- permits held ----------------------------------------------------------------------------

    def hold(self, owner: str, kind: str) -> None:
        with self.lock:
            self.held[owner] = kind
        owners = getattr(self.mine, "owners", None)
        if owners is None:
            owners = self.mine.owners = []
        owners.append(owner)
        if kind == REDIS:
            self.start()

    def take(self) -> tuple[str, str] | None:
        """A permit to release: this thread's latest, else the process's oldest (a permit taken in
        one thread may be released in another). None when none is held."""
        owners = getattr(self.mine, "owners", None) or []
        with self.lock:
            while owners:
                owner = owners.pop()
                kind = self.held.pop(owner, None)
                if kind is not None:
                    return owner, kind
            if not self.held:
                return None
            owner = next(iter(self.held))
            return owner, self.held.pop(owner)

    # ---- the thread --------------------------------------------------------------------------------

    def start(self) -> None:
        with self.lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"omnilimit-redis {self.keys[0]}", daemon=True)
            self._thread.start()

    def listen(self, wait_s: float) -> bool:
        """Makes sure the subscriber runs; waits up to ``wait_s`` for the subscription to be
        confirmed the first time. Returns whether it had to start (the caller should try again:
        a release may have come before the subscription)."""
        if self.listening.is_set():
            return False
        self._want_listening()
        self.listening.wait(wait_s)
        return True

    async def listen_async(self, wait_s: float) -> bool:
        """``listen`` for a coroutine: waits on the loop."""
        if self.listening.is_set():
            return False
        self._want_listening()
        await _async.event_set(self.listening, wait_s)
        return True

    def _want_listening(self) -> None:
        self._wanted_listening = True
        self._poke.set()
        self.start()

    def stop(self) -> None:
        self._stop.set()
        self._poke.set()
        self.wakeups.wake_all()

    def renew_soon(self) -> None:
        self._renew_now = True
        self._poke.set()

    def after_fork_in_child(self) -> None:
        # The parent's permits are the parent's; this process holds none, runs no thread yet.
        self.lock = threading.Lock()
        self.held = {}
        self.mine = threading.local()
        self.listening = threading.Event()
        self._thread = None
        self._stop = threading.Event()
        self._poke = threading.Event()
        self.wakeups = Wakeups()

    def _run(self) -> None:
        pubsub = None
        next_renew = time.monotonic() + self.lease_s / 3
        unreachable = self.link.unreachable_types
        while not self._stop.is_set():
            if self._wanted_listening and pubsub is None:
                try:
                    pubsub = self.link.client.pubsub()
                    pubsub.subscribe(self.channel)
                except unreachable as error:
                    self._lost(pubsub, error)
                    pubsub = None
                    continue
            timeout = max(0.0, min(next_renew - time.monotonic(), 0.25))
            if pubsub is not None:
                try:
                    message = pubsub.get_message(timeout=timeout)
                except unreachable as error:
                    self._lost(pubsub, error)
                    pubsub = None
                    continue
                if message is not None:
                    if message["type"] == "subscribe":
                        self.listening.set()
                    elif message["type"] == "message":
                        data = message["data"]
                        self.wakeups.wake((data.decode() if isinstance(data, bytes) else str(data)).split())
            else:
                self._poke.wait(timeout)
                self._poke.clear()
            if self._renew_now or time.monotonic() >= next_renew:
                self._renew_now = False
                self._renew()
                next_renew = time.monotonic() + self.lease_s / 3
        if pubsub is not None:
            with contextlib.suppress(Exception):
                pubsub.close()

    def _lost(self, pubsub: Any, error: BaseException) -> None:
        """The subscription broke: every waiter tries again (and meets the outage, or a free
        permit); the subscriber comes back after RETRY_S."""
        self.listening.clear()
        if pubsub is not None:
            with contextlib.suppress(Exception):
                pubsub.close()
        self.link.unreachable(error)
        self.wakeups.wake_all()
        self._stop.wait(RETRY_S)

    def _renew(self) -> None:
        with self.lock:
            owners = [owner for owner, kind in self.held.items() if kind == REDIS]
        missing = 0
        for start in range(0, len(owners), 500):
            try:
                missing += int(self.run("SEM_RENEW", "", *owners[start : start + 500]))
            except BackendDown:
                return  # the leases run on; renewed at the next turn after Redis returns
        if missing:
            logger.warning(
                "%s: %d lease(s) of calls still running were missing on Redis (restarted, or taken back while "
                "this process stalled): put back",
                self.keys[0],
                missing,
            )


keepers: weakref.WeakSet[Keeper] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for keeper in list(keepers):
        keeper.after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
