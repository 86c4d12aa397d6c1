"""The vocabulary of a provider configuration: the kinds of limiter, the rate_limit_mode values, the
tables of keys (the limiter's, the numeric ones, those ``${VAR}`` is expanded in), and the rule that
refuses a key in the limiter's namespace, or within ``TYPO_EDITS`` edits of one of its keys, naming
the closest known key."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from omnilimit.errors import ConfigError

CONCURRENCY = "concurrency"
RATE = "rate"
COMBINED = "combined"  # rate_limit_mode: combined with max_concurrent_calls: every dimension at once
MODES = ("precedence", "combined")  # rate_limit_mode's values; precedence is the guide's rule

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
    "rate_limit_coordination",
)
REDIS_ONLY_KEYS = (
    "rate_limit_on_backend_error",
    "rate_limit_local_fraction",
    "rate_limit_lease_seconds",
    "rate_limit_coordination",
)
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
