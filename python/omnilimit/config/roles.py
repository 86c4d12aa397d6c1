"""One role's limiter settings: ``RoleSettings``, validated by ``role_settings`` (the values, the
Redis options, what a role may not combine), its limiter key, and the warning for the rate settings
that ``max_concurrent_calls`` overrides."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omnilimit._shown import redact, shown
from omnilimit._validate import InvalidValue, label, positive_rate, whole_number
from omnilimit.config.describe import SETTING, limit_text
from omnilimit.config.keys import COMBINED, CONCURRENCY, MODES, RATE, REDIS_ONLY_KEYS, _refuse_unknown_keys
from omnilimit.defaults import get_default_rate_limit
from omnilimit.errors import ConfigError
from omnilimit.spec import (
    COORDINATIONS,
    DEFAULT_BURST,
    MAX_CONCURRENT,
    check_backend,
    check_lease,
    check_policy,
    is_redis,
)


def _redacted_repr(self: Any) -> str:
    """The dataclass repr of a settings object, without the passwords of Redis URLs in it."""
    fields = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self))
    return redact(f"{type(self).__name__}({fields})")


@dataclass(frozen=True, repr=False)
class RoleSettings:
    """One role's limiter settings, validated. ``rate_limit_rpm`` is kept as given."""

    __repr__ = _redacted_repr

    role: str | None
    provider: str
    model: str | None = None
    max_concurrent_calls: int | None = None
    rate_limit_rpm: int | float | None = None
    shared_key: str | None = None
    rate_limit_tpm: int | float | None = None  # a token budget next to the RPM (RateLimiter only)
    mode: str = "precedence"  # rate_limit_mode
    backend: str | None = None  # rate_limit_backend: None (in-process), "shm", "shm://NAME" or a Redis URL
    on_backend_error: str | None = None  # rate_limit_on_backend_error (Redis only; None: closed)
    local_fraction: float | None = None  # rate_limit_local_fraction (Redis, policy local)
    lease_seconds: float | None = None  # rate_limit_lease_seconds (Redis concurrency; None: 30)
    coordination: str | None = None  # rate_limit_coordination (Redis rate limiters; None: strict)
    burst: int | None = None  # rate_limit_burst (None: DEFAULT_BURST)
    token_burst: int | None = None  # rate_limit_token_burst (None: DEFAULT_BURST; needs rate_limit_tpm)

    @property
    def backend_options(self) -> dict[str, Any]:
        """The Redis outage policy and lease, as the limiters' keyword arguments (only those set)."""
        options = {
            "on_backend_error": self.on_backend_error,
            "local_fraction": self.local_fraction,
            "lease_seconds": self.lease_seconds,
            "coordination": self.coordination,
        }
        return {name: value for name, value in options.items() if value is not None}

    @property
    def key(self) -> str:
        return limiter_key(self.provider, self.model, self.role, self.shared_key)

    @property
    def kind(self) -> str:
        if self.max_concurrent_calls is None:
            return RATE  # (combined without a concurrency cap: the rate limiter enforces RPM and TPM)
        return COMBINED if self.mode == "combined" else CONCURRENCY

    @property
    def rpm(self) -> int | float:
        """The RPM a rate (or combined) limiter gets: as given, or auto-detected."""
        if self.rate_limit_rpm is not None:
            return self.rate_limit_rpm
        return get_default_rate_limit(self.provider, self.model)

    @property
    def limit(self) -> int | float:
        """max_concurrent_calls for a concurrency limiter, else the RPM (given or auto-detected)."""
        if self.max_concurrent_calls is not None:
            return self.max_concurrent_calls
        return self.rpm

    @property
    def ignored(self) -> dict[str, int | float]:
        """The rate settings of this role that ``max_concurrent_calls`` overrides: ``{key: value}``."""
        if self.kind != CONCURRENCY:
            return {}
        given = {
            "rate_limit_rpm": self.rate_limit_rpm,
            "rate_limit_tpm": self.rate_limit_tpm,
            "rate_limit_burst": self.burst,
            "rate_limit_token_burst": self.token_burst,
        }
        return {key: value for key, value in given.items() if value is not None}

    @property
    def bursts(self) -> tuple[int, int | None]:
        """The burst and token burst this role's limiter gets (token burst None: no token budget)."""
        burst = DEFAULT_BURST if self.burst is None else self.burst
        token_burst = DEFAULT_BURST if self.token_burst is None else self.token_burst
        return burst, (token_burst if self.tpm is not None else None)

    @property
    def tpm(self) -> int | float | None:
        """The token budget this role's limiter gets: none for a concurrency limiter."""
        return None if self.kind == CONCURRENCY else self.rate_limit_tpm

    def as_mapping(self) -> dict[str, Any]:
        """The limiter keys of a provider config that yields these settings."""
        return {
            "name": self.provider,
            "model": self.model,
            "max_concurrent_calls": self.max_concurrent_calls,
            "rate_limit_rpm": self.rate_limit_rpm,
            "rate_limit_tpm": self.rate_limit_tpm,
            "rate_limit_burst": self.burst,
            "rate_limit_token_burst": self.token_burst,
            "rate_limit_shared_key": self.shared_key,
            "rate_limit_mode": None if self.mode == "precedence" else self.mode,
            "rate_limit_backend": self.backend,
            "rate_limit_on_backend_error": self.on_backend_error,
            "rate_limit_local_fraction": self.local_fraction,
            "rate_limit_lease_seconds": self.lease_seconds,
            "rate_limit_coordination": self.coordination,
        }

    @property
    def auto_detected(self) -> str | None:
        """``provider[ model]``, whose default RPM this role gets, when it sets no rate_limit_rpm."""
        if self.rate_limit_rpm is not None:
            return None
        return self.provider + (f" {self.model}" if self.model is not None else "")

    def describe(self) -> str:
        """The settings that decide this role's limiter, by their keys, e.g. ``max_concurrent_calls 50``,
        ``rate_limit_rpm 600 and rate_limit_tpm 90000, burst 2`` (``limit_text``)."""
        rpm = self.rpm if self.kind == COMBINED else None
        bursts = (None, None) if self.kind == CONCURRENCY else self.bursts
        return limit_text(self.kind, self.limit, rpm, self.tpm, bursts=bursts, auto=self.auto_detected, words=SETTING)


def limiter_key(provider: str, model: str | None, role: str | None, shared_key: str | None) -> str:
    """``shared_key`` if set, else ``provider[_model][_role]`` (``/`` and ``:`` in the model become
    ``_``), as omnigen 0.1.18 names its limiters."""
    if shared_key:
        return shared_key
    parts = [provider]
    if model is not None:
        parts.append(model.replace("/", "_").replace(":", "_"))
    if role:
        parts.append(role)
    return "_".join(parts)


def role_settings(provider: object, provider_config: object, role: str | None, *, source: str) -> RoleSettings:
    """Validates one role's provider settings (None: none). Raises ConfigError."""
    if provider_config is None:
        provider_config = {}
    if not isinstance(provider_config, Mapping):
        raise ConfigError(
            f"must be a mapping of provider settings, got {shown(provider_config)}", source=source, role=role
        )

    def checked(key: str, check: Any, *args: Any, **kwargs: Any) -> Any:
        value = provider_config.get(key)
        if value is None:
            return None
        try:
            return check(key, value, *args, **kwargs)
        except InvalidValue as error:
            raise ConfigError(f"{error.requirement}, got {shown(value)}", source=source, role=role, key=key) from None

    try:
        provider_name = label("name", provider, allow_empty=False)
    except InvalidValue as error:
        raise ConfigError(f"{error.requirement}, got {shown(provider)}", source=source, role=role, key="name") from None
    _refuse_unknown_keys(provider_config, source=source, role=role)
    max_concurrent = checked("max_concurrent_calls", whole_number, maximum=MAX_CONCURRENT)
    rpm = checked("rate_limit_rpm", positive_rate)
    tpm = checked("rate_limit_tpm", positive_rate)
    burst = checked("rate_limit_burst", whole_number)
    token_burst = checked("rate_limit_token_burst", whole_number)
    if token_burst is not None and tpm is None:
        raise ConfigError(
            "needs rate_limit_tpm (a token budget) to apply to", source=source, role=role, key="rate_limit_token_burst"
        )
    mode = provider_config.get("rate_limit_mode")
    if mode is not None and mode not in MODES:
        raise ConfigError(
            f"must be one of {', '.join(MODES)}, got {shown(mode)}", source=source, role=role, key="rate_limit_mode"
        )
    backend = provider_config.get("rate_limit_backend")
    if backend is not None:
        try:
            backend = check_backend(backend)
        except ValueError as error:
            raise ConfigError(
                f"{error}, got {shown(backend)}", source=source, role=role, key="rate_limit_backend"
            ) from None
        if backend == "memory":
            backend = None
    redis_options = _redis_options(provider_config, backend, source=source, role=role)
    settings = RoleSettings(
        role=role,
        provider=provider_name,
        model=checked("model", label, allow_empty=False),
        max_concurrent_calls=max_concurrent,
        rate_limit_rpm=None if rpm is None else provider_config["rate_limit_rpm"],
        shared_key=checked("rate_limit_shared_key", label, allow_empty=False),
        rate_limit_tpm=None if tpm is None else provider_config["rate_limit_tpm"],
        mode="precedence" if mode is None else mode,
        backend=backend,
        burst=burst,
        token_burst=token_burst,
        **redis_options,
    )
    return settings


def _redis_options(
    provider_config: Mapping[str, Any], backend: str | None, *, source: str, role: str | None
) -> dict[str, Any]:
    """rate_limit_on_backend_error / _local_fraction / _lease_seconds / _coordination, checked: they need a Redis
    backend, and the policy ``local`` needs a fraction (ConfigError otherwise)."""
    given = {key: provider_config[key] for key in REDIS_ONLY_KEYS if provider_config.get(key) is not None}
    if not given:
        return {}
    if backend is None or not is_redis(backend):
        key = next(iter(given))
        raise ConfigError(
            f"applies only to a Redis rate_limit_backend (redis://...), got backend {shown(backend or 'memory')}",
            source=source,
            role=role,
            key=key,
        )
    policy = given.get("rate_limit_on_backend_error", "closed")
    leased = given.get("rate_limit_coordination") == "lease"
    try:
        policy, fraction = check_policy(policy, given.get("rate_limit_local_fraction"), leased)
    except ValueError as error:
        key = "rate_limit_on_backend_error" if "on_backend_error must" in str(error) else "rate_limit_local_fraction"
        message = (
            str(error)
            .replace("on_backend_error", "rate_limit_on_backend_error")
            .replace("local_fraction", "rate_limit_local_fraction")
        )
        raise ConfigError(message, source=source, role=role, key=key) from None
    options: dict[str, Any] = {"local_fraction": fraction}
    if "rate_limit_on_backend_error" in given:
        options["on_backend_error"] = policy
    coordination = given.get("rate_limit_coordination")
    if coordination is not None:
        if coordination not in COORDINATIONS:
            raise ConfigError(
                f"must be one of {', '.join(COORDINATIONS)}, got {shown(coordination)}",
                source=source,
                role=role,
                key="rate_limit_coordination",
            )
        options["coordination"] = coordination
    lease = given.get("rate_limit_lease_seconds")
    if lease is not None:
        try:
            options["lease_seconds"] = check_lease(lease)
        except ValueError as error:
            raise ConfigError(
                str(error).replace("lease_seconds", "rate_limit_lease_seconds"),
                source=source,
                role=role,
                key="rate_limit_lease_seconds",
            ) from None
    return options


def ignored_text(settings: RoleSettings) -> str:
    """``rate_limit_rpm 500 is ignored: max_concurrent_calls 50 takes precedence (...)``."""
    ignored = [f"{key} {value}" for key, value in settings.ignored.items()]
    verb = " are" if len(ignored) > 1 else " is"
    return (
        " and ".join(ignored) + f"{verb} ignored: max_concurrent_calls {settings.max_concurrent_calls} takes "
        "precedence (set rate_limit_mode: combined to enforce both)"
    )
