"""What ``omnilimit simulate`` runs with: its ``Options`` (and their checks), the simulated API keys
(``ApiKey``: one per provider name of the configuration, its limits and where its RPM comes from),
the ceilings in requests per minute that the limiters and the keys set, and the time scaling (the
configuration as the simulation runs it, X times faster; the speedup ``--speedup auto`` picks)."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from omnilimit.config import COMBINED, CONCURRENCY, DEFAULT_PROVIDER, RATE, Config, RoleSettings
from omnilimit.defaults import DEFAULT_RATE_LIMITS, get_default_rate_limit

TARGET_WALL_S = 5.0  # what --speedup auto aims at
MIN_INTERVAL_S = 0.01  # the shortest gap between paced requests (a rate limiter's, the provider's) it allows
MIN_LATENCY_S = 0.02  # the shortest scaled mean latency that --speedup auto allows
MAX_SPEEDUP = 100.0  # the provider's 1-s slices last at least 10 ms
BACKEND_KEYS = (
    "rate_limit_backend",
    "rate_limit_on_backend_error",
    "rate_limit_local_fraction",
    "rate_limit_lease_seconds",
    "rate_limit_coordination",
)


LIMITS = ("rpm", "tpm", "concurrency")  # an API key's limits, as --provider-rpm / -tpm / -concurrency name them


@dataclass(frozen=True)
class Options:
    """What to simulate; ``None`` takes the default from the configuration (see ``--help``).

    ``provider_rpm`` / ``provider_tpm`` / ``provider_concurrency`` apply to every provider's API
    key (``math.inf``: no such limit); ``named_limits`` to one provider's, e.g. ``{"openai":
    {"rpm": 300}}`` (it wins over the former)."""

    requests: int = 400
    latency_s: float = 2.0
    provider_rpm: float | None = None
    provider_tpm: float | None = None
    provider_concurrency: int | None = None
    named_limits: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    tokens: int = 1000
    speedup: float | None = None
    workers: int | None = None
    seed: int = 0
    progress: bool = False


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
    for provider, limits in options.named_limits.items():
        for limit, value in limits.items():
            if limit not in LIMITS or not value > 0:
                raise ValueError(f"provider {provider!r}: {limit} must be one of {', '.join(LIMITS)} and > 0")


@dataclass(frozen=True)
class ApiKey:
    """One provider's API key in the simulation: its limits (None: none), where its RPM comes from,
    its roles and their share of the run's calls (the workers take the roles in turn)."""

    provider: str
    roles: tuple[str, ...]
    share: float
    rpm: float | None
    rpm_source: str
    tpm: float | None = None
    concurrency: int | None = None


def api_keys(config: Config, options: Options) -> dict[str, ApiKey]:
    """One API key per provider name of the configuration, with its limits from the options or,
    for an RPM not given, the provider's auto-detected limit. Raises ValueError for a limit named
    for a provider the configuration does not have."""
    groups: dict[str, list[RoleSettings]] = {}
    for settings in config.roles.values():
        groups.setdefault(settings.provider, []).append(settings)
    for provider in options.named_limits:
        if provider not in groups:
            raise ValueError(
                f"--provider-{next(iter(options.named_limits[provider]))} {provider}=...: the configuration has no "
                f"provider {provider!r} (its providers: {', '.join(groups)})"
            )
    keys = {}
    for provider, roles in groups.items():
        named = options.named_limits.get(provider, {})
        rpm: float | None
        if "rpm" in named:
            rpm, source = named["rpm"], f"--provider-rpm {provider}={_number(named['rpm'])}"
        elif options.provider_rpm is not None:
            rpm, source = options.provider_rpm, "--provider-rpm"
        else:
            rpm, model = min((float(get_default_rate_limit(s.provider, s.model)), s.model or "") for s in roles)
            if provider in DEFAULT_RATE_LIMITS:
                source = f"auto-detected for {provider}" + (f" {model}" if model else "")
            elif provider == DEFAULT_PROVIDER:
                source = (
                    "no role names its provider, so omnilimit assumes an unknown provider's limit: "
                    "pass --provider-rpm N for the API key's real one"
                )
            else:
                source = (
                    f"omnilimit does not know provider {provider!r} and assumes an unknown provider's limit: "
                    f"pass --provider-rpm {provider}=N for the real one"
                )
        tpm = named.get("tpm", options.provider_tpm)
        concurrency = named.get("concurrency", options.provider_concurrency)
        keys[provider] = ApiKey(
            provider=provider,
            roles=tuple(str(s.role) for s in roles),
            share=len(roles) / len(config.roles),
            rpm=None if rpm == math.inf else rpm,
            rpm_source=source,
            tpm=None if tpm in (None, math.inf) else tpm,
            concurrency=None if concurrency in (None, math.inf) else int(concurrency),
        )
    return keys


def _number(value: float) -> str:
    """500.0 -> "500", 0.5 -> "0.5"."""
    return f"{value:g}" if value < 1e15 else f"{value:.6g}"


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


def limiter_ceilings_rpm(config: Config, latency_s: float) -> dict[str, float]:
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


def key_capacity_rpm(key: ApiKey, latency_s: float, tokens: int) -> float | None:
    """Requests per minute an API key admits at most (None: it sets no limit)."""
    return provider_capacity_rpm(key.rpm, key.tpm, key.concurrency, latency_s, tokens)


def keys_ceiling_rpm(keys: Mapping[str, ApiKey], latency_s: float, tokens: int) -> float | None:
    """The API keys' ceiling on the whole run (requests per minute): each key's capacity over
    the share of the calls that go to it, the lowest of them (None: no key sets a limit)."""
    ceilings = [c / k.share for k in keys.values() if (c := key_capacity_rpm(k, latency_s, tokens)) is not None]
    return min(ceilings) if ceilings else None


def auto_speedup(config: Config, options: Options, workers: int, keys: Mapping[str, ApiKey]) -> float:
    """A speedup that makes the run last about TARGET_WALL_S, while the expected pace of the run
    keeps at least MIN_INTERVAL_S between requests and the mean latency at least MIN_LATENCY_S."""
    capacities = [workers * 60.0 / options.latency_s, *limiter_ceilings_rpm(config, options.latency_s).values()]
    keys_ceiling = keys_ceiling_rpm(keys, options.latency_s, options.tokens)
    expected_rpm = min(capacities) if keys_ceiling is None else min(*capacities, keys_ceiling)
    real_s = options.requests / (expected_rpm / 60.0) + options.latency_s
    bound = min(MAX_SPEEDUP, (60.0 / expected_rpm) / MIN_INTERVAL_S, options.latency_s / MIN_LATENCY_S)
    return max(1.0, min(real_s / TARGET_WALL_S, bound))
