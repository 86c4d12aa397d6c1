"""Exceptions raised by omnilimit.

``LimiterTimeout``, ``LimiterClosed`` and ``SharedStateError`` are created by the native core (which
raises them from its fast paths) and re-exported here.
"""

from __future__ import annotations

from omnilimit._core import LimiterClosed, LimiterTimeout, SharedStateError
from omnilimit._shown import printable

__all__ = ["ConfigError", "LimiterClosed", "LimiterTimeout", "SharedStateError"]


class ConfigError(ValueError):
    """A provider configuration that omnilimit refuses, with where it is and what is allowed.

    ``source`` is the file (or ``"<config>"`` / ``"<provider_config>"``), ``role`` and ``key`` the
    place in it (None when the problem is not in one role or key)."""

    def __init__(self, message: str, *, source: str, role: str | None = None, key: str | None = None) -> None:
        self.source = source
        self.role = role
        self.key = key
        where = printable(source)  # a file's own names may hold newlines or lone surrogates
        if role is not None:
            where += f": providers.{printable(str(role))}"
            if key is not None:
                where += f".{printable(str(key))}"
        elif key is not None:
            where += f": {printable(str(key))}"
        super().__init__(f"{where}: {printable(message)}")
