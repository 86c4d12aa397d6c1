"""ProviderRateLimitManager: one limiter per provider/model/role (or per shared key), built from
OmniGen's provider configuration, with the surface of omnigen 0.1.18's manager."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from omnilimit import _async
from omnilimit._log import logger
from omnilimit.build import Limiter, build_limiter
from omnilimit.combined import CombinedLimiter
from omnilimit.concurrency import ConcurrencyLimiter
from omnilimit.config import (
    COMBINED,
    CONCURRENCY,
    DEFAULT_PROVIDER,
    Config,
    LimiterPlan,
    RoleSettings,
    ignored_text,
    limit_text,
    load_yaml,
    parse_config,
    role_settings,
)
from omnilimit.feedback import Headers
from omnilimit.rate import RateLimiter

F = TypeVar("F", bound=Callable[..., Any])

_NO_SETTINGS: Mapping[str, Any] = {}
_SOURCE = "<provider_config>"  # where get_limiter()'s ConfigErrors come from


@dataclass
class _Entry:
    limiter: Limiter
    kind: str
    limit: int | float
    tpm: int | float | None = None
    rpm: int | float | None = None  # a combined limiter's RPM (its `limit` is the concurrency cap)
    bursts: tuple[int | None, int | None] = (None, None)  # burst and token burst (None: none)
    backend: str | None = None  # rate_limit_backend (None: in-process)
    backend_options: tuple[tuple[str, Any], ...] = ()  # the Redis outage policy and lease
    rpm_ignored_logged: bool = False
    mismatch_logged: bool = False
    roles: list[str | None] = field(default_factory=list)


class ProviderRateLimitManager:
    """The limiters of a generation run, keyed as omnigen keys them.

    Use it as omnigen does, passing each role's provider settings with every call::

        manager = ProviderRateLimitManager()
        limiter = manager.get_limiter("openai", {"model": "gpt-4o-mini", "max_concurrent_calls": 50},
                                      role="user_followup")

    or load a whole configuration first, validated before any limiter is used::

        manager = ProviderRateLimitManager.from_yaml("config.yaml")
        limiter = manager.limiter_for("user_followup")

    Every method is thread-safe. ``get_limiter`` for a known configuration is a dictionary lookup;
    ``get_all_stats`` and ``get_rpm`` read atomics and never wait behind a caller.
    """

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._by_call: dict[tuple[Any, ...], Limiter] = {}  # get_limiter()'s arguments -> limiter
        self._role_keys: dict[str, str] = {}
        self._lock = threading.Lock()  # creation only; held for dictionary work, never while waiting
        self._closed = False
        self.config: Config | None = None

    # ---- building from a configuration ---------------------------------------------------------

    @classmethod
    def from_config(cls, config: object, source: str = "<config>") -> ProviderRateLimitManager:
        """A manager for a configuration mapping (a parsed OmniGen YAML document), validated whole
        first. Raises ConfigError."""
        return cls._from_parsed(parse_config(config, source))

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> ProviderRateLimitManager:
        """A manager for an OmniGen YAML file, validated whole first. Raises ConfigError (or
        OSError when the file cannot be read)."""
        return cls._from_parsed(load_yaml(path))

    @classmethod
    def _from_parsed(cls, config: Config) -> ProviderRateLimitManager:
        manager = cls()
        manager.config = config
        for warning in config.warnings:
            logger.warning(warning)
        for plan in config.limiters.values():
            first = plan.roles[0]
            entry = manager._create(plan.key, plan.kind, plan.limit, first, plan.tpm, plan.rpm, _bursts(plan))
            entry.rpm_ignored_logged = True  # already in the configuration's warnings
            entry.mismatch_logged = True
            for settings in plan.roles:
                entry.roles.append(settings.role)
                manager._role_keys[str(settings.role)] = plan.key
                manager._remember_call(
                    _call_key(settings.provider, settings.as_mapping(), settings.role), entry.limiter
                )
        return manager

    def reload(self, config: object) -> list[str]:
        """Applies a changed configuration (a mapping, or the path of a YAML file) to the live
        limiters, after validating it whole (ConfigError: nothing changes).

        A limiter whose key and kind stay changes its limit in place, waiters included
        (``set_max_concurrent``, ``set_rate``, ``set_tokens_per_minute``). A new key gets a new
        limiter; so does a key whose kind changes or whose token budget appears or disappears
        (callers holding the old limiter keep it until their next ``get_limiter`` /
        ``limiter_for``). Keys no longer configured leave the manager. Returns what changed, in
        words (also logged)."""
        parsed = load_yaml(config) if isinstance(config, (str, os.PathLike)) else parse_config(config)
        changes: list[str] = []
        with self._lock:
            for plan in parsed.limiters.values():
                old = self._entries.get(plan.key)
                if old is None:
                    entry = self._create(
                        plan.key, plan.kind, plan.limit, plan.roles[0], plan.tpm, plan.rpm, _bursts(plan)
                    )
                    changes.append(f"{plan.key}: new limiter, {_describe(entry)}")
                elif (
                    old.kind != plan.kind
                    or (old.tpm is None) != (plan.tpm is None)
                    or (old.backend, old.backend_options)
                    != (
                        plan.backend,
                        plan.backend_options,
                    )
                ):
                    entry = self._create(
                        plan.key, plan.kind, plan.limit, plan.roles[0], plan.tpm, plan.rpm, _bursts(plan)
                    )
                    changes.append(f"{plan.key}: replaced, {_describe(old)} -> {_describe(entry)}")
                else:
                    entry = old
                    before = _describe(old)
                    _change_in_place(old, plan.limit, plan.tpm, plan.rpm, _bursts(plan))
                    if _describe(old) != before:
                        changes.append(f"{plan.key}: {before} -> {_describe(old)}")
                entry.roles = [settings.role for settings in plan.roles]
                entry.rpm_ignored_logged = entry.mismatch_logged = True  # in the configuration's warnings
            for key in [key for key in self._entries if key not in parsed.limiters]:
                changes.append(f"{key}: removed ({_describe(self._entries.pop(key))})")
            self._role_keys = {str(s.role): plan.key for plan in parsed.limiters.values() for s in plan.roles}
            by_call: dict[tuple[Any, ...], Limiter] = {}
            for plan in parsed.limiters.values():
                for settings in plan.roles:
                    by_call[_call_key(settings.provider, settings.as_mapping(), settings.role)] = self._entries[
                        plan.key
                    ].limiter
            self._by_call = by_call  # one assignment: get_limiter's lock-free lookup sees old or new
            self.config = parsed
        for warning in parsed.warnings:
            logger.warning(warning)
        for change in changes:
            logger.info("reload: %s", change)
        if not changes:
            logger.info("reload: no limiter changed")
        return changes

    def limiter_for(self, role: str) -> Limiter:
        """The limiter of ``role`` in the loaded configuration. Raises KeyError for an unknown role."""
        key = self._role_keys.get(role)
        if key is None:
            known = ", ".join(sorted(self._role_keys)) or "none (no configuration was loaded)"
            raise KeyError(f"unknown role {role!r}; the configuration's roles: {known}")
        return self._entries[key].limiter

    # ---- omnigen's surface --------------------------------------------------------------------

    def get_limiter(
        self, provider_name: str, provider_config: Mapping[str, Any] | None = None, role: str | None = None
    ) -> Limiter:
        """The limiter for these settings, created on first use: a ConcurrencyLimiter when
        ``max_concurrent_calls`` is set (it takes precedence over ``rate_limit_rpm``), else a
        RateLimiter at ``rate_limit_rpm`` or the auto-detected limit. Keyed by
        ``rate_limit_shared_key``, else ``provider[_model][_role]``. Raises ConfigError for bad
        values."""
        settings = _NO_SETTINGS if provider_config is None else provider_config
        try:
            call = _call_key(provider_name, settings, role)
            return self._by_call[call]
        except (KeyError, TypeError, AttributeError):  # new settings, or values a dict cannot key
            return self._resolve(provider_name, provider_config, role)

    def report_rate_limited(self, role: str, headers: Headers = None, retry_after: float | str | None = None) -> float:
        """The provider answered 429 to a call of `role`: pause that role's limiter, and so every
        role sharing it, once (``on_rate_limited``). Returns the seconds until the pause ends.
        Raises KeyError for a role the configuration does not have."""
        return self.limiter_for(role).on_rate_limited(retry_after=retry_after, headers=headers)

    def acquire(self, provider_name: str, timeout: float | None = 60) -> bool:
        """``get_limiter(provider_name).acquire(timeout)`` (omnigen's older API)."""
        return self.get_limiter(provider_name).acquire(timeout=timeout)

    async def acquire_async(self, provider_name: str, timeout: float | None = 60) -> bool:
        """``await get_limiter(provider_name).acquire_async(timeout)``: ``acquire()`` for a coroutine."""
        return await self.get_limiter(provider_name).acquire_async(timeout=timeout)

    def limit(
        self,
        role: str,
        *,
        timeout: float | _async.DefaultTimeout | None = _async.DEFAULT_TIMEOUT,
        tokens: int | None = None,
    ) -> Callable[[F], F]:
        """A decorator: each call of the function (sync or ``async def``) runs under the limiter
        of ``role`` in the loaded configuration, looked up at each call (so a ``reload()`` that
        replaces it applies to the next call). ``timeout`` and ``tokens`` are those of
        ``limiter.limit(timeout=..., tokens=...)``; without them a call waits the limiter's default
        timeout, as ``with limiter:`` does. A bad timeout or token count raises ValueError here, as
        does ``tokens`` for a role limited by a ConcurrencyLimiter (at the call if the role is not
        known yet, or a ``reload()`` made it one). Raises KeyError at the call for an unknown role."""
        return _async.role_limit(
            lambda: self.limiter_for(role),
            role,
            {"timeout": timeout, "tokens": tokens},
            owner=f"{type(self).__name__}.limit",
        )

    def record_request(self, provider_name: str) -> None:
        """``get_limiter(provider_name).record_request()`` (omnigen's older API)."""
        self.get_limiter(provider_name).record_request()

    def get_rpm(self) -> int:
        """Requests in the last 60 s over every limiter: ``record_request()`` calls of RPM limiters
        and releases of concurrency limiters."""
        return sum(limiter.get_current_rpm() for limiter in self._snapshot().values())

    def get_all_stats(self) -> dict[str, dict[str, Any]]:
        """``{key: limiter.get_stats()}`` for every limiter. Never blocks."""
        return {key: limiter.get_stats() for key, limiter in self._snapshot().items()}

    @property
    def limiters(self) -> dict[str, Limiter]:
        """A copy of ``{key: limiter}``."""
        return self._snapshot()

    def close(self) -> None:
        """Closes every limiter of the manager (``limiter.close()``: every waiter, thread or
        coroutine, gets LimiterClosed), and those it builds from now on: after Ctrl-C, a worker
        that reaches a role for the first time stops too."""
        with self._lock:
            self._closed = True
            limiters = [entry.limiter for entry in self._entries.values()]
        for limiter in limiters:
            limiter.close()

    @property
    def closed(self) -> bool:
        return self._closed

    # ---- internals ----------------------------------------------------------------------------

    def _snapshot(self) -> dict[str, Limiter]:
        with self._lock:
            return {key: entry.limiter for key, entry in self._entries.items()}

    def _resolve(self, provider_name: object, provider_config: object, role: str | None) -> Limiter:
        provider = DEFAULT_PROVIDER if provider_name is None else provider_name  # null counts as not set
        settings = role_settings(provider, provider_config, role, source=_SOURCE)
        with self._lock:
            entry = self._entries.get(settings.key)
            if entry is None:
                entry = self._create(
                    settings.key,
                    settings.kind,
                    settings.limit,
                    settings,
                    settings.tpm,
                    _rpm_of(settings),
                    _bursts_of(settings),
                )
            elif (settings.kind, settings.limit, settings.tpm, _rpm_of(settings), _bursts_of(settings)) != (
                entry.kind,
                entry.limit,
                entry.tpm,
                entry.rpm,
                entry.bursts,
            ) and (not entry.mismatch_logged):
                entry.mismatch_logged = True
                logger.warning(
                    "limiter '%s' already exists (%s); role %s asks for %s: keeping the existing limiter "
                    "(warned once per limiter)",
                    settings.key,
                    _describe(entry),
                    role,
                    settings.describe(),
                )
            if settings.ignored and not entry.rpm_ignored_logged:
                entry.rpm_ignored_logged = True
                logger.warning("limiter '%s' (role %s): %s", settings.key, role, ignored_text(settings))
            if role not in entry.roles:
                entry.roles.append(role)
            given = provider_config if isinstance(provider_config, Mapping) else _NO_SETTINGS
            with contextlib.suppress(TypeError):  # unhashable values: validated on every call instead
                self._remember_call(_call_key(provider_name, given, role), entry.limiter)
            return entry.limiter

    def _create(
        self,
        key: str,
        kind: str,
        limit: int | float,
        settings: RoleSettings,
        tpm: int | float | None = None,
        rpm: int | float | None = None,
        bursts: tuple[int | None, int | None] = (None, None),
    ) -> _Entry:
        """Builds and registers a limiter. Callers hold the lock, or own the manager alone."""
        limiter = build_limiter(key, kind, limit, settings, tpm, rpm, bursts)
        entry = _Entry(
            limiter=limiter,
            kind=kind,
            limit=limit,
            tpm=tpm,
            rpm=rpm,
            bursts=bursts,
            backend=settings.backend,
            backend_options=tuple(sorted(settings.backend_options.items())),
        )
        self._entries[key] = entry
        if self._closed:
            limiter.close()
        return entry

    def _remember_call(self, call: tuple[Any, ...], limiter: Limiter) -> None:
        self._by_call[call] = limiter


def _call_key(provider_name: object, settings: Mapping[str, Any], role: str | None) -> tuple[Any, ...]:
    """What get_limiter() decides by; equal keys always mean the same limiter."""
    return (
        provider_name,
        role,
        settings.get("model"),
        settings.get("max_concurrent_calls"),
        settings.get("rate_limit_rpm"),
        settings.get("rate_limit_tpm"),
        settings.get("rate_limit_burst"),
        settings.get("rate_limit_token_burst"),
        settings.get("rate_limit_shared_key"),
        settings.get("rate_limit_backend"),
        settings.get("rate_limit_on_backend_error"),
        settings.get("rate_limit_local_fraction"),
        settings.get("rate_limit_lease_seconds"),
        settings.get("rate_limit_coordination"),
    )


def _rpm_of(settings: RoleSettings) -> int | float | None:
    return settings.rpm if settings.kind == COMBINED else None


def _bursts(plan: LimiterPlan) -> tuple[int | None, int | None]:
    return plan.burst, plan.token_burst


def _bursts_of(settings: RoleSettings) -> tuple[int | None, int | None]:
    """The burst and token burst of a role's own limiter (None for a concurrency limiter)."""
    return (None, None) if settings.kind == CONCURRENCY else settings.bursts


def _change_in_place(
    entry: _Entry,
    limit: int | float,
    tpm: int | float | None,
    rpm: int | float | None,
    bursts: tuple[int | None, int | None],
) -> None:
    """Sets a live limiter's limits; the kind and the presence of a token budget stay."""
    limiter = entry.limiter
    if isinstance(limiter, (RateLimiter, CombinedLimiter)):
        burst, token_burst = bursts
        if burst is not None and burst != entry.bursts[0]:
            limiter.set_burst(burst)
        if token_burst is not None and token_burst != entry.bursts[1]:
            limiter.set_token_burst(token_burst)
    if isinstance(limiter, (ConcurrencyLimiter, CombinedLimiter)) and limit != entry.limit:
        limiter.set_max_concurrent(int(limit))
    if isinstance(limiter, RateLimiter) and limit != entry.limit:
        limiter.set_rate(limit)
    if isinstance(limiter, CombinedLimiter) and rpm is not None and rpm != entry.rpm:
        limiter.set_rate(rpm)
    if isinstance(limiter, (RateLimiter, CombinedLimiter)) and tpm is not None and tpm != entry.tpm:
        limiter.set_tokens_per_minute(tpm)
    entry.limit, entry.tpm, entry.rpm, entry.bursts = limit, tpm, rpm, bursts


def _describe(entry: _Entry) -> str:
    """A live limiter's limits, for logs and reload(): ``limit_text``'s words."""
    return limit_text(entry.kind, entry.limit, entry.rpm, entry.tpm, bursts=entry.bursts, backend=entry.backend)
