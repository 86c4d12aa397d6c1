"""``omnilimit simulate CONFIG.yaml``: what a configuration does to a run, before the run costs money.

The real limiters, built from the configuration by ``ProviderRateLimitManager``, are driven by
``parallel_workers`` worker threads that work as OmniGen's workers do: each takes the next call
of the run and makes it through the next role of the configuration, in turn (a conversation's
turns: ``user_followup``, ``assistant_response``, ...). A call acquires its role's limiter, calls
the ``SimulatedProvider`` of its role's provider (one API key per provider name: the roles of one
provider share its limits, roles of different providers never do), and releases (or records the
request). A call answered 429 is retried after the provider's retry-after, up to ``MAX_ATTEMPTS``
attempts in all (as OpenAI's client does by default), each attempt acquiring again.

**Time is scaled** so that a long run takes seconds: at ``--speedup X`` every rate (the
configuration's RPM and TPM, the provider's) runs X times faster, every duration (latency,
retry-after, acquire timeout, the provider's 1-s slices) X times shorter, and concurrency caps stay.
The report converts back to real time. ``auto`` (the default) aims at about ``TARGET_WALL_S`` of
wall time while keeping the run's expected pace at least ``MIN_INTERVAL_S`` between requests, so
that a thread's wake-up jitter stays small next to the gaps the limiters make.

**Each API key's limits** are ``--provider-rpm`` / ``--provider-tpm`` / ``--provider-concurrency``:
``N`` for every provider, ``NAME=N`` for one (given again for others); an RPM not given is the
provider's auto-detected limit (the smallest of its roles' models), which for a provider omnilimit
does not know (or a role without ``name``) is 60, and the report says so first.

**The recommendation** keeps each API key below its limits with ``HEADROOM``: the roles of one
provider share one rate limiter (``rate_limit_shared_key``) at ``HEADROOM`` of that key's capacity
in requests per minute (its RPM, its concurrency over the measured latency, its TPM over the
tokens per call: whichever is smallest), with a token budget when the key has a TPM limit and a
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
import math
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

import yaml

from omnilimit.cli import fail
from omnilimit.config import (
    CONCURRENCY,
    RATE,
    Config,
    LimiterPlan,
    file_error_message,
    parse_config,
    read_yaml,
)
from omnilimit.errors import ConfigError
from omnilimit.manager import ProviderRateLimitManager
from omnilimit.sim_provider import SimulatedProvider
from omnilimit.sim_run import ACQUIRE_TIMEOUT_S, MAX_ATTEMPTS, _progress, _Quiet, _RoleTally, _Run, _worker
from omnilimit.sim_setup import (
    BACKEND_KEYS,
    LIMITS,
    MAX_SPEEDUP,
    MIN_INTERVAL_S,
    MIN_LATENCY_S,
    TARGET_WALL_S,
    ApiKey,
    Options,
    _check_options,
    _limiter_capacity_rpm,
    _number,
    api_keys,
    auto_speedup,
    key_capacity_rpm,
    provider_capacity_rpm,
    scaled_document,
)

__all__ = [  # the names of the command's modules that omnilimit.simulate gives (it held them all)
    "ACQUIRE_TIMEOUT_S",
    "BACKEND_KEYS",
    "DEFAULT_WORKERS",
    "HEADROOM",
    "LIMITS",
    "MAX_ATTEMPTS",
    "MAX_SPEEDUP",
    "MIN_INTERVAL_S",
    "MIN_LATENCY_S",
    "TARGET_WALL_S",
    "ApiKey",
    "Options",
    "api_keys",
    "apply_recommendation",
    "auto_speedup",
    "format_report",
    "key_capacity_rpm",
    "main",
    "provider_capacity_rpm",
    "scaled_document",
    "simulate",
]

HEADROOM = 0.95  # of the provider's capacity, in the recommendation
DEFAULT_WORKERS = 10  # parallel_workers when the configuration sets none (the guide's examples)


def simulate(document: Mapping[str, Any], source: str, options: Options) -> dict[str, Any]:
    """Runs the simulation of a configuration document; returns the report (JSON-ready). Raises
    ConfigError for a bad configuration, ValueError for bad options."""
    _check_options(options)
    config = parse_config(document, source)
    roles = list(config.roles)
    workers = options.workers or config.parallel_workers or DEFAULT_WORKERS
    keys = api_keys(config, options)
    speedup = options.speedup or auto_speedup(config, options, workers, keys)
    providers = {  # per-minute limits as in real time: their slices are 1/speedup s
        name: SimulatedProvider(
            key.rpm,
            key.tpm,
            key.concurrency,
            latency_s=options.latency_s / speedup,
            slice_s=1.0 / speedup,
            seed=options.seed + index,
        )
        for index, (name, key) in enumerate(keys.items())
    }
    provider_of = {role: providers[key.provider] for key in keys.values() for role in key.roles}
    run = _Run(roles={role: _RoleTally() for role in roles})
    quiet = _Quiet()  # the limiters' timeout warnings are counted, not printed
    with quiet:
        manager = ProviderRateLimitManager.from_config(scaled_document(document, config, speedup), source)
        started = time.monotonic()
        done = threading.Event()
        progress = None
        if options.progress:
            progress = threading.Thread(
                target=_progress, args=(run, options.requests, speedup, started, done), daemon=True
            )
            progress.start()
        threads = [
            threading.Thread(
                target=_worker, args=(manager, roles, provider_of, run, options, speedup, index), daemon=True
            )
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
    return _report(config, options, run, keys, providers, workers, speedup, elapsed)


def _report(
    config: Config,
    options: Options,
    run: _Run,
    keys: Mapping[str, ApiKey],
    providers: Mapping[str, SimulatedProvider],
    workers: int,
    speedup: float,
    elapsed: float,
) -> dict[str, Any]:
    tallies = run.roles
    completed = sum(t.completed for t in tallies.values())
    timeouts = sum(t.timeouts for t in tallies.values())
    failed = sum(t.failed for t in tallies.values())
    all_counts = [provider.counts for provider in providers.values()]
    admitted = sum(c.admitted for c in all_counts)
    latency_s = sum(c.latency_total_s for c in all_counts) / admitted * speedup if admitted else options.latency_s
    arrivals = [t for c in all_counts for t in (c.first_arrival, c.last_arrival) if t is not None]
    throughput = _throughput(admitted, min(arrivals, default=None), max(arrivals, default=None), speedup)
    limiter_ceilings = _limiter_capacity_rpm(config, latency_s)
    # Every ceiling on the whole run (requests/min): a limit on a share of the calls, over that share.
    ceilings = {"parallel_workers": workers * 60.0 / latency_s}
    ceilings.update({f"limiter:{key}": value for key, value in limiter_ceilings.items()})
    per_key = {}
    for name, key in keys.items():
        own = _key_limits(key, latency_s, options.tokens)
        ceilings.update({f"{limit}:{name}": value / key.share for limit, value in own.items()})
        per_key[name] = _key_report(key, providers[name].counts, config, own, workers, latency_s, speedup, options)
    # What limits the run: the lowest ceiling. 429s with a client-side ceiling lowest are bursts
    # above a slice's share (a cold start, latencies bunching), not a sustained excess.
    binding = min(ceilings, key=lambda name: ceilings[name])
    capacities = [c / k.share for k in keys.values() if (c := key_capacity_rpm(k, latency_s, options.tokens))]
    capacity = min(capacities) if capacities else None  # the keys' ceiling on the whole run
    recommendation, workers_needed = _recommend(config, options, keys, per_key, latency_s, workers)
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
            "capacity_rpm": round(_own_limiter_rpm(plan, latency_s), 1),  # its own, not over its share
            "run_ceiling_rpm": round(limiter_ceilings[key], 1),
        }
        for key, plan in config.limiters.items()
    ]
    refused_by: dict[str, int] = {}
    for counts in all_counts:
        for limit, n in counts.refused_by.items():
            refused_by[limit] = refused_by.get(limit, 0) + n
    return {
        "source": config.source,
        "requests": options.requests,
        "completed": completed,
        "rate_limited_429": sum(c.refused for c in all_counts),
        "rate_limited_by": refused_by,
        "timeouts": timeouts,
        "failed": failed,
        "projected_wall_s": round(elapsed * speedup, 1),
        "throughput_rpm": round(throughput, 1),
        "provider_capacity_rpm": None if capacity is None else round(capacity, 1),
        "capacity_used": None if not capacity else round(throughput / capacity, 3),
        "binding_constraint": binding,
        "ceilings_rpm": {k: round(v, 1) for k, v in ceilings.items()},
        "api_keys": per_key,
        "recommendation": recommendation,
        "recommended_parallel_workers": workers_needed,
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


def _throughput(admitted: int, first: float | None, last: float | None, speedup: float) -> float:
    """Requests per minute between the first and the last admitted arrival, in real time."""
    if admitted < 2 or first is None or last is None or last <= first:
        return 0.0
    return (admitted - 1) / ((last - first) * speedup) * 60.0


def _key_limits(key: ApiKey, latency_s: float, tokens: int) -> dict[str, float]:
    """An API key's limits in requests per minute of its own calls: ``{"provider_rpm": 500.0, ...}``."""
    limits = {}
    if key.rpm is not None:
        limits["provider_rpm"] = key.rpm
    if key.concurrency is not None:
        limits["provider_concurrency"] = key.concurrency * 60.0 / latency_s
    if key.tpm is not None and tokens > 0:
        limits["provider_tpm"] = key.tpm / tokens
    return limits


def _own_limiter_rpm(plan: LimiterPlan, latency_s: float) -> float:
    """A limiter's own ceiling in requests per minute of the calls that go through it."""
    if plan.kind == CONCURRENCY:
        return plan.limit * 60.0 / latency_s
    if plan.kind == RATE:
        return float(plan.limit)
    return min(plan.limit * 60.0 / latency_s, float(plan.rpm or math.inf))


def _key_report(
    key: ApiKey,
    counts: Any,
    config: Config,
    own: Mapping[str, float],
    workers: int,
    latency_s: float,
    speedup: float,
    options: Options,
) -> dict[str, Any]:
    """One API key's part of the report: its limits, capacity, throughput, 429s, and its tightest
    ceiling in requests per minute of its own calls (its limiters', its own limits', and the
    workers' share that reaches it)."""
    roles = set(key.roles)
    ceilings = {"parallel_workers": workers * 60.0 / latency_s * key.share}
    for name, plan in config.limiters.items():
        mine = sum(1 for s in plan.roles if s.role in roles)
        if mine:
            ceilings[f"limiter:{name}"] = _own_limiter_rpm(plan, latency_s) * mine / len(plan.roles)
    ceilings.update(own)
    capacity = key_capacity_rpm(key, latency_s, options.tokens)
    throughput = _throughput(counts.admitted, counts.first_arrival, counts.last_arrival, speedup)
    return {
        "roles": list(key.roles),
        "rpm": key.rpm,
        "rpm_source": key.rpm_source,
        "tpm": key.tpm,
        "concurrency": key.concurrency,
        "capacity_rpm": None if capacity is None else round(capacity, 1),
        "throughput_rpm": round(throughput, 1),
        "capacity_used": None if not capacity else round(throughput / capacity, 3),
        "rate_limited_429": counts.refused,
        "rate_limited_by": dict(counts.refused_by),
        "most_in_flight": counts.most_in_flight,
        "binding_constraint": min(ceilings, key=lambda name: ceilings[name]),
        "ceilings_rpm": {k: round(v, 1) for k, v in ceilings.items()},
    }


def _recommend(
    config: Config,
    options: Options,
    keys: Mapping[str, ApiKey],
    per_key: dict[str, dict[str, Any]],
    latency_s: float,
    workers: int,
) -> tuple[dict[str, dict[str, Any]], int | None]:
    """The provider config keys per role (the roles of one API key share one rate limiter at
    HEADROOM of its capacity; a key without limits gets none), each key's Little's-law
    concurrency (written into ``per_key``), and the parallel_workers needed (None: enough)."""
    recommendation: dict[str, dict[str, Any]] = {}
    run_rpm = math.inf  # the whole run's rate under the recommended limiters
    for name, key in keys.items():
        capacity = key_capacity_rpm(key, latency_s, options.tokens)
        per_key[name]["littles_law_max_concurrent_calls"] = None
        if capacity is None:
            continue
        target_rpm = max(1, math.floor(capacity * HEADROOM))
        settings = [config.roles[role] for role in key.roles]
        own_shared = {s.shared_key for s in settings}
        others_shared = {s.shared_key for s in config.roles.values() if s.provider != name}
        shared = own_shared.pop() if len(own_shared) == 1 and None not in own_shared else None
        if shared is None or shared in others_shared:
            shared = f"{name}_api_key"
        values: dict[str, Any] = {"rate_limit_shared_key": shared, "rate_limit_rpm": target_rpm}
        # Keys some role sets that the recommendation does not keep are removed (None).
        if any(s.max_concurrent_calls is not None for s in settings):
            values["max_concurrent_calls"] = None
        if any(s.mode != "precedence" for s in settings):
            values["rate_limit_mode"] = None
        if any(s.rate_limit_tpm is not None for s in settings):
            values["rate_limit_tpm"] = None
        if any(s.burst is not None for s in settings):
            values["rate_limit_burst"] = None
        if any(s.token_burst is not None for s in settings):
            values["rate_limit_token_burst"] = None
        if key.tpm is not None:
            values["rate_limit_tpm"] = max(1, math.floor(key.tpm * HEADROOM))
        if key.concurrency is not None:
            values["max_concurrent_calls"] = key.concurrency
            values["rate_limit_mode"] = "combined"
        for role in key.roles:
            recommendation[role] = dict(values)
        per_key[name]["littles_law_max_concurrent_calls"] = math.ceil(target_rpm / 60.0 * latency_s)
        run_rpm = min(run_rpm, target_rpm / key.share)
    if run_rpm == math.inf:
        return recommendation, None
    needed = math.ceil(run_rpm / 60.0 * latency_s) + 1  # one more keeps the limiters, not the workers, binding
    return recommendation, (needed if needed > workers else None)


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
    keys = report["api_keys"]
    lines.append("API keys (one per provider; --provider-rpm NAME=N sets one):" if len(keys) > 1 else "API key:")
    for name, key in keys.items():
        limits = ["no RPM limit" if key["rpm"] is None else f"{_number(key['rpm'])} RPM ({key['rpm_source']})"]
        if key["tpm"] is not None:
            limits.append(f"{_number(key['tpm'])} TPM")
        if key["concurrency"] is not None:
            limits.append(f"{key['concurrency']} concurrent")
        roles = ", ".join(key["roles"])
        lines.append(f"  {name}: {', '.join(limits)}; {'role' if len(key['roles']) == 1 else 'roles'} {roles}")
    lines.append("")
    lines.append(f"  projected wall time    {report['projected_wall_s']:,.1f} s")
    capacity = report["provider_capacity_rpm"]
    used = "" if capacity is None else f" of the API keys' {capacity:,.1f} ({report['capacity_used']:.0%})"
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
    key_rows = []
    for name, key in keys.items():
        tightest = key["binding_constraint"]
        key_rows.append(
            [
                name,
                "none" if key["capacity_rpm"] is None else f"{key['capacity_rpm']:,.1f}",
                f"{key['throughput_rpm']:,.1f}",
                "-" if key["capacity_used"] is None else f"{key['capacity_used']:.0%}",
                str(key["rate_limited_429"]),
                f"{tightest} {key['ceilings_rpm'][tightest]:,.1f}",
            ]
        )
    lines += _table(
        ["API key", "capacity/min", "throughput/min", "used", "429s", "tightest ceiling of its calls/min"], key_rows
    )
    lines.append("")
    total_roles = len(report["roles"])
    limiter_rows = [
        [
            limiter["key"],
            limiter["kind"],
            f"{limiter['capacity_rpm']:,.1f}",
            f"{len(limiter['roles'])} of {total_roles}",
            f"{limiter['run_ceiling_rpm']:,.1f}",
        ]
        for limiter in report["limiters"]
    ]
    lines += _table(["limiter", "kind", "its limit/min", "roles", "ceiling on the run/min"], limiter_rows, left=2)
    lines.append("")
    lines.append("  role                    calls  completed  429s  timeouts  mean wait s  mean latency s")
    for role, r in report["roles"].items():
        lines.append(
            f"  {role:<22} {r['calls']:>6} {r['completed']:>10} {r['rate_limited_429']:>5} {r['timeouts']:>9} "
            f"{r['mean_wait_s']:>12} {r['mean_latency_s']:>15}"
        )
    lines += _recommendation_lines(report)
    return "\n".join(lines)


def _table(headings: list[str], rows: list[list[str]], left: int = 1) -> list[str]:
    """Rows under headings, the first ``left`` columns aligned left, the others right."""
    widths = [max(len(cell) for cell in column) for column in zip(headings, *rows)]
    return [
        "  " + "  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
        for row in [headings, *rows]
    ]


def _recommendation_lines(report: Mapping[str, Any]) -> list[str]:
    recommendation = report["recommendation"]
    if not recommendation:
        return ["", "recommendation: none (no API key sets a limit to stay under)"]
    lines = [
        "",
        f"recommendation: the roles of each API key share one rate limiter at {HEADROOM:.0%} of its capacity "
        "(null removes a key):",
        "providers:",
    ]
    for role, keys in recommendation.items():
        lines.append(f"  {role}:")
        for key, value in keys.items():
            lines.append(f"    {key}: {'null' if value is None else json.dumps(value)}")
    for name, key in report["api_keys"].items():
        little = key["littles_law_max_concurrent_calls"]
        if little is not None:
            lines.append(
                f"({name}: Little's law with the measured latency of {report['measured_latency_s']} s makes the same "
                f"rate about {little} calls in flight: max_concurrent_calls {little} for its roles together, if you "
                "prefer concurrency limiting)"
            )
    if report["recommended_parallel_workers"] is not None:
        lines.append(
            f"(the {report['workers']} workers cannot reach that rate: generation.parallel_workers "
            f"{report['recommended_parallel_workers']} can)"
        )
    return lines


def _provider_limit(text: str) -> tuple[str | None, float]:
    """--provider-rpm / -tpm / -concurrency: ``N`` or ``NAME=N``, N a number or ``none`` (no such
    limit: math.inf). Returns (NAME or None, N)."""
    name, _, value = text.rpartition("=")
    number = math.inf if value.strip().lower() == "none" else float(value)
    if not number > 0:
        raise ValueError(f"must be > 0 or none, got {value!r}")
    return (name or None), number


def _limits(args: argparse.Namespace) -> tuple[dict[str, float | None], dict[str, dict[str, float]]]:
    """The --provider-* options: the limits for every API key, and those for named ones."""
    every: dict[str, float | None] = dict.fromkeys(LIMITS)
    named: dict[str, dict[str, float]] = {}
    for limit in LIMITS:
        for name, number in getattr(args, f"provider_{limit}") or ():
            if limit == "concurrency" and number != math.inf and not float(number).is_integer():
                raise ValueError(f"--provider-concurrency must be a whole number or none, got {number:g}")
            if name is None:
                every[limit] = number
            else:
                named.setdefault(name, {})[limit] = number
    return every, named


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
        type=_provider_limit,
        action="append",
        metavar="[NAME=]N",
        help="the requests per minute of each provider's API key, or of provider NAME's (repeat for others); none "
        "for no limit (default: each provider's auto-detected limit, the smallest of its models)",
    )
    parser.add_argument(
        "--provider-tpm",
        type=_provider_limit,
        action="append",
        metavar="[NAME=]N",
        help="tokens per minute of each API key, or of provider NAME's (default: none)",
    )
    parser.add_argument(
        "--provider-concurrency",
        type=_provider_limit,
        action="append",
        metavar="[NAME=]N",
        help="concurrent requests of each API key, or of provider NAME's (default: none)",
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
    parser.add_argument(
        "--json",
        metavar="FILE",
        help='write the report as JSON (- for standard output); for a file it cannot use, {"source": CONFIG, '
        '"error": MESSAGE} (exit 2)',
    )
    parser.add_argument(
        "--write-recommended", metavar="FILE", help="write the configuration with the recommendation applied"
    )
    args = parser.parse_args(argv)
    try:
        speedup = None if args.speedup == "auto" else float(args.speedup)
    except ValueError:
        parser.error(f"--speedup must be a number or auto, got {args.speedup!r}")
    try:
        every, named = _limits(args)
    except ValueError as error:
        parser.error(str(error))
    concurrency = every["concurrency"]
    options = Options(
        requests=args.requests,
        latency_s=args.latency,
        provider_rpm=every["rpm"],
        provider_tpm=every["tpm"],
        provider_concurrency=None if concurrency is None or concurrency == math.inf else int(concurrency),
        named_limits=named,
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
        return fail("simulate", file_error_message(args.config, error), json_to=args.json, source=args.config)
    except ValueError as error:
        return fail("simulate", str(error), json_to=args.json, source=args.config)
    if args.json == "-":
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
    try:
        if args.json and args.json != "-":
            with open(args.json, "w", encoding="utf-8") as out:
                json.dump(report, out, indent=2)
        if args.write_recommended and report["recommendation"]:
            with open(args.write_recommended, "w", encoding="utf-8") as out:
                yaml.safe_dump(apply_recommendation(document, report["recommendation"]), out, sort_keys=False)
    except OSError as error:
        return fail("simulate", f"{error.filename}: cannot write the file: {error.strerror or error}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
