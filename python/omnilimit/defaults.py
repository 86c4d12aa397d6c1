"""Default request-per-minute limits by provider and model, used when a provider config sets no
``rate_limit_rpm`` (the guide's auto-detection, with the further entries of omnigen 0.1.18)."""

from __future__ import annotations

# provider -> model -> RPM; "_default" is the provider's fallback, and the top-level "_default"
# the fallback for unknown providers. Provider and model names are matched exactly.
DEFAULT_RATE_LIMITS: dict[str, int | dict[str, int]] = {
    # OpenAI, tier 1 (https://platform.openai.com/docs/guides/rate-limits)
    "openai": {
        "gpt-4o": 500,
        "gpt-4o-mini": 500,
        "gpt-4-turbo": 500,
        "gpt-4-turbo-preview": 500,
        "gpt-4": 500,
        "gpt-3.5-turbo": 3500,
        "gpt-3.5-turbo-16k": 3500,
        "o1-preview": 500,
        "o1-mini": 500,
        "_default": 500,
    },
    # Anthropic, standard tier: every Claude model
    "anthropic": {
        "claude-3-5-sonnet-20241022": 50,
        "claude-3-5-sonnet": 50,
        "claude-3-opus-20240229": 50,
        "claude-3-opus": 50,
        "claude-3-sonnet-20240229": 50,
        "claude-3-sonnet": 50,
        "claude-3-haiku-20240307": 50,
        "claude-3-haiku": 50,
        "_default": 50,
    },
    "openrouter": {"_default": 200},
    "ultrasafe": {"_default": 100},
    "_default": 60,
}


def get_default_rate_limit(provider: str, model: str | None = None) -> int:
    """The default RPM for ``provider`` and ``model``: the model's entry, else the provider's
    ``_default``, else 60.

    >>> get_default_rate_limit("openai", "gpt-4o-mini"), get_default_rate_limit("anthropic")
    (500, 50)
    >>> get_default_rate_limit("unknown")
    60
    """
    if not isinstance(provider, str):
        raise ValueError(f"provider must be a string, got {provider!r}")
    if model is not None and not isinstance(model, str):
        raise ValueError(f"model must be a string or None, got {model!r}")
    table = DEFAULT_RATE_LIMITS.get(provider)
    if isinstance(table, dict):
        if model is not None and model in table:
            return table[model]
        if "_default" in table:
            return table["_default"]
    fallback = DEFAULT_RATE_LIMITS["_default"]
    assert isinstance(fallback, int)
    return fallback
