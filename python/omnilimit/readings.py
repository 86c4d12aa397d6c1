"""What the exporters publish about each limiter, read through the public API at collection time.

``omnilimit.telemetry`` (OpenTelemetry), ``omnilimit.prometheus`` and ``omnilimit top`` publish the
same figures; this module reads them once per limiter and collection: ``metrics()`` (the counters
the native cores keep anyway) and ``wait_histogram()``. Nothing is added to ``acquire()``: a
limiter that is never collected costs what it cost before.

Which figures are whose. A limiter in this process: every figure is this process's. Shared through
a segment (``shm``): the segment's counters are every process's on the host (the ``fleet``), except
a rate limiter's ``waiting`` (callers asleep in this process). With Redis (``strict``): admissions,
slots held, the current rate and the pause are every host's (one read of Redis); refusals (timed out
and denied: Redis counts every host's in one number), 429s, pauses declared, tokens, the wait
histogram and a rate limiter's ``waiting`` are this process's; a concurrency
limiter's ``waiting`` is the line across every host. In lease mode every figure is this process's
(its share of the budget decides in process). ``Reading.scope`` says it per figure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from omnilimit.combined import CombinedLimiter
from omnilimit.concurrency import ConcurrencyLimiter
from omnilimit.rate import RateLimiter
from omnilimit.waits import WaitCounts

Limiter = ConcurrencyLimiter | RateLimiter | CombinedLimiter
Scope = Literal["fleet", "process"]

RESULTS = ("admitted", "timed_out", "denied", "rate_limited")
"""The results ``omnilimit.requests`` counts: admitted, refused at the timeout, refused without a
wait (``timeout=0``, ``fail_fast``), and 429s reported by the provider."""


@dataclass(frozen=True)
class Figure:
    """One figure of ``Reading`` as both exporters publish it (the counters by result and by
    token state, and the wait histogram, have shapes of their own)."""

    field: str  # the Reading attribute
    otel: str | None  # the OpenTelemetry instrument (None: Prometheus only)
    instrument: Literal["counter", "up_down_counter", "gauge"]
    prometheus: str  # the Prometheus metric (counters without their _total)
    unit: str  # OpenTelemetry's unit
    description: str


FIGURES = (
    Figure("waiting", "omnilimit.waiting", "up_down_counter", "omnilimit_waiting", "{request}", "Callers waiting now."),
    Figure(
        "active", "omnilimit.active", "up_down_counter", "omnilimit_active", "{request}", "Concurrency slots held now."
    ),
    Figure(
        "max_concurrent",
        "omnilimit.limit.concurrency",
        "gauge",
        "omnilimit_limit_concurrency",
        "{request}",
        "The configured maximum of calls at once.",
    ),
    Figure(
        "rpm_limit",
        "omnilimit.limit.requests",
        "gauge",
        "omnilimit_limit_requests_per_minute",
        "{request}/min",
        "The configured requests per minute.",
    ),
    Figure(
        "tpm_limit",
        "omnilimit.limit.tokens",
        "gauge",
        "omnilimit_limit_tokens_per_minute",
        "{token}/min",
        "The configured tokens per minute.",
    ),
    Figure(
        "current_rpm",
        "omnilimit.rate.requests",
        "gauge",
        "omnilimit_rate_requests_per_minute",
        "{request}/min",
        "Requests in the last 60 seconds.",
    ),
    Figure(
        "current_tpm",
        "omnilimit.rate.tokens",
        "gauge",
        "omnilimit_rate_tokens_per_minute",
        "{token}/min",
        "Tokens recorded in the last 60 seconds.",
    ),
    Figure(
        "pauses",
        "omnilimit.pauses",
        "counter",
        "omnilimit_pauses",
        "{pause}",
        "Pauses declared (a 429, an exhausted budget, pause()).",
    ),
    Figure(
        "paused_for",
        "omnilimit.pause.remaining",
        "gauge",
        "omnilimit_pause_remaining_seconds",
        "s",
        "Seconds left in the pause in effect (0: none).",
    ),
    Figure(
        "wait_p99_s",
        None,
        "gauge",
        "omnilimit_wait_p99_seconds",
        "s",
        "The 99th percentile of the admitted callers' waits (0 for those that did not wait), within 1/32.",
    ),
)
"""The figures both exporters publish one value of per limiter (docs/guide/observability.md)."""

REQUESTS_DESCRIPTION = (
    "Acquires by result: admitted, timed_out, denied (refused without a wait), rate_limited (429s the provider "
    "answered)."
)
TOKENS_DESCRIPTION = "Tokens reserved by admitted callers (admitted) and recorded as used (settled)."
WAITS_DESCRIPTION = "How long the callers that had to wait waited before they were admitted."


def optional_module(module: str, extra: str, user: str) -> Any:
    """``module`` imported, or a ModuleNotFoundError that says which extra brings it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        top = module.split(".")[0]
        if error.name is not None and error.name.split(".")[0] == top:
            raise ModuleNotFoundError(
                f"{user} needs {top}: pip install 'omnilimit[{extra}]'", name=error.name
            ) from error
        raise


# The figures whose scope depends on the backend (the others are the configured limits).
_SHARED_IN_REDIS = frozenset({"admitted", "active", "current_rpm", "paused_for"})


@dataclass(frozen=True)
class Reading:
    """One limiter's figures at one collection. ``None``: the figure does not apply to this kind
    (``active`` of a rate limiter, ``tpm_limit`` without a token budget)."""

    key: str
    kind: Literal["concurrency", "rate", "combined"]
    backend: Literal["memory", "shm", "redis", "redis-lease"]
    requests: dict[str, int]  # by result (RESULTS)
    waiting: int
    active: int | None
    max_concurrent: int | None
    rpm_limit: float | None
    tpm_limit: float | None
    current_rpm: int
    current_tpm: int | None
    tokens_admitted: int | None
    tokens_settled: int | None
    pauses: int
    paused_for: float
    wait_p99_s: float  # of the admitted callers (those that did not wait count as 0), within 1/32
    waits: dict[str, WaitCounts] = field(default_factory=dict)  # by part: "concurrency", "rate"

    def scope(self, figure: str) -> Scope:
        """``fleet`` when ``figure`` (a field name, or a result of ``requests``) counts every
        process sharing the limiter, ``process`` when only this one."""
        if self.backend == "shm":
            return "process" if figure == "waiting" and self.kind != "concurrency" else "fleet"
        if self.backend == "redis":
            if figure == "waiting":
                return "fleet" if self.kind == "concurrency" else "process"
            return "fleet" if figure in _SHARED_IN_REDIS else "process"
        return "process"


def limiters_of(source: object) -> dict[str, Limiter]:
    """``{key: limiter}`` from a ``ProviderRateLimitManager`` (its limiters now: call again to see
    those built since), a limiter, an iterable of limiters (keyed by their names) or a mapping of
    keys to limiters. Raises TypeError for anything else, ValueError for two limiters of one name
    (pass a mapping to key them)."""
    from omnilimit.manager import ProviderRateLimitManager  # the manager imports no tool

    if isinstance(source, ProviderRateLimitManager):
        return source.limiters
    if isinstance(source, (ConcurrencyLimiter, RateLimiter, CombinedLimiter)):
        return {_name(source): source}
    if isinstance(source, Mapping):
        for key, limiter in source.items():
            _check(limiter, f"the limiter of key {key!r}")
        return {str(key): limiter for key, limiter in source.items()}
    if isinstance(source, Iterable) and not isinstance(source, (str, bytes)):
        keyed: dict[str, Limiter] = {}
        for limiter in source:
            _check(limiter, "every item")
            key = _name(limiter)
            if key in keyed and keyed[key] is not limiter:
                raise ValueError(f"two limiters are named {key!r}: pass a mapping {{key: limiter}} to tell them apart")
            keyed[key] = limiter
        return keyed
    raise TypeError(
        "expected a ProviderRateLimitManager, a limiter, an iterable of limiters or a mapping of keys to "
        f"limiters, got {type(source).__name__}"
    )


def read(key: str, limiter: Limiter) -> Reading:
    """The figures of ``limiter`` now (one ``metrics()`` call: one Redis round trip for a Redis
    limiter)."""
    if isinstance(limiter, CombinedLimiter):
        return _read_combined(key, limiter)
    metrics = limiter.metrics()
    is_rate = isinstance(limiter, RateLimiter)
    waiting = metrics["waiting"]
    if not is_rate and metrics.get("waiting_everywhere") is not None:
        waiting = metrics["waiting_everywhere"]
    return Reading(
        key=key,
        kind="rate" if is_rate else "concurrency",
        backend=backend_of(limiter),
        requests={result: int(_number(metrics[result])) for result in RESULTS},
        waiting=int(_number(waiting)),
        active=None if is_rate else int(_number(metrics["active_calls"])),
        max_concurrent=None if is_rate else int(_number(metrics["max_concurrent"])),
        rpm_limit=float(_number(metrics["rpm_limit"])) if is_rate else None,
        tpm_limit=_optional(metrics.get("tpm_limit")),
        current_rpm=int(_number(metrics["current_rpm"] if is_rate else limiter.get_current_rpm())),
        current_tpm=_optional_int(metrics.get("current_tpm")),
        tokens_admitted=_optional_int(metrics.get("tokens_admitted")),
        tokens_settled=_optional_int(metrics.get("tokens_settled")),
        pauses=int(_number(metrics["pauses"])),
        paused_for=float(_number(metrics["paused_for"])),
        wait_p99_s=float(_number(metrics["wait_p99_s"])),
        waits={"rate" if is_rate else "concurrency": limiter.wait_histogram()},
    )


def _read_combined(key: str, limiter: CombinedLimiter) -> Reading:
    slots = read(key, limiter.concurrency)
    rate = read(key, limiter.rate)
    requests = {result: slots.requests[result] + rate.requests[result] for result in RESULTS}
    requests["admitted"] = rate.requests["admitted"]  # a complete acquire: a slot, then a turn
    return Reading(
        key=key,
        kind="combined",
        backend=rate.backend,
        requests=requests,
        waiting=slots.waiting + rate.waiting,
        active=slots.active,
        max_concurrent=slots.max_concurrent,
        rpm_limit=rate.rpm_limit,
        tpm_limit=rate.tpm_limit,
        current_rpm=rate.current_rpm,
        current_tpm=rate.current_tpm,
        tokens_admitted=rate.tokens_admitted,
        tokens_settled=rate.tokens_settled,
        pauses=max(slots.pauses, rate.pauses),
        paused_for=max(slots.paused_for, rate.paused_for),
        wait_p99_s=max(slots.wait_p99_s, rate.wait_p99_s),
        waits={**slots.waits, **rate.waits},
    )


def backend_of(limiter: ConcurrencyLimiter | RateLimiter) -> Literal["memory", "shm", "redis", "redis-lease"]:
    if isinstance(limiter, RateLimiter) and limiter.coordination == "lease":
        return "redis-lease"
    where = limiter.backend
    if where is None:
        return "memory"
    return "shm" if where.startswith("shm://") else "redis"


def _name(limiter: Limiter) -> str:
    return limiter.provider_name if isinstance(limiter, RateLimiter) else limiter.name


def _check(limiter: object, what: str) -> None:
    if not isinstance(limiter, (ConcurrencyLimiter, RateLimiter, CombinedLimiter)):
        kinds = "a ConcurrencyLimiter, RateLimiter or CombinedLimiter"
        raise TypeError(f"{what} must be {kinds}, got {type(limiter).__name__}")


def _number(value: Any) -> float:
    return 0.0 if value is None else float(value)


def _optional(value: Any) -> float | None:
    return None if value is None else float(value)


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)
