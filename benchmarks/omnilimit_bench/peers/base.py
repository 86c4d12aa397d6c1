"""What every peer module shares: the install hint, the key decided on, the shapes a peer is
returned in (``Skipped``, ``RateDecider``, ``AsyncRatePeer``), the window a window limiter is given
for a rate and a burst (``_window``), and the checks of the arguments and of a peer's import."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, NamedTuple

EXTRA = "bench"  # the optional extra that installs the peers: pip install "omnilimit[bench]"
INSTALL_HINT = f"pip install 'omnilimit[{EXTRA}]'"
KEY = "bench"  # the one key every decision is made on


class Skipped(NamedTuple):
    """A peer that could not be built: ``name`` as in ``RateDecider.name`` without the version."""

    name: str  # e.g. "pyrate-limiter"
    reason: str  # e.g. "not installed; pip install 'omnilimit[bench]'" or the import error text


class RateDecider(NamedTuple):
    """One peer, configured; ``decide()`` admits (True) or refuses (False) one request at once."""

    name: str  # the library with its version and, where it has several, the variant
    decide: Callable[[], bool]  # one non-blocking admission decision on one key
    close: Callable[[], None]  # frees background threads and memory (a no-op where there are none)
    call: str = "decide()"  # the library call that decide() makes, for the report
    # decide() for threads deciding on the same limiter at once, where decide() would refuse rather
    # than wait for another thread's decision to finish (pyrate-limiter's lock); None: decide() itself
    decide_in_threads: Callable[[], bool] | None = None
    call_in_threads: str = ""  # the library call that decide_in_threads() makes


class AsyncRatePeer(NamedTuple):
    """One asyncio peer, configured: ``make()`` builds a fresh limiter (one per event loop: these
    libraries bind to the loop that first uses them), to be used as ``async with limiter:``."""

    name: str  # the library with its version
    make: Callable[[], AbstractAsyncContextManager[Any]]
    config: str  # how it was built, for the report


def _nothing() -> None:
    """``close`` of a peer that holds no threads."""


def _round(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded half up, in integers (exact for any size)."""
    return (2 * numerator + denominator) // (2 * denominator)


def _window(per_minute: int, burst: int, units_per_minute: int) -> tuple[int, int]:
    """``(amount, window)``: admit ``amount`` per ``window`` time units, for a window limiter whose
    unit is ``1 / units_per_minute`` minute (60 for seconds, 60_000 for milliseconds).

    A window limiter is not a token bucket: it admits ``amount`` at once and then nothing until the
    window (fixed) or the oldest admission (moving) is ``window`` old. The closest it comes to
    "``burst`` at once, refilling at ``per_minute`` per minute" is ``amount = burst`` over a window of
    ``burst / per_minute`` minutes: the same burst and the same long-run rate, but the refill comes
    in one step per window rather than one request at a time. The window has to be a whole number of
    units, so it is rounded (at least 1 unit) and ``amount`` is then recomputed from the rate: it
    stays ``burst`` whenever the window comes out whole, and is otherwise off from ``burst`` by at
    most half a unit's refill. When a window of ``burst`` is shorter than half a unit (e.g. more than
    ``2 * burst`` per second for limits), the window is one unit and ``amount`` one unit of traffic,
    more than ``burst``: the rate is kept rather than the burst.
    """
    window = max(1, _round(burst * units_per_minute, per_minute))
    amount = max(1, _round(per_minute * window, units_per_minute))
    return amount, window


def _unavailable(module: str) -> str | None:
    """Why ``module`` cannot be imported, or None if it can."""
    try:
        importlib.import_module(module)
    except ImportError as exc:
        if exc.name == module:
            return f"not installed; {INSTALL_HINT}"
        return f"cannot import {module} ({type(exc).__name__}: {exc}); {INSTALL_HINT}"
    except Exception as exc:  # e.g. a release that does not run on this Python
        return f"cannot import {module} ({type(exc).__name__}: {exc})"
    return None


def _check_rate(per_minute: object, burst: object) -> None:
    """ValueError unless both are whole numbers >= 1."""
    if isinstance(per_minute, bool) or not isinstance(per_minute, int) or per_minute < 1:
        raise ValueError(f"per_minute must be a whole number >= 1, not {per_minute!r}")
    if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
        raise ValueError(f"burst must be a whole number >= 1, not {burst!r}")
