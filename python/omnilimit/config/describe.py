"""A limiter's limits in words, written here only: for logs, warnings and reload() (``LIMITER``),
for a role's settings (``SETTING``) and for ``omnilimit check``'s limit column (``TABLE``)."""

from __future__ import annotations

from omnilimit._shown import redact
from omnilimit.config.keys import COMBINED, CONCURRENCY, RATE
from omnilimit.spec import DEFAULT_BURST

LIMITER = "limiter"  # what a limiter enforces: "combined: max_concurrent_calls 10 and 300 RPM and 9000 TPM, burst 5"
SETTING = "setting"  # a role's settings, by their keys: "rate_limit_rpm 600 and rate_limit_tpm 9000, burst 2"
TABLE = "table"  # the check's column: "10 concurrent, 500 RPM (auto-detected for openai gpt-4o-mini), 9000 TPM"


def limit_text(
    kind: str,
    limit: int | float,
    rpm: int | float | None = None,
    tpm: int | float | None = None,
    *,
    bursts: tuple[int | None, int | None] = (None, None),
    backend: str | None = None,
    auto: str | None = None,
    words: str = LIMITER,
) -> str:
    """The limits of a limiter of ``kind`` in ``words`` (``LIMITER``, ``SETTING`` or ``TABLE``).

    ``limit`` is the concurrency cap of a concurrency or combined limiter and the RPM of a rate
    limiter; ``rpm`` a combined limiter's RPM; ``tpm`` the token budget (None: none); ``auto`` the
    provider and model whose default RPM it is (None: the RPM was set). The dimensions are joined by
    " and " (a combined limiter's text starts ``combined: ``), then the bursts that are not strict
    pacing's 1 and, for a ``backend``, ``shared (URL)``; ``TABLE`` joins the dimensions with ", " and
    leaves the bursts and the backend out (the table has columns for them)."""
    phrases = limit_phrases(kind, limit, rpm, tpm, auto=auto, words=words)
    if words == TABLE:
        return ", ".join(phrases)
    burst, token_burst = bursts
    extras = [f"burst {burst}"] if burst not in (None, DEFAULT_BURST) else []
    extras += [f"token burst {token_burst}"] if token_burst not in (None, DEFAULT_BURST) else []
    extras += [f"shared ({redact(backend)})"] if backend is not None else []
    prefix = "combined: " if kind == COMBINED else ""
    return prefix + " and ".join(phrases) + "".join(f", {extra}" for extra in extras)


def limit_phrases(
    kind: str,
    limit: int | float,
    rpm: int | float | None = None,
    tpm: int | float | None = None,
    *,
    auto: str | None = None,
    words: str = LIMITER,
) -> list[str]:
    """One phrase per dimension of the limiter (its concurrency cap, its RPM, its token budget), in
    that order: ``limit_text``'s parts, which ``omnilimit check`` prints one a line."""
    table, setting = words == TABLE, words == SETTING
    phrases = []
    if kind != RATE:
        number = number_text(limit)
        phrases.append(f"{number} concurrent" if table else f"max_concurrent_calls {number}")
    rate = limit if kind == RATE else rpm
    if kind != CONCURRENCY and rate is not None:
        number = number_text(rate)
        if auto is not None:
            phrases.append(f"{number} RPM (auto-detected for {auto})" if table else f"auto-detected {number} RPM")
        else:
            phrases.append(f"rate_limit_rpm {number}" if setting else f"{number} RPM")
    if tpm is not None:
        number = number_text(tpm)
        phrases.append(f"rate_limit_tpm {number}" if setting else f"{number} TPM")
    return phrases


def number_text(value: int | float) -> str:
    """500, 0.5, 500.0 -> "500", as the YAML would say it."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
