"""Auto-detected limits: the guide's table and the reference's further entries."""

import pytest

from omnilimit import DEFAULT_RATE_LIMITS, get_default_rate_limit


@pytest.mark.parametrize(
    ("provider", "model", "rpm"),
    [
        ("openai", "gpt-4o", 500),
        ("openai", "gpt-4o-mini", 500),
        ("openai", "gpt-4-turbo", 500),
        ("openai", "gpt-3.5-turbo", 3500),
        ("openai", "o1-preview", 500),
        ("openai", "o1-mini", 500),
        ("openai", "gpt-99-imaginary", 500),
        ("openai", None, 500),
        ("anthropic", "claude-3-haiku", 50),
        ("anthropic", "claude-3-5-sonnet-20241022", 50),
        ("anthropic", "claude-9", 50),
        ("openrouter", "anything/at-all", 200),
        ("ultrasafe", None, 100),
        ("unknown", None, 60),
        ("unknown", "gpt-4o", 60),
        ("OpenAI", "gpt-4o", 60),  # names match exactly, as in omnigen
    ],
)
def test_default_rate_limits(provider, model, rpm):
    assert get_default_rate_limit(provider, model) == rpm


def test_the_table_keeps_the_references_entries():
    assert DEFAULT_RATE_LIMITS["openai"]["gpt-4-turbo-preview"] == 500
    assert DEFAULT_RATE_LIMITS["openai"]["gpt-3.5-turbo-16k"] == 3500
    assert DEFAULT_RATE_LIMITS["anthropic"]["claude-3-opus-20240229"] == 50
    assert DEFAULT_RATE_LIMITS["_default"] == 60


@pytest.mark.parametrize(("provider", "model"), [(None, None), (5, None), ("openai", 4)])
def test_bad_arguments(provider, model):
    with pytest.raises(ValueError):
        get_default_rate_limit(provider, model)
