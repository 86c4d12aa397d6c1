"""``${VAR}`` in the values the limiter reads: replaced by the environment variable, as OmniGen's
loader does; an unset variable is a ConfigError naming it."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import yaml

from omnilimit._shown import shown
from omnilimit.config.keys import EXPANDED_KEYS, NUMERIC_KEYS
from omnilimit.errors import ConfigError

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
