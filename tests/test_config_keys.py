"""The first hour of a YAML user: a misspelled limiter key is an error naming the closest known key,
``${VAR}`` expands as OmniGen's loader expands it, ``rate_limit_burst`` / ``rate_limit_token_burst``
choose the bursts, and a YAML error names where the problem starts and where it was found."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import need

from omnilimit import CombinedLimiter, ConfigError, ProviderRateLimitManager, RateLimiter
from omnilimit.check import describe
from omnilimit.config import LIMITER_KEYS, closest_key, load_yaml, parse_config


def role(**settings: object) -> dict[str, object]:
    return {"providers": {"user_followup": {"name": "openai", "model": "gpt-4o-mini", **settings}}}


# --- typos in the limiter's namespace ------------------------------------------------------------


@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("rate_limit_rmp", "rate_limit_rpm"),  # two letters swapped
        ("rate_limit_rpn", "rate_limit_rpm"),
        ("rate_limit_tmp", "rate_limit_tpm"),
        ("rate_limit_shared", "rate_limit_shared_key"),
        ("rate_limit_burts", "rate_limit_burst"),
        ("rate_limit_token_bursts", "rate_limit_token_burst"),
        ("max_concurrent", "max_concurrent_calls"),  # the stats key, written as a setting
        ("max_concurrent_call", "max_concurrent_calls"),
        ("rate_limit_backnd", "rate_limit_backend"),
        ("rate_limit_lease_second", "rate_limit_lease_seconds"),
    ],
)
def test_a_misspelled_limiter_key_is_an_error_naming_the_closest_key(typo, meant):
    with pytest.raises(ConfigError) as caught:
        parse_config(role(**{typo: 100}), source="cfg.yaml")
    error = caught.value
    assert (error.source, error.role, error.key) == ("cfg.yaml", "user_followup", typo)
    assert str(error).startswith(f"cfg.yaml: providers.user_followup.{typo}: is not a limiter setting: ")
    assert f"did you mean {meant!r}?" in str(error)


def test_the_typo_of_the_issue_no_longer_builds_an_auto_detected_limiter(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("providers:\n  chat:\n    name: openai\n    model: gpt-4o-mini\n    rate_limit_rmp: 100\n")
    with pytest.raises(ConfigError, match=r"providers\.chat\.rate_limit_rmp: .*did you mean 'rate_limit_rpm'"):
        ProviderRateLimitManager.from_yaml(path)
    done = subprocess.run(
        [sys.executable, "-m", "omnilimit", "check", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert "did you mean 'rate_limit_rpm'?" in done.stderr
    assert done.stdout == ""


def test_get_limiter_refuses_a_misspelled_key_too():
    manager = ProviderRateLimitManager()
    with pytest.raises(ConfigError, match="did you mean 'max_concurrent_calls'"):
        manager.get_limiter("openai", {"max_concurent_calls": 5}, role="r")
    assert manager.limiters == {}


def test_keys_outside_the_namespace_stay_the_provider_clients():
    config = parse_config(role(rate_limit_rpm=100, api_key="sk-x", temperature=0.2, ratelimit_note="x"))
    [plan] = config.limiters.values()
    assert plan.limit == 100


def test_every_known_key_is_its_own_closest_key():
    for key in LIMITER_KEYS:
        assert closest_key(key, LIMITER_KEYS) == key


# --- ${VAR} ----------------------------------------------------------------------------------------


def test_environment_variables_expand_as_omnigen_expands_them(monkeypatch):
    monkeypatch.setenv("ACCOUNT", "acct42")
    monkeypatch.setenv("MODEL", "gpt-4o")
    monkeypatch.setenv("RPM", "300")
    config = parse_config(
        {
            "providers": {
                "a": {"name": "openai", "model": "${MODEL}", "rate_limit_shared_key": "team-${ACCOUNT}"},
                "b": {"name": "openai", "rate_limit_shared_key": "team-${ACCOUNT}", "rate_limit_rpm": "${RPM}"},
            }
        }
    )
    assert list(config.limiters) == ["team-acct42"]
    assert config.roles["a"].model == "gpt-4o"
    assert config.roles["b"].rate_limit_rpm == 300
    assert config.limiters["team-acct42"].limit == 300  # the smaller of 300 and gpt-4o's auto-detected limit


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # omnigen's own pydantic V1 validators
def test_the_expanded_names_match_omnigens_loader(monkeypatch, tmp_path):
    """OmniGen's own loader (its text-enhancement config) substitutes the same ${VAR}s."""
    loader = need("omnigen.pipelines.text_enhancement.config")
    monkeypatch.setenv("ACCOUNT", "acct42")
    document = {"providers": {"a": {"name": "openai", "rate_limit_shared_key": "${ACCOUNT}-key", "api_key": "k"}}}
    theirs = loader.TextEnhancementConfig.__new__(loader.TextEnhancementConfig)
    theirs._data = document
    theirs._substitute_env_vars()
    ours = parse_config(document)
    assert list(ours.limiters) == [theirs._data["providers"]["a"]["rate_limit_shared_key"]] == ["acct42-key"]


def test_an_unset_variable_is_an_error_naming_it(monkeypatch):
    monkeypatch.delenv("OMNILIMIT_NO_SUCH_VARIABLE", raising=False)
    with pytest.raises(ConfigError) as caught:
        parse_config(role(rate_limit_shared_key="${OMNILIMIT_NO_SUCH_VARIABLE}"), source="cfg.yaml")
    assert caught.value.key == "rate_limit_shared_key"
    assert "the environment variable 'OMNILIMIT_NO_SUCH_VARIABLE' is not set" in str(caught.value)


def test_variables_in_the_provider_clients_keys_are_not_the_limiters_business(monkeypatch):
    monkeypatch.delenv("OMNILIMIT_NO_SUCH_KEY", raising=False)
    config = parse_config(role(rate_limit_rpm=100, api_key="${OMNILIMIT_NO_SUCH_KEY}"))
    assert config.limiters["openai_gpt-4o-mini_user_followup"].limit == 100


def test_an_expanded_number_is_validated_like_a_written_one(monkeypatch):
    monkeypatch.setenv("RPM", "-5")
    with pytest.raises(ConfigError, match=r"rate_limit_rpm: must be a finite number > 0, got -5"):
        parse_config(role(rate_limit_rpm="${RPM}"))
    monkeypatch.setenv("RPM", "lots")
    with pytest.raises(ConfigError, match=r"rate_limit_rpm: must be a finite number > 0, got 'lots'"):
        parse_config(role(rate_limit_rpm="${RPM}"))
    monkeypatch.setenv("WORKERS", "12")
    config = parse_config({**role(), "generation": {"parallel_workers": "${WORKERS}"}})
    assert config.parallel_workers == 12


# --- bursts from YAML --------------------------------------------------------------------------------


def test_rate_limit_burst_reaches_the_rate_limiter(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(
        "providers:\n"
        "  chat:\n    name: openai\n    rate_limit_rpm: 600\n    rate_limit_burst: 5\n"
        "  embed:\n    name: openai\n    rate_limit_rpm: 600\n    rate_limit_tpm: 60000\n"
        "    rate_limit_token_burst: 4000\n"
    )
    manager = ProviderRateLimitManager.from_yaml(path)
    chat = manager.limiter_for("chat")
    assert isinstance(chat, RateLimiter)
    assert chat.burst_size == 5
    assert [chat.acquire(timeout=0) for _ in range(6)] == [True] * 5 + [False]  # 5 at once, then paced
    embed = manager.limiter_for("embed")
    assert isinstance(embed, RateLimiter)
    assert (embed.burst_size, embed.token_burst) == (1, 4000)
    assert embed.acquire(timeout=0, tokens=4000)
    data = describe(manager.config, load_yaml_document(path))
    assert [(row["key"], row["burst"], row["token_burst"]) for row in data["limiters"]] == [
        ("openai_chat", 5, None),
        ("openai_embed", 1, 4000),
    ]


def load_yaml_document(path: Path) -> dict[str, object]:
    from omnilimit.config import read_yaml

    document: dict[str, object] = read_yaml(path)
    return document


def test_a_combined_limiter_takes_the_burst_too():
    manager = ProviderRateLimitManager.from_config(
        role(max_concurrent_calls=10, rate_limit_rpm=60, rate_limit_mode="combined", rate_limit_burst=3)
    )
    limiter = manager.limiter_for("user_followup")
    assert isinstance(limiter, CombinedLimiter)
    assert limiter.rate.burst_size == 3


@pytest.mark.parametrize("value", [0, -1, 2.5, "5", True, None])
def test_a_bad_burst_is_an_error(value):
    if value is None:
        assert parse_config(role(rate_limit_burst=None)).limiters["openai_gpt-4o-mini_user_followup"].burst == 1
        return
    for key in ("rate_limit_burst", "rate_limit_token_burst"):
        with pytest.raises(ConfigError, match=rf"providers\.user_followup\.{key}: must be a whole number >= 1"):
            parse_config(role(rate_limit_tpm=1000, **{key: value}))


def test_a_token_burst_needs_a_token_budget():
    with pytest.raises(ConfigError, match=r"rate_limit_token_burst: needs rate_limit_tpm"):
        parse_config(role(rate_limit_token_burst=100))


def test_roles_sharing_a_limiter_get_the_smallest_burst_with_a_warning():
    config = parse_config(
        {
            "providers": {
                "a": {"name": "openai", "rate_limit_shared_key": "k", "rate_limit_rpm": 100, "rate_limit_burst": 8},
                "b": {"name": "openai", "rate_limit_shared_key": "k", "rate_limit_rpm": 100, "rate_limit_burst": 3},
            }
        }
    )
    assert config.limiters["k"].burst == 3
    [warning] = config.warnings
    assert "roles sharing limiter 'k' set different limits" in warning
    assert "the shared limiter uses 100 RPM, burst 3" in warning


def test_a_burst_beside_max_concurrent_calls_is_ignored_with_a_warning(caplog):
    config = parse_config(role(max_concurrent_calls=5, rate_limit_burst=4))
    [warning] = config.warnings
    assert "rate_limit_burst 4 is ignored: max_concurrent_calls 5 takes precedence" in warning
    manager = ProviderRateLimitManager()
    with caplog.at_level(logging.WARNING, logger="omnilimit"):
        manager.get_limiter("openai", {"max_concurrent_calls": 5, "rate_limit_burst": 4}, role="r")
    assert "rate_limit_burst 4 is ignored" in caplog.text


def test_reload_changes_the_burst_in_place():
    manager = ProviderRateLimitManager.from_config(role(rate_limit_rpm=600, rate_limit_burst=2))
    limiter = manager.limiter_for("user_followup")
    changes = manager.reload(role(rate_limit_rpm=600, rate_limit_burst=7))
    assert manager.limiter_for("user_followup") is limiter
    assert isinstance(limiter, RateLimiter)
    assert limiter.burst_size == 7
    assert changes == ["openai_gpt-4o-mini_user_followup: 600 RPM, burst 2 -> 600 RPM, burst 7"]


def test_get_limiter_keys_by_the_burst():
    manager = ProviderRateLimitManager()
    first = manager.get_limiter("openai", {"rate_limit_rpm": 60, "rate_limit_burst": 4}, role="r")
    assert isinstance(first, RateLimiter)
    assert first.burst_size == 4


# --- YAML errors ---------------------------------------------------------------------------------


def test_an_unclosed_quote_names_where_it_was_opened(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text('providers:\n  a:\n    name: openai\n    model: "gpt-4o\n    rate_limit_rpm: 5\n')
    with pytest.raises(ConfigError) as caught:
        load_yaml(path)
    assert str(caught.value) == (
        f"{path}: line 6, column 1: found unexpected end of stream, "
        "while scanning a quoted scalar that starts at line 4, column 12"
    )


def test_a_role_of_many_client_keys_is_checked_for_typos_in_linear_time():
    """Each key is compared with every limiter key; a file of 20,000 keys must not cost an edit
    distance per pair (that took minutes)."""
    settings: dict[str, object] = {f"client_setting_{i:06d}": 1 for i in range(20_000)}
    started = time.monotonic()
    parse_config({"providers": {"r": {"name": "openai", **settings}}})
    assert time.monotonic() - started < 10.0
    with pytest.raises(ConfigError, match="did you mean 'rate_limit_tpm'"):
        parse_config({"providers": {"r": {"name": "openai", **settings, "rate_limt_tpm": 5}}})
