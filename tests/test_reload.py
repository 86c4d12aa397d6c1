"""manager.reload(): a changed configuration applied to live limiters, validated whole first."""

import logging

import pytest
from helpers import start_thread, wait_until

from omnilimit import ConfigError, ProviderRateLimitManager


def config(writer=None, critic=None, judge=None):
    providers = {
        "writer": writer or {"name": "openai", "max_concurrent_calls": 1},
        "critic": critic or {"name": "openai", "rate_limit_rpm": 60},
    }
    if judge is not None:
        providers["judge"] = judge
    return {"providers": providers}


def test_limits_change_in_place_and_waiters_see_them():
    manager = ProviderRateLimitManager.from_config(config())
    writer, critic = manager.limiter_for("writer"), manager.limiter_for("critic")
    assert writer.acquire()
    got = []
    start_thread(lambda: got.append(writer.acquire(timeout=10)))
    wait_until(lambda: writer.waiting == 1)
    changes = manager.reload(
        config(writer={"name": "openai", "max_concurrent_calls": 4}, critic={"name": "openai", "rate_limit_rpm": 600})
    )
    assert manager.limiter_for("writer") is writer and manager.limiter_for("critic") is critic  # the same objects
    assert writer.max_concurrent == 4 and critic.rpm == 600
    wait_until(lambda: got == [True])  # the waiter got one of the new slots at once
    assert sorted(changes) == [
        "openai_critic: 60 RPM -> 600 RPM",
        "openai_writer: max_concurrent_calls 1 -> max_concurrent_calls 4",
    ]


def test_new_replaced_and_removed_limiters():
    manager = ProviderRateLimitManager.from_config(config(judge={"name": "anthropic", "max_concurrent_calls": 3}))
    old_critic = manager.limiter_for("critic")
    changed = {
        "providers": {
            "writer": {"name": "openai", "max_concurrent_calls": 1},
            "critic": {"name": "openai", "rate_limit_rpm": 60, "rate_limit_tpm": 90_000},  # a token budget
            "editor": {"name": "openai", "rate_limit_rpm": 30},
        }
    }
    changes = manager.reload(changed)
    new_critic = manager.limiter_for("critic")
    assert new_critic is not old_critic and new_critic.tpm == 90_000
    assert old_critic.acquire(timeout=0)  # a caller still holding the old limiter can use it
    assert manager.limiter_for("editor").rpm == 30
    with pytest.raises(KeyError, match="judge"):
        manager.limiter_for("judge")
    assert "anthropic_judge" not in manager.limiters
    assert sorted(changes) == [
        "anthropic_judge: removed (max_concurrent_calls 3)",
        "openai_critic: replaced, 60 RPM -> 60 RPM and 90000 TPM",
        "openai_editor: new limiter, 30 RPM",
    ]
    assert (
        manager.reload(manager.config and {"providers": {r: s.as_mapping() for r, s in manager.config.roles.items()}})
        == []
    )


def test_get_limiter_follows_the_reloaded_configuration():
    manager = ProviderRateLimitManager.from_config(config())
    writer_config = {"name": "openai", "max_concurrent_calls": 1}
    before = manager.get_limiter("openai", writer_config, role="writer")
    manager.reload(config(writer={"name": "openai", "rate_limit_rpm": 120}))  # now an RPM limiter
    after = manager.get_limiter("openai", {"name": "openai", "rate_limit_rpm": 120}, role="writer")
    assert after is manager.limiter_for("writer") and after is not before and after.rpm == 120


def test_a_bad_configuration_changes_nothing(caplog):
    manager = ProviderRateLimitManager.from_config(config())
    writer = manager.limiter_for("writer")
    with pytest.raises(ConfigError, match="max_concurrent_calls"):
        manager.reload(config(writer={"name": "openai", "max_concurrent_calls": -2}))
    assert manager.limiter_for("writer") is writer and writer.max_concurrent == 1


def test_reload_from_a_yaml_file_logs_what_changed(tmp_path, caplog):
    path = tmp_path / "config.yaml"
    path.write_text("providers:\n  writer:\n    name: openai\n    max_concurrent_calls: 2\n", encoding="utf-8")
    manager = ProviderRateLimitManager.from_yaml(path)
    path.write_text("providers:\n  writer:\n    name: openai\n    max_concurrent_calls: 7\n", encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="omnilimit"):
        assert manager.reload(path) == ["openai_writer: max_concurrent_calls 2 -> max_concurrent_calls 7"]
    assert any("reload: openai_writer" in r.getMessage() for r in caplog.records)
    with caplog.at_level(logging.INFO, logger="omnilimit"):
        assert manager.reload(str(path)) == []
    assert any("no limiter changed" in r.getMessage() for r in caplog.records)
