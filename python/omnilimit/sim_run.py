"""The run of ``omnilimit simulate``: the worker threads, each taking the next call of the run through
the next role, in turn (acquire the role's limiter, call its provider's simulated API key, release;
retry after a 429), the counters they keep, the progress line, and ``_Quiet``, which keeps the
limiters' timeout warnings off the terminal (the run counts the timeouts)."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from omnilimit._log import logger
from omnilimit.combined import CombinedLimiter
from omnilimit.concurrency import ConcurrencyLimiter
from omnilimit.manager import ProviderRateLimitManager
from omnilimit.rate import RateLimiter
from omnilimit.sim_provider import SimulatedProvider
from omnilimit.sim_setup import Options

MAX_ATTEMPTS = 3  # a call and its retries after 429s
ACQUIRE_TIMEOUT_S = 120.0  # OmniGen's acquire timeout, at real speed


@dataclass
class _RoleTally:
    calls: int = 0
    completed: int = 0
    timeouts: int = 0
    rate_limited: int = 0
    failed: int = 0
    wait_s: float = 0.0
    latency_s: float = 0.0


@dataclass
class _Run:
    """The counters the workers update (under ``lock``)."""

    roles: dict[str, _RoleTally]
    lock: threading.Lock = field(default_factory=threading.Lock)
    started: int = 0  # calls taken by the workers
    finished: int = 0


def _acquire(limiter: Any, timeout: float, tokens: int) -> bool:
    if isinstance(limiter, ConcurrencyLimiter):
        return bool(limiter.acquire(timeout=timeout))
    return bool(limiter.acquire(timeout=timeout, tokens=tokens if limiter.tpm is not None else 0))


def _finish(limiter: Any, tokens: int) -> None:
    if isinstance(limiter, RateLimiter):
        limiter.record_request(tokens=tokens if limiter.tpm is not None else None)
    elif isinstance(limiter, CombinedLimiter):
        limiter.release(tokens=tokens if limiter.tpm is not None else None)
    else:
        limiter.release()


def _worker(
    manager: ProviderRateLimitManager,
    roles: list[str],
    providers: Mapping[str, SimulatedProvider],
    run: _Run,
    options: Options,
    speedup: float,
    offset: int,
) -> None:
    turn = offset  # workers start at different roles, as conversations are at different turns
    while True:
        with run.lock:
            if run.started >= options.requests:
                return
            run.started += 1
        role = roles[turn % len(roles)]
        turn += 1
        limiter = manager.limiter_for(role)
        tally = run.roles[role]
        outcome = _call(limiter, providers[role], options, speedup, tally, run.lock)
        with run.lock:
            tally.calls += 1
            if outcome == "completed":
                tally.completed += 1
            elif outcome == "timeout":
                tally.timeouts += 1
            else:
                tally.failed += 1
            run.finished += 1


def _call(
    limiter: Any, provider: SimulatedProvider, options: Options, speedup: float, tally: _RoleTally, lock: threading.Lock
) -> str:
    """One call of the run, with its retries: ``completed``, ``timeout`` (no permit within the
    acquire timeout) or ``failed`` (429 on every attempt)."""
    for _ in range(MAX_ATTEMPTS):
        started = time.monotonic()
        if not _acquire(limiter, ACQUIRE_TIMEOUT_S / speedup, options.tokens):
            return "timeout"
        waited = time.monotonic() - started
        try:
            ok, seconds = provider.call(options.tokens)
        finally:
            _finish(limiter, options.tokens)
        with lock:
            tally.wait_s += waited
            if ok:
                tally.latency_s += seconds
            else:
                tally.rate_limited += 1
        if ok:
            return "completed"
        time.sleep(seconds)  # the provider's retry-after
    return "failed"


def _progress(run: _Run, total: int, speedup: float, started: float, done: threading.Event) -> None:
    width = 30
    while not done.wait(0.1):
        with run.lock:
            finished = run.finished
            rate_limited = sum(t.rate_limited for t in run.roles.values())
        filled = int(width * finished / max(1, total))
        elapsed = (time.monotonic() - started) * speedup
        sys.stderr.write(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {finished}/{total} calls, {rate_limited} x 429, "
            f"{elapsed:,.0f} s simulated"
        )
        sys.stderr.flush()
    sys.stderr.write("\r" + " " * (width + 60) + "\r")
    sys.stderr.flush()


class _Quiet:
    """Raises the omnilimit logger's level to ERROR for the block."""

    def __enter__(self) -> None:
        self._level = logger.level
        logger.setLevel(logging.ERROR)

    def __exit__(self, *exc_info: object) -> None:
        logger.setLevel(self._level)
