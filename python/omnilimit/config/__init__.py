"""OmniGen's provider configuration, validated whole when it is loaded.

The file OmniGen users already have::

    providers:
      user_followup:                 # a role
        name: openai                 # the provider (no name: "default")
        model: gpt-4o-mini
        max_concurrent_calls: 50     # a concurrency limiter...
        rate_limit_rpm: 500          # ...or an RPM limiter (ignored when both are set)
        rate_limit_burst: 5          # requests that may go at once (default 1: strict pacing)
        rate_limit_shared_key: acct  # roles with the same key share one limiter
        api_key: ...                 # every other key is the provider's, not the limiter's
    generation:
      parallel_workers: 10

Rules (docs/guide/configuration.md repeats them):

- A key whose value is ``null`` counts as not set.
- ``${VAR}`` in a value the limiter reads (``name``, ``model``, the limiter keys,
  ``generation.parallel_workers``) is replaced by the environment variable ``VAR``, as OmniGen's
  loader does; an unset variable is a ConfigError naming it. A value that is one ``${VAR}`` and
  expands to a number (``rate_limit_rpm: ${RPM}``) counts as that number.
- A key in the limiter's namespace (``rate_limit_*``, ``max_concurrent*``) that is not one of
  ``LIMITER_KEYS`` is a ConfigError naming the closest known key: a typo never leaves a limit
  unset. Every other key is the provider client's.
- The limiter key is ``rate_limit_shared_key`` when set, else ``provider[_model][_role]`` with
  ``/`` and ``:`` in the model replaced by ``_``.
- ``max_concurrent_calls`` takes precedence over ``rate_limit_rpm``; an RPM limiter without
  ``rate_limit_rpm`` gets the auto-detected limit (defaults.py).
- Roles that share a key but set different limits share one limiter with the smallest of them
  (a concurrency limit, if any role sets one, else the smallest RPM; the smallest burst), with one
  warning naming the key and the values.
- Bad values raise ConfigError naming the file, the role and the key: nothing falls back to a
  default silently.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from omnilimit._shown import printable, redact, shown
from omnilimit._validate import InvalidValue, label, positive_rate, whole_number
from omnilimit.defaults import get_default_rate_limit
from omnilimit.errors import ConfigError
from omnilimit.spec import DEFAULT_BURST, MAX_CONCURRENT, check_backend, check_lease, check_policy, is_redis

CONCURRENCY = "concurrency"
RATE = "rate"
COMBINED = "combined"  # rate_limit_mode: combined with max_concurrent_calls: every dimension at once
MODES = ("precedence", "combined")  # rate_limit_mode's values; precedence is the guide's rule

DEFAULT_PROVIDER = "default"
LIMITER_KEYS = (
    "max_concurrent_calls",
    "rate_limit_rpm",
    "rate_limit_tpm",
    "rate_limit_burst",
    "rate_limit_token_burst",
    "rate_limit_shared_key",
    "rate_limit_mode",
    "rate_limit_backend",
    "rate_limit_on_backend_error",
    "rate_limit_local_fraction",
    "rate_limit_lease_seconds",
)
REDIS_ONLY_KEYS = ("rate_limit_on_backend_error", "rate_limit_local_fraction", "rate_limit_lease_seconds")
LIMITER_NAMESPACE = ("rate_limit_", "max_concurrent")  # a key starting so is the limiter's: never a client's
NUMERIC_KEYS = (
    "max_concurrent_calls",
    "rate_limit_rpm",
    "rate_limit_tpm",
    "rate_limit_burst",
    "rate_limit_token_burst",
    "rate_limit_local_fraction",
    "rate_limit_lease_seconds",
    "generation.parallel_workers",
)
NAMING_KEYS = ("name", "model")  # read by the limiter (its key, the auto-detected RPM), not limits
TYPO_EDITS = 2  # a key this close to a limiter key, outside its namespace, is a typo of it too
EXPANDED_KEYS = (*NAMING_KEYS, *LIMITER_KEYS)  # the values ${VAR} is expanded in (the limiter reads them)


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
    burst: int | None = None  # rate_limit_burst (None: DEFAULT_BURST)
    token_burst: int | None = None  # rate_limit_token_burst (None: DEFAULT_BURST; needs rate_limit_tpm)

    @property
    def backend_options(self) -> dict[str, Any]:
        """The Redis outage policy and lease, as the limiters' keyword arguments (only those set)."""
        options = {
            "on_backend_error": self.on_backend_error,
            "local_fraction": self.local_fraction,
            "lease_seconds": self.lease_seconds,
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
        }

    def describe(self) -> str:
        """The setting that decides this role's limiter, e.g. ``max_concurrent_calls 50``."""
        if self.kind == CONCURRENCY:
            return f"max_concurrent_calls {self.max_concurrent_calls}"
        tpm = f" and rate_limit_tpm {self.rate_limit_tpm}" if self.rate_limit_tpm is not None else ""
        if self.burst is not None:
            tpm += f", burst {self.burst}"
        if self.token_burst is not None:
            tpm += f", token burst {self.token_burst}"
        if self.kind == COMBINED:
            return f"combined: max_concurrent_calls {self.max_concurrent_calls} and {self.rpm} RPM{tpm}"
        if self.rate_limit_rpm is not None:
            return f"rate_limit_rpm {self.rate_limit_rpm}{tpm}"
        return f"auto-detected {self.limit} RPM{tpm}"


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
    if backend is not None and settings.kind == COMBINED:
        raise ConfigError(
            "a combined limiter (rate_limit_mode: combined) cannot be shared between processes yet",
            source=source,
            role=role,
            key="rate_limit_backend",
        )
    if backend is not None and settings.tpm is not None:
        raise ConfigError(
            "a limiter with a token budget (rate_limit_tpm) cannot be shared between processes yet",
            source=source,
            role=role,
            key="rate_limit_backend",
        )
    return settings


def _refuse_unknown_keys(provider_config: Mapping[Any, Any], *, source: str, role: str | None) -> None:
    """A key the limiter does not know, in its namespace (``rate_limit_rmp``) or within
    ``TYPO_EDITS`` edits of one of its keys (``max_concurent_calls``), is a typo: a ConfigError
    naming the closest known key, never a limit left unset."""
    for key in provider_config:
        if not isinstance(key, str) or key in LIMITER_KEYS or key in NAMING_KEYS:
            continue
        if key.startswith(LIMITER_NAMESPACE) or _near_a_limiter_key(key):
            closest = closest_key(key, LIMITER_KEYS)
            raise ConfigError(
                f"is not a limiter setting: did you mean {closest!r}? (keys starting with rate_limit_ or "
                f"max_concurrent are the limiter's; its keys are {', '.join(LIMITER_KEYS)})",
                source=source,
                role=role,
                key=key,
            )


def _bigrams(text: str) -> frozenset[str]:
    return frozenset(text[i : i + 2] for i in range(len(text) - 1))


_KNOWN_BIGRAMS = [(name, _bigrams(name)) for name in LIMITER_KEYS]


def _near_a_limiter_key(key: str) -> bool:
    """Whether ``key`` is within ``TYPO_EDITS`` edits of a limiter key. An edit changes at most
    two of a word's bigrams, so a key sharing fewer than ``len(bigrams) - 2 * TYPO_EDITS`` of a
    limiter key's bigrams is not near it: a file of many client keys costs set intersections, not
    an edit distance each."""
    if not 12 <= len(key) <= 30:
        return False
    grams = _bigrams(key)
    return any(
        abs(len(key) - len(name)) <= TYPO_EDITS
        and len(grams & known) >= len(known) - 2 * TYPO_EDITS
        and _edits(key, name) <= TYPO_EDITS
        for name, known in _KNOWN_BIGRAMS
    )


def closest_key(key: str, known: tuple[str, ...]) -> str:
    """The known key nearest to ``key``: fewest edits, then the most characters in common."""
    return min(known, key=lambda name: (_edits(key, name), -difflib.SequenceMatcher(None, key, name).ratio()))


def _edits(a: str, b: str) -> int:
    """The edits that turn ``a`` into ``b``: insertions, deletions, substitutions and swaps of two
    neighbours (optimal string alignment distance)."""
    if len(a) > 200:  # a key this long is far from every limiter key; no quadratic work on it
        return len(a)
    rows = [list(range(len(b) + 1))]
    for i, x in enumerate(a, 1):
        row = [i] + [0] * len(b)
        for j, y in enumerate(b, 1):
            row[j] = min(rows[-1][j] + 1, row[j - 1] + 1, rows[-1][j - 1] + (x != y))
            if i > 1 and j > 1 and x == b[j - 2] and a[i - 2] == y:
                row[j] = min(row[j], rows[-2][j - 2] + 1)
        rows.append(row)
    return rows[-1][-1]


_VARIABLE = re.compile(r"\$\{([^}]+)\}")  # ${VAR}, as OmniGen's loader finds it


def expand_environment(value: object, *, source: str, role: str | None, key: str) -> object:
    """``value`` with each ``${VAR}`` replaced by the environment variable VAR, as OmniGen's loader
    does (non-strings are returned as they are). A value that is one ``${VAR}`` and expands to a
    YAML number is that number. Raises ConfigError naming a variable that is not set (OmniGen
    would keep the text, and name a different limiter, segment or Redis key than the user meant)."""
    if not isinstance(value, str) or "${" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        found = os.environ.get(name)
        if found is None:
            where = "" if value == match.group(0) else f" (${{{name}}} in {shown(value)})"
            raise ConfigError(
                f"the environment variable {name!r} is not set{where}",
                source=source,
                role=role,
                key=key,
            )
        return found

    expanded = _VARIABLE.sub(replace, value)
    if key in NUMERIC_KEYS and _VARIABLE.fullmatch(value):
        try:
            number = yaml.safe_load(expanded)
        except yaml.YAMLError:
            return expanded
        if isinstance(number, (int, float)) and not isinstance(number, bool):
            return number
    return expanded


def _expanded(provider_config: object, *, source: str, role: str | None) -> object:
    """A role's provider settings with ``${VAR}`` expanded in the values the limiter reads."""
    if not isinstance(provider_config, Mapping):
        return provider_config
    return {
        key: expand_environment(value, source=source, role=role, key=key) if key in EXPANDED_KEYS else value
        for key, value in provider_config.items()
    }


def _redis_options(
    provider_config: Mapping[str, Any], backend: str | None, *, source: str, role: str | None
) -> dict[str, Any]:
    """rate_limit_on_backend_error / _local_fraction / _lease_seconds, checked: they need a Redis
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
    try:
        policy, fraction = check_policy(policy, given.get("rate_limit_local_fraction"))
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


def ignored_text(settings: RoleSettings) -> str:
    """``rate_limit_rpm 500 is ignored: max_concurrent_calls 50 takes precedence (...)``."""
    ignored = [f"{key} {value}" for key, value in settings.ignored.items()]
    verb = " are" if len(ignored) > 1 else " is"
    return (
        " and ".join(ignored) + f"{verb} ignored: max_concurrent_calls {settings.max_concurrent_calls} takes "
        "precedence (set rate_limit_mode: combined to enforce both)"
    )


def load_yaml(path: str | os.PathLike[str]) -> Config:
    """Reads and validates a YAML configuration file. Raises ConfigError (OSError if unreadable)."""
    return parse_config(read_yaml(path), os.fspath(path))


MAX_FILE_BYTES = 1 << 20  # a configuration file is a few KB; a larger one is refused, never read whole
MAX_ALIASES = 100  # alias references (*name) in one document
MAX_DEPTH = 32  # levels of nesting


def read_yaml(path: str | os.PathLike[str]) -> Any:
    """The parsed YAML document of a configuration file, not yet validated. Raises ConfigError for
    a file that is too large, not UTF-8, malformed, bounded badly (more than ``MAX_ALIASES``
    aliases or ``MAX_DEPTH`` levels: a file written to exhaust memory or the stack), with a key
    given twice, or empty; OSError only when it cannot be read. The whole file is parsed within a
    second and a few MB whatever it holds."""
    source = os.fspath(path)
    with open(source, "rb") as stream:
        data = stream.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"the file is larger than {MAX_FILE_BYTES:,} bytes: not a configuration", source=source)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"not UTF-8 text ({error.reason} at byte {error.start})", source=source) from None
    try:
        document = yaml.load(text, Loader=_ConfigLoader)
    except yaml.MarkedYAMLError as error:
        raise ConfigError(yaml_error_text(error), source=source) from None
    except yaml.YAMLError as error:
        raise ConfigError(f"malformed YAML: {printable(str(error))[:300]}", source=source) from None
    except Exception as error:  # a value the YAML constructors cannot make (huge numbers, bad floats...)
        detail = printable(str(error))[:200]
        raise ConfigError(
            f"malformed YAML: a value cannot be read ({type(error).__name__}: {detail})", source=source
        ) from None
    if document is None:
        raise ConfigError("the file is empty: it needs a 'providers' section", source=source)
    return document


def yaml_error_text(error: yaml.MarkedYAMLError) -> str:
    """Where PyYAML found the problem and, when it knows, where the construct it was reading
    starts: ``line 6, column 1: found unexpected end of stream, while scanning a quoted scalar that
    starts at line 4, column 12`` (an unclosed quote is found at the end of the file, but is where
    it was opened)."""

    def at(mark: yaml.Mark | None) -> str:
        return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""

    found, started = at(error.problem_mark), at(error.context_mark)
    text = printable(error.problem or "malformed YAML")
    if error.context:
        text += f", {printable(error.context)}"
        if started and started != found:
            text += f" that starts at {started}"
    return f"{found}: {text}" if found else text


def file_error_message(path: str, error: BaseException) -> str:
    """What a command says of a configuration file it could not use: a ConfigError as it is, an
    unreadable file or one that is not UTF-8 with the path."""
    if isinstance(error, UnicodeDecodeError):
        return f"{path}: not UTF-8 text ({error.reason} at byte {error.start})"
    if isinstance(error, OSError):
        return f"{path}: cannot read the file: {error.strerror or error}"
    return str(error)


class _ConfigLoader(yaml.SafeLoader):
    """A SafeLoader for configuration files: it refuses a key given twice in one mapping (PyYAML
    keeps the last one silently, which would drop a role's settings without a word), accepts merge
    keys (``<<: *defaults``) as ``yaml.safe_load`` does, and stops a document with more than
    ``MAX_ALIASES`` aliases or ``MAX_DEPTH`` levels of nesting (an alias bomb, or nesting deep
    enough to exhaust the stack) at the place it goes wrong."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise yaml.composer.ComposerError(
                    None, None, f"more than {MAX_ALIASES} aliases (*name) in one file", self._mark()
                )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep", self._mark())
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def _mark(self) -> yaml.Mark:
        """Where the next event starts in the file."""
        return self.peek_event().start_mark  # type: ignore[no-untyped-call, no-any-return]

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # merged keys may be overridden: not duplicates
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: SafeLoader reports it itself
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {shown(key)}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


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
        chosen = {
            CONCURRENCY: f"max_concurrent_calls {limit}",
            COMBINED: f"combined: max_concurrent_calls {limit} and {rpm} RPM",
        }.get(kind, f"{limit} RPM")
        chosen += f" and {tpm} TPM" if tpm is not None else ""
        chosen += f", burst {burst}" if burst is not None else ""
        chosen += f", token burst {token_burst}" if token_burst is not None else ""
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
