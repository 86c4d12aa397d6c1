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

The package, by what it holds: ``reading`` (the YAML file and its limits), ``keys`` (the kinds, the
key tables and the typo rule), ``environment`` (``${VAR}``), ``roles`` (one role's settings),
``plans`` (the whole configuration and the limiters it makes) and ``describe`` (a limiter's limits
in words, written once). Every public name is importable from ``omnilimit.config``.
"""

from __future__ import annotations

from omnilimit.config.describe import LIMITER, SETTING, TABLE, limit_phrases, limit_text, number_text
from omnilimit.config.environment import expand_environment
from omnilimit.config.keys import (
    COMBINED,
    CONCURRENCY,
    EXPANDED_KEYS,
    LIMITER_KEYS,
    LIMITER_NAMESPACE,
    MODES,
    NAMING_KEYS,
    NUMERIC_KEYS,
    RATE,
    REDIS_ONLY_KEYS,
    TYPO_EDITS,
    closest_key,
)
from omnilimit.config.plans import DEFAULT_PROVIDER, Config, LimiterPlan, load_yaml, parse_config
from omnilimit.config.reading import (
    MAX_ALIASES,
    MAX_DEPTH,
    MAX_FILE_BYTES,
    file_error_message,
    read_yaml,
    yaml_error_text,
)
from omnilimit.config.roles import RoleSettings, ignored_text, limiter_key, role_settings

__all__ = [
    "COMBINED",
    "CONCURRENCY",
    "DEFAULT_PROVIDER",
    "EXPANDED_KEYS",
    "LIMITER",
    "LIMITER_KEYS",
    "LIMITER_NAMESPACE",
    "MAX_ALIASES",
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "MODES",
    "NAMING_KEYS",
    "NUMERIC_KEYS",
    "RATE",
    "REDIS_ONLY_KEYS",
    "SETTING",
    "TABLE",
    "TYPO_EDITS",
    "Config",
    "LimiterPlan",
    "RoleSettings",
    "closest_key",
    "expand_environment",
    "file_error_message",
    "ignored_text",
    "limit_phrases",
    "limit_text",
    "limiter_key",
    "load_yaml",
    "number_text",
    "parse_config",
    "read_yaml",
    "role_settings",
    "yaml_error_text",
]
