"""``omnilimit simulate CONFIG.yaml``: what a configuration does to a run, before the run costs money.

The real limiters, built from the configuration by ``ProviderRateLimitManager``, are driven by
``parallel_workers`` worker threads that work as OmniGen's workers do: each takes the next call
of the run and makes it through the next role of the configuration, in turn (a conversation's
turns: ``user_followup``, ``assistant_response``, ...). A call acquires its role's limiter, calls
a ``SimulatedProvider`` (one API key: every role shares its limits), and releases (or records the
request). A call answered 429 is retried after the provider's retry-after, up to ``MAX_ATTEMPTS``
attempts in all (as OpenAI's client does by default), each attempt acquiring again.

**Time is scaled** so that a long run takes seconds: at ``--speedup X`` every rate (the
configuration's RPM and TPM, the provider's) runs X times faster, every duration (latency,
retry-after, acquire timeout, the provider's 1-s slices) X times shorter, and concurrency caps stay.
The report converts back to real time. ``auto`` (the default) aims at about ``TARGET_WALL_S`` of
wall time while keeping the run's expected pace at least ``MIN_INTERVAL_S`` between requests, so
that a thread's wake-up jitter stays small next to the gaps the limiters make.

**The recommendation** keeps the provider's API key below its limits with ``HEADROOM``: every role
shares one rate limiter (``rate_limit_shared_key``) at ``HEADROOM`` of the provider's capacity in
requests per minute (its RPM, its concurrency over the measured latency, its TPM over the tokens
per call: whichever is smallest), with a token budget when the provider has a TPM limit and a
concurrency cap (``rate_limit_mode: combined``) when it has a concurrency limit. A concurrency
cap alone cannot keep every 1-s slice under an RPM limit when latencies vary; the guide's
conversion formula (Little's law, concurrency = rate x latency) is reported with the measured
latency, as the equivalent ``max_concurrent_calls``. When the workers cannot reach the rate, the
``parallel_workers`` that can is reported too.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from omnilimit._log import logger
from omnilimit.combined import CombinedLimiter
from omnilimit.concurrency import ConcurrencyLimiter
from omnilimit.config import COMBINED, CONCURRENCY, RATE, Config, file_error_message, parse_config, read_yaml
from omnilimit.defaults import get_default_rate_limit
from omnilimit.errors import ConfigError
from omnilimit.manager import ProviderRateLimitManager
from omnilimit.rate import RateLimiter
from omnilimit.sim_provider import SimulatedProvider

HEADROOM = 0.95  # of the provider's capacity, in the recommendation
MAX_ATTEMPTS = 3  # a call and its retries after 429s
ACQUIRE_TIMEOUT_S = 120.0  # OmniGen's acquire timeout, at real speed
DEFAULT_WORKERS = 10  # parallel_workers when the configuration sets none (the guide's examples)
TARGET_WALL_S = 5.0  # what --speedup auto aims at
MIN_INTERVAL_S = 0.01  # the shortest gap between paced requests (a rate limiter's, the provider's) it allows
MIN_LATENCY_S = 0.02  # the shortest scaled mean latency that --speedup auto allows
MAX_SPEEDUP = 100.0  # the provider's 1-s slices last at least 10 ms
BACKEND_KEYS = (
    "rate_limit_backend",
    "rate_limit_on_backend_error",
    "rate_limit_local_fraction",
    "rate_limit_lease_seconds",
)


@dataclass(frozen=True)
class Options:
    """What to simulate; ``None`` takes the default from the configuration (see ``--help``)."""

    requests: int = 400
    latency_s: float = 2.0
    provider_rpm: float | None = None
    provider_tpm: float | None = None
    provider_concurrency: int | None = None
    tokens: int = 1000
    speedup: float | None = None
    workers: int | None = None
    seed: int = 0
    progress: bool = False


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


def provider_defaults(config: Config) -> float:
    """The provider's RPM when ``--provider-rpm`` is not given: the smallest auto-detected limit of
    the configuration's provider/model pairs (every role shares one API key)."""
    return float(min(get_default_rate_limit(s.provider, s.model) for s in config.roles.values()))


def scaled_document(document: Mapping[str, Any], config: Config, speedup: float) -> dict[str, Any]:
    """The configuration as the simulation runs it: RPM and TPM X times faster (an auto-detected
    RPM written out), in-process (no shared backend: a simulation must not touch shared state)."""
    scaled = copy.deepcopy(dict(document))
    providers = scaled.get("providers") or {}
    for role, settings in config.roles.items():
        mapping = dict(providers.get(role) or {})
        for key in BACKEND_KEYS:
            mapping.pop(key, None)
        if settings.kind in (RATE, COMBINED):
            mapping["rate_limit_rpm"] = float(settings.rpm) * speedup
        if mapping.get("rate_limit_tpm") is not None:
            mapping["rate_limit_tpm"] = float(mapping["rate_limit_tpm"]) * speedup
        providers[role] = mapping
    scaled["providers"] = providers
    return scaled


def _limiter_capacity_rpm(config: Config, latency_s: float) -> dict[str, float]:
    """Each limiter's ceiling on the whole run's throughput (requests per minute): its own rate
    over the share of the calls that go through it (workers take the roles in turn)."""
    total_roles = len(config.roles)
    capacities = {}
    for key, plan in config.limiters.items():
        share = len(plan.roles) / total_roles
        if plan.kind == CONCURRENCY:
            own = plan.limit * 60.0 / latency_s
        elif plan.kind == RATE:
            own = float(plan.limit)
        else:
            own = min(plan.limit * 60.0 / latency_s, float(plan.rpm or math.inf))
        capacities[key] = own / share
    return capacities


def provider_capacity_rpm(
    rpm: float | None, tpm: float | None, concurrency: int | None, latency_s: float, tokens: int
) -> float | None:
    """Requests per minute the provider admits at most: None when it sets no limit."""
    ceilings = []
    if rpm is not None:
        ceilings.append(rpm)
    if concurrency is not None:
        ceilings.append(concurrency * 60.0 / latency_s)
    if tpm is not None and tokens > 0:
        ceilings.append(tpm / tokens)
    return min(ceilings) if ceilings else None


def auto_speedup(config: Config, options: Options, workers: int, provider_rpm: float | None) -> float:
    """A speedup that makes the run last about TARGET_WALL_S, while the expected pace of the run
    keeps at least MIN_INTERVAL_S between requests and the mean latency at least MIN_LATENCY_S."""
    capacities = [workers * 60.0 / options.latency_s, *_limiter_capacity_rpm(config, options.latency_s).values()]
    provider = provider_capacity_rpm(
        provider_rpm, options.provider_tpm, options.provider_concurrency, options.latency_s, options.tokens
    )
    if provider is not None:
        capacities.append(provider)
    expected_rpm = min(capacities)
    real_s = options.requests / (expected_rpm / 60.0) + options.latency_s
    bound = min(MAX_SPEEDUP, (60.0 / expected_rpm) / MIN_INTERVAL_S, options.latency_s / MIN_LATENCY_S)
    return max(1.0, min(real_s / TARGET_WALL_S, bound))


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
    provider: SimulatedProvider,
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
        outcome = _call(limiter, provider, options, speedup, tally, run.lock)
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


def simulate(document: Mapping[str, Any], source: str, options: Options) -> dict[str, Any]:
    """Runs the simulation of a configuration document; returns the report (JSON-ready). Raises
    ConfigError for a bad configuration, ValueError for bad options."""
    _check_options(options)
    config = parse_config(document, source)
    roles = list(config.roles)
    workers = options.workers or config.parallel_workers or DEFAULT_WORKERS
    provider_rpm: float | None = options.provider_rpm if options.provider_rpm is not None else provider_defaults(config)
    if provider_rpm == math.inf:
        provider_rpm = None  # --provider-rpm none
    speedup = options.speedup or auto_speedup(config, options, workers, provider_rpm)
    scaled = parse_config(scaled_document(document, config, speedup), source)
    provider = SimulatedProvider(  # per-minute limits as in real time: its slices are 1/speedup s
        provider_rpm,
        options.provider_tpm,
        options.provider_concurrency,
        latency_s=options.latency_s / speedup,
        slice_s=1.0 / speedup,
        seed=options.seed,
    )
    run = _Run(roles={role: _RoleTally() for role in roles})
    quiet = _Quiet()  # the limiters' timeout warnings are counted, not printed
    with quiet:
        manager = ProviderRateLimitManager.from_config(scaled_document(document, config, speedup), source)
        del scaled
        started = time.monotonic()
        done = threading.Event()
        progress = None
        if options.progress:
            progress = threading.Thread(
                target=_progress, args=(run, options.requests, speedup, started, done), daemon=True
            )
            progress.start()
        threads = [
            threading.Thread(target=_worker, args=(manager, roles, provider, run, options, speedup, index), daemon=True)
            for index in range(workers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        done.set()
        if progress is not None:
            progress.join()
    return _report(config, options, run, provider, workers, provider_rpm, speedup, elapsed)


class _Quiet:
    """Raises the omnilimit logger's level to ERROR for the block."""

    def __enter__(self) -> None:
        self._level = logger.level
        logger.setLevel(logging.ERROR)

    def __exit__(self, *exc_info: object) -> None:
        logger.setLevel(self._level)


def _check_options(options: Options) -> None:
    positive = {"requests": options.requests, "latency": options.latency_s, "tokens per request": options.tokens + 1}
    for name, value in positive.items():
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value!r}")
    for name, optional in (
        ("provider RPM", options.provider_rpm),
        ("provider TPM", options.provider_tpm),
        ("provider concurrency", options.provider_concurrency),
        ("speedup", options.speedup),
        ("workers", options.workers),
    ):
        if optional is not None and not optional > 0:
            raise ValueError(f"{name} must be > 0, got {optional!r}")


def _report(
    config: Config,
    options: Options,
    run: _Run,
    provider: SimulatedProvider,
    workers: int,
    provider_rpm: float | None,
    speedup: float,
    elapsed: float,
) -> dict[str, Any]:
    tallies = run.roles
    completed = sum(t.completed for t in tallies.values())
    rate_limited = sum(t.rate_limited for t in tallies.values())
    timeouts = sum(t.timeouts for t in tallies.values())
    failed = sum(t.failed for t in tallies.values())
    counts = provider.counts
    latency_s = counts.latency_total_s / counts.admitted * speedup if counts.admitted else options.latency_s
    if counts.admitted > 1 and counts.first_arrival is not None and counts.last_arrival is not None:
        span_s = (counts.last_arrival - counts.first_arrival) * speedup
        throughput = (counts.admitted - 1) / span_s * 60.0 if span_s > 0 else 0.0
    else:
        throughput = 0.0
    capacity = provider_capacity_rpm(
        provider_rpm, options.provider_tpm, options.provider_concurrency, latency_s, options.tokens
    )
    ceilings = {"parallel_workers": workers * 60.0 / latency_s}
    ceilings.update({f"limiter:{key}": value for key, value in _limiter_capacity_rpm(config, latency_s).items()})
    provider_limits = {
        "provider_rpm": provider_rpm,
        "provider_concurrency": None
        if options.provider_concurrency is None
        else options.provider_concurrency * 60.0 / latency_s,
        "provider_tpm": None if options.provider_tpm is None else options.provider_tpm / max(1, options.tokens),
    }
    # What limits the run: the lowest ceiling. 429s with a client-side ceiling lowest are bursts
    # above a slice's share (a cold start, latencies bunching), not a sustained excess.
    candidates = {**ceilings, **{k: v for k, v in provider_limits.items() if v is not None}}
    binding = min(candidates, key=lambda name: candidates[name])
    recommendation, little, workers_needed = _recommend(config, options, capacity, latency_s, workers)
    per_role = {
        role: {
            "calls": t.calls,
            "completed": t.completed,
            "rate_limited_429": t.rate_limited,
            "timeouts": t.timeouts,
            "failed": t.failed,
            "mean_wait_s": round(t.wait_s / max(1, t.completed + t.rate_limited) * speedup, 3),
            "mean_latency_s": round(t.latency_s / max(1, t.completed) * speedup, 3),
        }
        for role, t in tallies.items()
    }
    limiters = [
        {
            "key": key,
            "kind": plan.kind,
            "limit": plan.limit,
            "rpm": plan.rpm,
            "tpm": plan.tpm,
            "roles": [str(s.role) for s in plan.roles],
            "capacity_rpm": round(ceilings[f"limiter:{key}"], 1),
        }
        for key, plan in config.limiters.items()
    ]
    return {
        "source": config.source,
        "requests": options.requests,
        "completed": completed,
        "rate_limited_429": rate_limited,
        "rate_limited_by": dict(counts.refused_by),
        "timeouts": timeouts,
        "failed": failed,
        "projected_wall_s": round(elapsed * speedup, 1),
        "throughput_rpm": round(throughput, 1),
        "provider_capacity_rpm": None if capacity is None else round(capacity, 1),
        "capacity_used": None if not capacity else round(throughput / capacity, 3),
        "binding_constraint": binding,
        "ceilings_rpm": {k: round(v, 1) for k, v in {**ceilings, **provider_limits}.items() if v is not None},
        "recommendation": recommendation,
        "littles_law_max_concurrent_calls": little,
        "recommended_parallel_workers": workers_needed,
        "provider": {
            "rpm": provider_rpm,
            "tpm": options.provider_tpm,
            "concurrency": options.provider_concurrency,
            "most_in_flight": counts.most_in_flight,
        },
        "workers": workers,
        "latency_s": options.latency_s,
        "measured_latency_s": round(latency_s, 3),
        "tokens_per_request": options.tokens,
        "speedup": round(speedup, 2),
        "wall_s": round(elapsed, 2),
        "seed": options.seed,
        "limiters": limiters,
        "roles": per_role,
    }


def _recommend(
    config: Config, options: Options, capacity: float | None, latency_s: float, workers: int
) -> tuple[dict[str, dict[str, Any]], int | None, int | None]:
    """(provider config keys per role, Little's-law concurrency, parallel_workers needed or None)."""
    if capacity is None:
        return {}, None, None
    target_rpm = max(1, math.floor(capacity * HEADROOM))
    shared_keys = {s.shared_key for s in config.roles.values()}
    first = next(iter(config.roles.values()))
    shared = shared_keys.pop() if len(shared_keys) == 1 and None not in shared_keys else f"{first.provider}_api_key"
    settings = list(config.roles.values())
    keys: dict[str, Any] = {"rate_limit_shared_key": shared, "rate_limit_rpm": target_rpm}
    # Keys some role sets that the recommendation does not keep are removed (None).
    if any(s.max_concurrent_calls is not None for s in settings):
        keys["max_concurrent_calls"] = None
    if any(s.mode != "precedence" for s in settings):
        keys["rate_limit_mode"] = None
    if any(s.rate_limit_tpm is not None for s in settings):
        keys["rate_limit_tpm"] = None
    if options.provider_tpm is not None:
        keys["rate_limit_tpm"] = max(1, math.floor(options.provider_tpm * HEADROOM))
    if options.provider_concurrency is not None:
        keys["max_concurrent_calls"] = options.provider_concurrency
        keys["rate_limit_mode"] = "combined"
    little = math.ceil(target_rpm / 60.0 * latency_s)
    needed = math.ceil(target_rpm / 60.0 * latency_s) + 1  # one more keeps the limiter, not the workers, binding
    return {role: dict(keys) for role in config.roles}, little, (needed if needed > workers else None)


def apply_recommendation(
    document: Mapping[str, Any], recommendation: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """The configuration with a recommendation applied: each role's keys set (``None`` removes a
    key)."""
    updated = copy.deepcopy(dict(document))
    providers = updated.setdefault("providers", {})
    for role, keys in recommendation.items():
        mapping = dict(providers.get(role) or {})
        for key, value in keys.items():
            if value is None:
                mapping.pop(key, None)
            else:
                mapping[key] = value
        providers[role] = mapping
    return updated


def format_report(report: Mapping[str, Any]) -> str:
    """The report as text, for a terminal."""
    lines = [
        f"{report['source']}: {report['requests']} calls by {report['workers']} workers, "
        f"mean latency {report['latency_s']} s, {report['tokens_per_request']} tokens per call "
        f"(simulated {report['speedup']}x faster: {report['wall_s']} s of wall time)"
    ]
    provider = report["provider"]
    limits = [] if provider["rpm"] is None else [f"{provider['rpm']:g} RPM"]
    if provider["tpm"] is not None:
        limits.append(f"{provider['tpm']:g} TPM")
    if provider["concurrency"] is not None:
        limits.append(f"{provider['concurrency']} concurrent")
    lines.append(f"provider (one API key): {', '.join(limits) or 'no limits'}")
    lines.append("")
    lines.append(f"  projected wall time    {report['projected_wall_s']:,.1f} s")
    capacity = report["provider_capacity_rpm"]
    used = "" if capacity is None else f" of the provider's {capacity:,.1f} ({report['capacity_used']:.0%})"
    lines.append(f"  throughput             {report['throughput_rpm']:,.1f} requests/min{used}")
    lines.append(f"  completed              {report['completed']} of {report['requests']}")
    by = ", ".join(f"{k} {v}" for k, v in report["rate_limited_by"].items() if v)
    lines.append(f"  429s from the provider {report['rate_limited_429']}" + (f" ({by})" if by else ""))
    lines.append(
        f"  acquire timeouts       {report['timeouts']}"
        + (f"; failed after {MAX_ATTEMPTS} attempts: {report['failed']}" if report["failed"] else "")
    )
    binding = report["binding_constraint"]
    bursts = report["rate_limited_429"] and not binding.startswith("provider_")
    lines.append(
        f"  binding constraint     {binding}"
        + (" (the 429s came from bursts above a 1-s slice's share)" if bursts else "")
    )
    lines.append("")
    lines.append("  ceilings (requests/min): " + ", ".join(f"{k} {v:,.1f}" for k, v in report["ceilings_rpm"].items()))
    lines.append("")
    lines.append("  role                    calls  completed  429s  timeouts  mean wait s  mean latency s")
    for role, r in report["roles"].items():
        lines.append(
            f"  {role:<22} {r['calls']:>6} {r['completed']:>10} {r['rate_limited_429']:>5} {r['timeouts']:>9} "
            f"{r['mean_wait_s']:>12} {r['mean_latency_s']:>15}"
        )
    recommendation = report["recommendation"]
    lines.append("")
    if not recommendation:
        lines.append("recommendation: none (the provider sets no limit to stay under)")
    else:
        lines.append(
            f"recommendation: one rate limiter for every role at {HEADROOM:.0%} of the provider's capacity "
            f"(null removes a key):"
        )
        lines.append("providers:")
        for role, keys in recommendation.items():
            lines.append(f"  {role}:")
            for key, value in keys.items():
                lines.append(f"    {key}: {'null' if value is None else json.dumps(value)}")
        lines.append(
            f"(Little's law with the measured latency of {report['measured_latency_s']} s: the same rate is about "
            f"{report['littles_law_max_concurrent_calls']} calls in flight: max_concurrent_calls "
            f"{report['littles_law_max_concurrent_calls']} for every role together, if you prefer concurrency limiting)"
        )
        if report["recommended_parallel_workers"] is not None:
            lines.append(
                f"(the {report['workers']} workers cannot reach that rate: generation.parallel_workers "
                f"{report['recommended_parallel_workers']} can)"
            )
    return "\n".join(lines)


def _rpm_or_none(text: str) -> float:
    """--provider-rpm: a number, or ``none`` (no RPM limit: math.inf)."""
    return math.inf if text.lower() == "none" else float(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="omnilimit simulate",
        description="Drive the limiters of a configuration against a simulated provider and predict the run.",
    )
    parser.add_argument("config", metavar="CONFIG.yaml", help="an OmniGen provider configuration")
    parser.add_argument(
        "--requests", type=int, default=Options.requests, metavar="N", help="calls in total (default %(default)s)"
    )
    parser.add_argument(
        "--latency",
        type=float,
        default=Options.latency_s,
        metavar="SECONDS",
        help="mean call latency (default %(default)s; log-normal spread around it)",
    )
    parser.add_argument(
        "--provider-rpm",
        type=_rpm_or_none,
        metavar="N",
        help="the provider's requests per minute, or none (default: the auto-detected limit of the "
        "config's provider/model, the smallest if several)",
    )
    parser.add_argument(
        "--provider-tpm", type=float, metavar="N", help="the provider's tokens per minute (default: none)"
    )
    parser.add_argument(
        "--provider-concurrency", type=int, metavar="N", help="the provider's concurrent requests (default: none)"
    )
    parser.add_argument(
        "--tokens", type=int, default=Options.tokens, metavar="N", help="tokens per request (default %(default)s)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help=f"worker threads (default: generation.parallel_workers, else {DEFAULT_WORKERS})",
    )
    parser.add_argument(
        "--speedup", default="auto", metavar="X", help="time runs X times faster (default auto: a few seconds)"
    )
    parser.add_argument("--seed", type=int, default=0, help="the latencies' random seed (default 0)")
    parser.add_argument("--json", metavar="FILE", help="write the report as JSON (- for standard output)")
    parser.add_argument(
        "--write-recommended", metavar="FILE", help="write the configuration with the recommendation applied"
    )
    args = parser.parse_args(argv)
    try:
        speedup = None if args.speedup == "auto" else float(args.speedup)
    except ValueError:
        parser.error(f"--speedup must be a number or auto, got {args.speedup!r}")
    options = Options(
        requests=args.requests,
        latency_s=args.latency,
        provider_rpm=args.provider_rpm,
        provider_tpm=args.provider_tpm,
        provider_concurrency=args.provider_concurrency,
        tokens=args.tokens,
        speedup=speedup,
        workers=args.workers,
        seed=args.seed,
        progress=sys.stderr.isatty(),
    )
    try:
        document = read_yaml(args.config)
        report = simulate(document, args.config, options)
    except (ConfigError, OSError, UnicodeDecodeError) as error:
        print(f"omnilimit simulate: {file_error_message(args.config, error)}", file=sys.stderr)
        return 2
    except ValueError as error:
        parser.error(str(error))
    if args.json == "-":
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
        if args.json:
            with open(args.json, "w", encoding="utf-8") as out:
                json.dump(report, out, indent=2)
    if args.write_recommended and report["recommendation"]:
        with open(args.write_recommended, "w", encoding="utf-8") as out:
            yaml.safe_dump(apply_recommendation(document, report["recommendation"]), out, sort_keys=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
