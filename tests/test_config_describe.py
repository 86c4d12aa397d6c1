"""A limiter's limits in words (omnilimit.config.describe): the one place the manager's logs and
reload(), the configuration's warnings, a role's settings and ``omnilimit check`` take them from."""

from __future__ import annotations

import logging

import pytest

from omnilimit import ProviderRateLimitManager
from omnilimit.check import describe
from omnilimit.config import COMBINED, CONCURRENCY, RATE, SETTING, TABLE, limit_text, parse_config


@pytest.mark.parametrize(
    ("args", "kwargs", "text"),
    [
        ((CONCURRENCY, 50), {}, "max_concurrent_calls 50"),
        ((CONCURRENCY, 50), {"backend": "redis://:pw@host/0"}, "max_concurrent_calls 50, shared (redis://:***@host/0)"),
        ((RATE, 600.0, None, 90000), {"bursts": (2, 1)}, "600 RPM and 90000 TPM, burst 2"),
        ((RATE, 600), {"bursts": (1, None)}, "600 RPM"),
        (
            (COMBINED, 10, 300, 9000),
            {"bursts": (5, 400)},
            "combined: max_concurrent_calls 10 and 300 RPM and 9000 TPM, burst 5, token burst 400",
        ),
        (
            (RATE, 600, None, 9000),
            {"bursts": (2, 1), "words": SETTING},
            "rate_limit_rpm 600 and rate_limit_tpm 9000, burst 2",
        ),
        ((RATE, 500), {"auto": "openai gpt-4o-mini", "words": SETTING}, "auto-detected 500 RPM"),
        ((COMBINED, 10, 300, 9000), {"bursts": (5, 1), "words": TABLE}, "10 concurrent, 300 RPM, 9000 TPM"),
        ((RATE, 500), {"auto": "openai gpt-4o-mini", "words": TABLE}, "500 RPM (auto-detected for openai gpt-4o-mini)"),
    ],
)
def test_the_words(args, kwargs, text):
    assert limit_text(*args, **kwargs) == text


def test_the_warning_the_log_and_the_check_say_the_same_limits(caplog):
    """The shared limiter as the configuration's warning names it is the limiter the manager logs
    on reload and the check's row shows."""
    config = {
        "providers": {
            "a": {"name": "openai", "rate_limit_shared_key": "k", "rate_limit_rpm": 100, "rate_limit_tpm": 9000},
            "b": {"name": "openai", "rate_limit_shared_key": "k", "rate_limit_rpm": 60.0, "rate_limit_burst": 3},
        }
    }
    [warning] = parse_config(config).warnings
    assert "(a: rate_limit_rpm 100 and rate_limit_tpm 9000, b: rate_limit_rpm 60, burst 3)" in warning
    assert "the shared limiter uses 60 RPM and 9000 TPM" in warning  # the smallest of each; burst 1: not said
    manager = ProviderRateLimitManager.from_config({"providers": {"a": config["providers"]["a"]}})
    with caplog.at_level(logging.INFO, logger="omnilimit"):
        assert manager.reload(config) == ["k: 100 RPM and 9000 TPM -> 60 RPM and 9000 TPM"]
    [row] = describe(parse_config(config), config)["limiters"]
    assert row["text"] == "60 RPM, 9000 TPM"
