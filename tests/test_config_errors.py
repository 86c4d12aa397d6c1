"""Bad configurations get a ConfigError naming the file, the role and the key, and saying what is
allowed; nothing falls back to a default in silence."""

import logging
import math

import pytest

from omnilimit import ConfigError, ProviderRateLimitManager, RateLimiter


def write(tmp_path, text, name="config.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def load_text(tmp_path, text):
    return ProviderRateLimitManager.from_yaml(write(tmp_path, text))


def role_config(**settings):
    return {"providers": {"user_followup": {"name": "openai", "model": "gpt-4o-mini", **settings}}}


BAD_LIMITS = [0, -5, "abc", "50", True, math.nan, math.inf, -math.inf, [50], {"n": 1}]


@pytest.mark.parametrize("value", [*BAD_LIMITS, 2.5])
def test_bad_max_concurrent_calls(value):
    with pytest.raises(ConfigError) as caught:
        ProviderRateLimitManager.from_config(role_config(max_concurrent_calls=value), source="cfg.yaml")
    error = caught.value
    assert (error.source, error.role, error.key) == ("cfg.yaml", "user_followup", "max_concurrent_calls")
    assert str(error).startswith("cfg.yaml: providers.user_followup.max_concurrent_calls: must be a whole number >= 1")
    assert repr(value) in str(error)
    assert isinstance(error, ValueError)


@pytest.mark.parametrize("value", BAD_LIMITS)
def test_bad_rate_limit_rpm(value):
    with pytest.raises(ConfigError, match=r"providers\.user_followup\.rate_limit_rpm: must be a finite number > 0"):
        ProviderRateLimitManager.from_config(role_config(rate_limit_rpm=value))


def test_yaml_spellings_of_bad_numbers_are_refused(tmp_path):
    for spelling in (".nan", ".inf", "-.inf", "yes", "true", "'50'", "0", "-3"):
        with pytest.raises(ConfigError, match=r"config\.yaml: providers\.r\.max_concurrent_calls"):
            load_text(tmp_path, f"providers:\n  r:\n    max_concurrent_calls: {spelling}\n")


def test_the_references_silent_fallbacks_are_errors_here():
    # omnigen 0.1.18 turns max_concurrent_calls: -5 into an auto-detected 500-RPM limiter and
    # rate_limit_rpm: "abc" into 500 RPM without a word.
    manager = ProviderRateLimitManager()
    with pytest.raises(ConfigError, match="max_concurrent_calls"):
        manager.get_limiter("openai", {"model": "gpt-4o-mini", "max_concurrent_calls": -5}, "user_followup")
    with pytest.raises(ConfigError, match="rate_limit_rpm"):
        manager.get_limiter("openai", {"model": "gpt-4o-mini", "rate_limit_rpm": "abc"}, "user_followup")
    assert manager.get_all_stats() == {}


@pytest.mark.parametrize(
    ("settings", "key", "allowed"),
    [
        ({"name": ""}, "name", "non-empty string"),
        ({"name": 5}, "name", "non-empty string"),
        ({"model": 4}, "model", "non-empty string"),
        ({"model": ""}, "model", "non-empty string"),
        ({"rate_limit_shared_key": ""}, "rate_limit_shared_key", "non-empty string"),
        ({"rate_limit_shared_key": ["a"]}, "rate_limit_shared_key", "non-empty string"),
    ],
)
def test_bad_names(settings, key, allowed):
    config = {"providers": {"r": {"name": "openai", **settings}}}
    with pytest.raises(ConfigError, match=rf"providers\.r\.{key}: must be a {allowed}"):
        ProviderRateLimitManager.from_config(config)


@pytest.mark.parametrize("role_value", [50, "openai", ["name", "openai"], True])
def test_a_role_that_is_not_a_mapping(role_value):
    with pytest.raises(ConfigError, match=r"providers\.user_followup: must be a mapping of provider settings"):
        ProviderRateLimitManager.from_config({"providers": {"user_followup": role_value}})


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "'providers' is missing"),
        ({"providers": None}, "'providers' is missing"),
        ({"providers": {}}, "'providers' must be a non-empty mapping"),
        ({"providers": ["user_followup"]}, "'providers' must be a non-empty mapping"),
        ({"providers": {5: {}}}, "role names must be non-empty strings"),
        ([{"providers": {}}], "must be a mapping with a 'providers' section"),
        ({"providers": {"r": {}}, "generation": []}, "'generation' must be a mapping"),
        ({"providers": {"r": {}}, "generation": {"parallel_workers": 0}}, "generation.parallel_workers: must be"),
        ({"providers": {"r": {}}, "generation": {"parallel_workers": "ten"}}, "generation.parallel_workers: must be"),
    ],
)
def test_structural_errors(config, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        ProviderRateLimitManager.from_config(config)


def test_malformed_yaml_names_its_line(tmp_path):
    with pytest.raises(ConfigError, match=r"config\.yaml: line 3, column 1: found character '\\t'"):
        load_text(tmp_path, "providers:\n  r:\n\tname: openai\n")


def test_a_role_given_twice_is_an_error_not_a_silent_overwrite(tmp_path):
    text = "providers:\n  r:\n    max_concurrent_calls: 5\n  r:\n    max_concurrent_calls: 50\n"
    with pytest.raises(ConfigError, match=r"line 4, column 3: found duplicate key 'r'"):
        load_text(tmp_path, text)


def test_empty_file_and_unsafe_tags(tmp_path):
    with pytest.raises(ConfigError, match="the file is empty"):
        load_text(tmp_path, "# nothing here\n")
    with pytest.raises(ConfigError, match="line 1"):
        load_text(tmp_path, "providers: !!python/object/apply:os.system ['true']\n")


def test_a_missing_file_is_an_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        ProviderRateLimitManager.from_yaml(tmp_path / "absent.yaml")


def test_the_whole_file_is_validated_before_any_limiter_exists(tmp_path):
    text = "providers:\n  good:\n    max_concurrent_calls: 5\n  bad:\n    rate_limit_rpm: 0\n"
    with pytest.raises(ConfigError, match=r"providers\.bad\.rate_limit_rpm"):
        load_text(tmp_path, text)


def test_null_counts_as_not_set():
    config = {
        "providers": {
            "r": {
                "name": "anthropic",
                "model": None,
                "max_concurrent_calls": None,
                "rate_limit_rpm": None,
                "rate_limit_shared_key": None,
            },
            "s": {"name": None, "model": "x"},
        }
    }
    manager = ProviderRateLimitManager.from_config(config)
    limiter = manager.limiter_for("r")
    assert isinstance(limiter, RateLimiter) and limiter.rpm == 50 and limiter.provider_name == "anthropic_r"
    assert manager.limiter_for("s").provider_name == "default_x_s"  # no name: the provider "default"


def test_provider_keys_the_limiter_does_not_use_are_ignored():
    config = role_config(api_key="sk-...", temperature=0.7, max_tokens=4096, base_url="http://x", use_streaming=True)
    assert ProviderRateLimitManager.from_config(config).limiter_for("user_followup").rpm == 500


def test_shared_key_with_different_limits_takes_the_smallest_with_one_warning(caplog):
    caplog.set_level(logging.WARNING, logger="omnilimit")
    config = {
        "providers": {
            "a": {"name": "openai", "rate_limit_shared_key": "acct", "rate_limit_rpm": 500},
            "b": {"name": "openai", "rate_limit_shared_key": "acct", "rate_limit_rpm": 300},
            "c": {"name": "openai", "rate_limit_shared_key": "acct"},  # auto-detected 500
        }
    }
    manager = ProviderRateLimitManager.from_config(config, source="cfg.yaml")
    assert manager.limiter_for("a") is manager.limiter_for("b") is manager.limiter_for("c")
    assert manager.limiter_for("a").rpm == 300
    [warning] = [r.getMessage() for r in caplog.records]
    assert "'acct'" in warning and "rate_limit_rpm 500" in warning and "rate_limit_rpm 300" in warning
    assert "auto-detected 500 RPM" in warning and "uses 300 RPM" in warning


def test_shared_key_mixing_kinds_uses_the_concurrency_limit(caplog):
    caplog.set_level(logging.WARNING, logger="omnilimit")
    config = {
        "providers": {
            "a": {"rate_limit_shared_key": "k", "rate_limit_rpm": 100},
            "b": {"rate_limit_shared_key": "k", "max_concurrent_calls": 8},
            "c": {"rate_limit_shared_key": "k", "max_concurrent_calls": 12},
        }
    }
    limiter = ProviderRateLimitManager.from_config(config).limiter_for("a")
    assert limiter.max_concurrent == 8
    assert len(caplog.records) == 1 and "max_concurrent_calls 8" in caplog.records[0].getMessage()
