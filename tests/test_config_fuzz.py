"""Arbitrary input to the configuration loaders yields a manager or a ConfigError, nothing else."""

import contextlib
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omnilimit import ConcurrencyLimiter, ConfigError, ProviderRateLimitManager, RateLimiter

KEYS = ["name", "model", "max_concurrent_calls", "rate_limit_rpm", "rate_limit_shared_key", "api_key"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["openai", "anthropic", "gpt-4o-mini", "claude-3-haiku", "acct", "", "50"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
role_settings = st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), values, max_size=6)
roles = st.dictionaries(
    st.text(max_size=6) | st.sampled_from(["user_followup", "assistant_response"]) | st.integers(),
    role_settings | values,
    max_size=4,
)
documents = st.one_of(
    values,
    st.fixed_dictionaries(
        {"providers": roles | values},
        optional={"generation": st.fixed_dictionaries({}, optional={"parallel_workers": values}) | values},
    ),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_from_config_accepts_or_refuses_with_a_config_error(document):
    try:
        manager = ProviderRateLimitManager.from_config(document)
    except ConfigError:
        return
    for role in manager.config.roles:
        limiter = manager.limiter_for(role)
        assert isinstance(limiter, (ConcurrencyLimiter, RateLimiter))
        if isinstance(limiter, ConcurrencyLimiter):
            assert limiter.max_concurrent >= 1
        else:
            assert limiter.rpm > 0 and math.isfinite(limiter.rpm)
    manager.get_all_stats()


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_from_yaml_accepts_or_refuses_arbitrary_text(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fuzz") / "config.yaml"
    path.write_text(text, encoding="utf-8")
    with contextlib.suppress(ConfigError):
        ProviderRateLimitManager.from_yaml(path)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=6) | st.none(), role_settings | values, st.text(max_size=6) | st.none())
def test_get_limiter_accepts_or_refuses_with_a_config_error(provider, provider_config, role):
    manager = ProviderRateLimitManager()
    try:
        limiter = manager.get_limiter(provider, provider_config, role)
    except ConfigError:
        return
    assert manager.get_limiter(provider, provider_config, role) is limiter
