"""A whole configuration: ``parse_config`` (and ``load_yaml``) validates every role, groups the roles by
limiter key into ``LimiterPlan``s (roles sharing a key share one limiter, with the smallest of their
limits and one warning) and words the guide's best-practice warnings."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omnilimit._shown import redact, shown
from omnilimit._validate import InvalidValue, whole_number
from omnilimit.config.describe import limit_text
from omnilimit.config.environment import _expanded, expand_environment
from omnilimit.config.keys import COMBINED, CONCURRENCY, RATE
from omnilimit.config.reading import read_yaml
from omnilimit.config.roles import RoleSettings, _redacted_repr, ignored_text, role_settings
from omnilimit.errors import ConfigError

DEFAULT_PROVIDER = "default"


@dataclass(frozen=True, repr=False)
class LimiterPlan:
    """One limiter to build: its key, kind, limit and the roles that share it."""

    __repr__ = _redacted_repr

    key: str
    kind: str
    limit: int | float
    roles: tuple[RoleSettings, ...]
    tpm: int | float | None = None  # the token budget of a rate or combined limiter (None: none)
    rpm: int | float | None = None  # the RPM of a combined limiter (its `limit` is the concurrency cap)
    backend: str | None = None  # None: in-process; "shm" / "shm://NAME" / a Redis URL: shared
    backend_options: tuple[tuple[str, Any], ...] = ()  # RoleSettings.backend_options, as items
    burst: int | None = None  # a rate or combined limiter's burst (None: a concurrency limiter)
    token_burst: int | None = None  # its token burst (None: no token budget)


@dataclass(frozen=True, repr=False)
class Config:
    """A validated configuration: every role's settings, the limiters they make, and the
    guide's best-practice warnings (already worded; the manager logs them)."""

    __repr__ = _redacted_repr

    source: str
    roles: Mapping[str, RoleSettings]
    limiters: Mapping[str, LimiterPlan]
    parallel_workers: int | None = None
    warnings: tuple[str, ...] = ()


def parse_config(config: object, source: str = "<config>") -> Config:
    """Validates a whole configuration mapping (the parsed YAML). Raises ConfigError."""
    if not isinstance(config, Mapping):
        raise ConfigError(f"must be a mapping with a 'providers' section, got {type(config).__name__}", source=source)
    providers = config.get("providers")
    if providers is None:
        raise ConfigError("'providers' is missing: it maps each role to its provider settings", source=source)
    if not isinstance(providers, Mapping) or not providers:
        raise ConfigError(
            f"'providers' must be a non-empty mapping of roles to provider settings, got {shown(providers)}",
            source=source,
        )
    roles: dict[str, RoleSettings] = {}
    for role, given in providers.items():
        if not isinstance(role, str) or not role:
            raise ConfigError(
                f"role names must be non-empty strings, got {shown(role)}", source=source, key="providers"
            )
        provider_config = _expanded(given, source=source, role=role)
        name = provider_config.get("name") if isinstance(provider_config, Mapping) else None
        roles[role] = role_settings(DEFAULT_PROVIDER if name is None else name, provider_config, role, source=source)

    parallel_workers = _parallel_workers(config.get("generation"), source)
    warnings: list[str] = []
    for settings in roles.values():
        if settings.ignored:
            warnings.append(f"{source}: providers.{settings.role}: {ignored_text(settings)}")
    limiters = {key: _plan(key, group, source, warnings) for key, group in _group_by_key(roles).items()}
    for plan in limiters.values():
        if plan.kind == CONCURRENCY and parallel_workers is not None and plan.limit < parallel_workers:
            warnings.append(
                f"{source}: limiter '{plan.key}' ({_role_list(plan.roles)}): max_concurrent_calls {plan.limit} "
                f"is below generation.parallel_workers {parallel_workers}: workers will queue for slots "
                f"(the guide recommends max_concurrent_calls >= parallel_workers)"
            )
    return Config(
        source=source, roles=roles, limiters=limiters, parallel_workers=parallel_workers, warnings=tuple(warnings)
    )


def load_yaml(path: str | os.PathLike[str]) -> Config:
    """Reads and validates a YAML configuration file. Raises ConfigError (OSError if unreadable)."""
    return parse_config(read_yaml(path), os.fspath(path))


def _parallel_workers(generation: object, source: str) -> int | None:
    if generation is None:
        return None
    if not isinstance(generation, Mapping):
        raise ConfigError(f"'generation' must be a mapping, got {shown(generation)}", source=source)
    value = expand_environment(
        generation.get("parallel_workers"), source=source, role=None, key="generation.parallel_workers"
    )
    if value is None:
        return None
    try:
        return whole_number("parallel_workers", value)
    except InvalidValue as error:
        raise ConfigError(
            f"{error.requirement}, got {shown(value)}", source=source, key="generation.parallel_workers"
        ) from None


def _group_by_key(roles: Mapping[str, RoleSettings]) -> dict[str, list[RoleSettings]]:
    groups: dict[str, list[RoleSettings]] = {}
    for settings in roles.values():
        groups.setdefault(settings.key, []).append(settings)
    return groups


def _plan(key: str, group: list[RoleSettings], source: str, warnings: list[str]) -> LimiterPlan:
    combined = [s for s in group if s.kind == COMBINED]
    concurrency = [s for s in group if s.kind in (CONCURRENCY, COMBINED)]
    deciding = concurrency or group  # concurrency wins over RPM within a shared key too
    kind = COMBINED if combined else CONCURRENCY if concurrency else RATE
    limit = min(s.limit for s in deciding)
    budgets = [s.tpm for s in (combined or deciding) if s.tpm is not None]
    tpm = min(budgets) if budgets and kind != CONCURRENCY else None
    rpm = min(s.rpm for s in combined) if combined else None
    rated = combined or deciding  # the roles whose rate settings the limiter takes
    burst = min(s.bursts[0] for s in rated) if kind != CONCURRENCY else None
    token_bursts = [s.bursts[1] for s in rated if s.bursts[1] is not None]
    token_burst = min(token_bursts) if token_bursts and tpm is not None else None
    backends = {(s.backend, tuple(sorted(s.backend_options.items()))) for s in group}
    if len(backends) > 1:
        values = ", ".join(
            f"{s.role}: {redact(s.backend or 'memory')}"
            + "".join(f" {k}={v}" for k, v in sorted(s.backend_options.items()))
            for s in group
        )
        raise ConfigError(
            f"roles sharing limiter '{key}' set different rate_limit_backend values or options ({values}): one limiter "
            f"lives in one place",
            source=source,
        )
    if len({(s.kind, s.limit, s.tpm, s.bursts if s.kind != CONCURRENCY else None) for s in group}) > 1:
        values = ", ".join(f"{s.role}: {s.describe()}" for s in group)
        chosen = limit_text(kind, limit, rpm, tpm, bursts=(burst, token_burst))
        warnings.append(
            f"{source}: roles sharing limiter '{key}' set different limits ({values}): "
            f"the shared limiter uses {chosen} (concurrency wins, then the smallest)"
        )
    backend, options = next(iter(backends))
    return LimiterPlan(
        key=key,
        kind=kind,
        limit=limit,
        roles=tuple(group),
        tpm=tpm,
        rpm=rpm,
        backend=backend,
        backend_options=options,
        burst=burst,
        token_burst=token_burst,
    )


def _role_list(roles: tuple[RoleSettings, ...]) -> str:
    names = [str(s.role) for s in roles]
    return ("role " if len(names) == 1 else "roles ") + ", ".join(names)
