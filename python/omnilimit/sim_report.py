"""The report of ``omnilimit simulate``, JSON-ready: what the run did (calls, 429s, timeouts,
throughput, wait and latency per role), the ceilings on its rate (the workers', each limiter's,
each API key's) and which binds, each API key's part, and the recommendation (the provider config
keys that keep each key below its limits with ``HEADROOM``, applied by ``apply_recommendation``)."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

from omnilimit.config import CONCURRENCY, RATE, Config, LimiterPlan
from omnilimit.sim_provider import SimulatedProvider
from omnilimit.sim_run import _Run
from omnilimit.sim_setup import ApiKey, Options, key_capacity_rpm, keys_ceiling_rpm, limiter_ceilings_rpm

HEADROOM = 0.95  # of the provider's capacity, in the recommendation


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
    limiter_ceilings = limiter_ceilings_rpm(config, latency_s)
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
    capacity = keys_ceiling_rpm(keys, latency_s, options.tokens)
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
