"""``omnilimit simulate``: the simulated provider, the time scaling, the recommendation, and the
command on every example and on broken files."""

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from omnilimit.config import parse_config
from omnilimit.sim_provider import SimulatedProvider
from omnilimit.simulate import Options, apply_recommendation, scaled_document, simulate

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
EXAMPLES = sorted(EXAMPLES_DIR.glob("*.yaml"))


def run_simulate(*args, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "omnilimit", "simulate", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# ---- the simulated provider ---------------------------------------------------------------------------


def test_the_provider_admits_a_slices_share_of_its_rpm_then_429s_until_the_slice_moves():
    provider = SimulatedProvider(600, latency_s=0.001, slice_s=0.2)  # 10 a slice
    started = time.monotonic()
    assert all(provider.call()[0] for _ in range(10))
    ok, retry_after = provider.call()
    assert not ok and 0 < retry_after <= 0.2
    assert provider.counts.refused_by["rpm"] == 1
    time.sleep(max(0.0, started + 0.21 - time.monotonic()))
    assert provider.call()[0]  # the first arrivals left the slice


def test_the_provider_enforces_tokens_and_concurrency():
    tokens = SimulatedProvider(None, tpm=6000, latency_s=0.001, slice_s=0.5)  # 100 tokens a slice
    assert tokens.call(60)[0] and not tokens.call(60)[0] and tokens.counts.refused_by["tpm"] == 1
    slots = SimulatedProvider(None, concurrency=2, latency_s=0.3, slice_s=1.0)
    results = []
    import threading

    threads = [threading.Thread(target=lambda: results.append(slots.call()[0])) for _ in range(3)]
    for thread in threads:
        thread.start()
        time.sleep(0.02)
    for thread in threads:
        thread.join()
    assert sorted(results) == [False, True, True] and slots.counts.most_in_flight == 2


def test_latencies_spread_around_their_mean():
    provider = SimulatedProvider(None, latency_s=0.002, slice_s=1.0, seed=3)
    latencies = [provider.call()[1] for _ in range(300)]
    mean = sum(latencies) / len(latencies)
    assert 0.0016 < mean < 0.0024 and max(latencies) > 1.3 * mean and min(latencies) < 0.8 * mean


# ---- scaling and recommendations ------------------------------------------------------------------------


def test_scaling_speeds_up_rates_and_keeps_the_simulation_in_process():
    document = {
        "providers": {
            "a": {"name": "openai", "model": "gpt-4o-mini"},  # auto-detected: 500 RPM
            "b": {"rate_limit_rpm": 100, "rate_limit_tpm": 5000},
            "d": {"rate_limit_rpm": 60, "rate_limit_backend": "shm"},
            "c": {"max_concurrent_calls": 4},
        }
    }
    scaled = scaled_document(document, parse_config(document), 10)
    assert scaled["providers"]["a"]["rate_limit_rpm"] == 5000
    assert scaled["providers"]["b"]["rate_limit_rpm"] == 1000 and scaled["providers"]["b"]["rate_limit_tpm"] == 50000
    assert scaled["providers"]["d"] == {"rate_limit_rpm": 600}  # in-process
    assert scaled["providers"]["c"] == {"max_concurrent_calls": 4}
    assert document["providers"]["b"]["rate_limit_rpm"] == 100  # the original is untouched


def test_a_recommendation_sets_and_removes_keys():
    document = {"providers": {"a": {"max_concurrent_calls": 9, "model": "m"}}, "generation": {"parallel_workers": 3}}
    updated = apply_recommendation(document, {"a": {"rate_limit_rpm": 95, "max_concurrent_calls": None}})
    assert updated["providers"]["a"] == {"model": "m", "rate_limit_rpm": 95}
    assert updated["generation"] == {"parallel_workers": 3}


def test_a_provider_without_limits_gets_no_recommendation():
    report = simulate(
        {"providers": {"a": {"max_concurrent_calls": 2}}},
        "<test>",
        Options(requests=20, latency_s=0.5, provider_rpm=math.inf, speedup=50),  # --provider-rpm none
    )
    assert report["completed"] == 20 and report["rate_limited_429"] == 0
    assert report["binding_constraint"] == "limiter:default_a"  # 2 at once, 10 workers
    assert report["recommendation"] == {} and report["provider_capacity_rpm"] is None


def test_a_provider_concurrency_limit_is_recommended_as_combined(tmp_path):
    report = simulate(
        {"providers": {"a": {"name": "openai", "max_concurrent_calls": 50}}, "generation": {"parallel_workers": 8}},
        "<test>",
        Options(requests=120, latency_s=1.0, provider_rpm=600, provider_concurrency=4),
    )
    assert report["rate_limited_429"] > 0 and report["rate_limited_by"]["concurrency"] > 0
    keys = report["recommendation"]["a"]
    assert keys["max_concurrent_calls"] == 4 and keys["rate_limit_mode"] == "combined"
    assert keys["rate_limit_rpm"] <= 0.95 * 4 * 60 / report["measured_latency_s"] + 1


# ---- the command ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_simulates(path, tmp_path):
    out = tmp_path / "report.json"
    done = run_simulate(path, "--requests", 80, "--json", out)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    for key in (
        "requests",
        "completed",
        "rate_limited_429",
        "timeouts",
        "projected_wall_s",
        "throughput_rpm",
        "provider_capacity_rpm",
        "binding_constraint",
        "recommendation",
    ):
        assert key in report, key
    assert report["requests"] == 80
    assert report["completed"] + report["timeouts"] + report["failed"] == 80
    assert sum(role["calls"] for role in report["roles"].values()) == 80
    assert report["projected_wall_s"] > 0 and report["throughput_rpm"] > 0
    assert "binding constraint" in done.stdout and "429s from the provider" in done.stdout
    assert "\r[" not in done.stderr  # no progress bar when stderr is not a terminal
    parse_config(apply_recommendation(yaml.safe_load(path.read_text()), report["recommendation"]))  # valid


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("providers:\n  user_followup:\n    max_concurrent_calls: -5\n", "user_followup.max_concurrent_calls"),
        ("providers:\n  user_followup: [1, 2\n", "line 3, column 1"),
        ("", "empty"),
        ("providers:\n  a: {rate_limit_rpm: 5}\n  a: {rate_limit_rpm: 6}\n", "duplicate key"),
    ],
)
def test_a_broken_file_is_an_error(tmp_path, text, message):
    config = tmp_path / "broken.yaml"
    config.write_text(text)
    done = run_simulate(config)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


def test_a_missing_file_and_bad_options_are_errors(tmp_path):
    done = run_simulate(tmp_path / "missing.yaml")
    assert done.returncode == 2 and "missing.yaml" in done.stderr and "Traceback" not in done.stderr
    example = EXAMPLES[0]
    for args in (("--requests", "0"), ("--latency", "-1"), ("--speedup", "fast"), ("--provider-rpm", "0")):
        done = run_simulate(example, *args)
        assert done.returncode == 2 and "Traceback" not in done.stderr, args


# ---- the guide's production recommendations, against a 500-RPM key with 2-s calls -------------------------


def test_the_guides_recommendations_and_the_fix_for_high_volume(tmp_path):
    examples = Path(__file__).resolve().parent.parent / "examples"
    conservative = tmp_path / "conservative.json"
    done = run_simulate(
        examples / "production_conservative.yaml", "--latency", 2, "--provider-rpm", 500, "--json", conservative
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(conservative.read_text())
    assert report["rate_limited_429"] == 0 and report["completed"] == report["requests"]
    assert report["binding_constraint"] == "parallel_workers"  # 5 workers x 2-s calls: 150 RPM

    high = tmp_path / "high.json"
    fixed = tmp_path / "fixed.yaml"
    done = run_simulate(
        examples / "production_high_volume.yaml",
        "--latency",
        2,
        "--provider-rpm",
        500,
        "--json",
        high,
        "--write-recommended",
        fixed,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(high.read_text())
    assert report["rate_limited_429"] > 0  # 20 workers x 2-s calls: 600 RPM against 500
    assert report["binding_constraint"] == "provider_rpm:default"
    recommended = yaml.safe_load(fixed.read_text())
    assert recommended["generation"]["parallel_workers"] == 20
    assert all("max_concurrent_calls" not in role for role in recommended["providers"].values())

    after = tmp_path / "after.json"
    done = run_simulate(fixed, "--latency", 2, "--provider-rpm", 500, "--json", after)
    assert done.returncode == 0, done.stderr
    report = json.loads(after.read_text())
    assert report["rate_limited_429"] == 0 and report["completed"] == report["requests"]
    assert report["throughput_rpm"] >= 0.9 * report["provider_capacity_rpm"], report["throughput_rpm"]


# ---- one API key per provider ---------------------------------------------------------------------------


def test_roles_of_different_providers_have_an_api_key_each(tmp_path):
    """example2: an OpenAI role (500 RPM) and an Anthropic one (50 RPM) are two API keys, not one
    50-RPM key for both: no 429s, and a recommended limiter per key, never shared between them."""
    out = tmp_path / "report.json"
    done = run_simulate(EXAMPLES_DIR / "example2_rpm_auto_detection.yaml", "--requests", 120, "--json", out)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    keys = report["api_keys"]
    assert list(keys) == ["openai", "anthropic"]
    assert (keys["openai"]["rpm"], keys["openai"]["roles"]) == (500, ["user_followup"])
    assert (keys["anthropic"]["rpm"], keys["anthropic"]["roles"]) == (50, ["assistant_response"])
    assert "auto-detected for anthropic claude-3-haiku" in keys["anthropic"]["rpm_source"]
    assert report["rate_limited_429"] == 0 and report["completed"] == 120
    assert keys["openai"]["capacity_rpm"] == 500 and keys["anthropic"]["capacity_rpm"] == 50
    assert keys["anthropic"]["binding_constraint"] == "limiter:anthropic_claude-3-haiku_assistant_response"
    assert report["binding_constraint"] == "limiter:anthropic_claude-3-haiku_assistant_response"
    recommended = report["recommendation"]
    assert recommended["user_followup"]["rate_limit_shared_key"] == "openai_api_key"
    assert recommended["assistant_response"]["rate_limit_shared_key"] == "anthropic_api_key"
    assert (recommended["user_followup"]["rate_limit_rpm"], recommended["assistant_response"]["rate_limit_rpm"]) == (
        475,
        47,
    )
    # A 500-RPM limiter reads 500 as its own limit; the 1,000 it allows the whole run is labelled so.
    [openai_limiter] = [limiter for limiter in report["limiters"] if limiter["key"].startswith("openai")]
    assert (openai_limiter["capacity_rpm"], openai_limiter["run_ceiling_rpm"]) == (500, 1000)
    assert "  openai: 500 RPM (auto-detected for openai gpt-4o-mini); role user_followup" in done.stdout
    assert "provider (one API key)" not in done.stdout


def test_provider_limits_apply_per_provider_or_to_a_named_one():
    document = yaml.safe_load((EXAMPLES_DIR / "example2_rpm_auto_detection.yaml").read_text())
    every = simulate(document, "<test>", Options(requests=40, provider_rpm=300, speedup=40))
    assert {name: key["rpm"] for name, key in every["api_keys"].items()} == {"openai": 300, "anthropic": 300}
    named = simulate(
        document,
        "<test>",
        Options(requests=40, speedup=40, named_limits={"anthropic": {"rpm": 45, "concurrency": 1}}),
    )
    assert named["api_keys"]["openai"]["rpm"] == 500  # auto-detected
    assert (named["api_keys"]["anthropic"]["rpm"], named["api_keys"]["anthropic"]["concurrency"]) == (45, 1)
    # A 50-RPM limiter (one call every 1.2 s) against one 2-s call at a time: 429s, on that key alone.
    assert named["api_keys"]["anthropic"]["rate_limited_by"]["concurrency"] > 0
    assert named["api_keys"]["openai"]["rate_limited_429"] == 0
    assert named["recommendation"]["assistant_response"]["max_concurrent_calls"] == 1
    assert "max_concurrent_calls" not in named["recommendation"]["user_followup"]


def test_named_provider_limits_on_the_command_line(tmp_path):
    out = tmp_path / "report.json"
    path = EXAMPLES_DIR / "example2_rpm_auto_detection.yaml"
    done = run_simulate(
        path, "--requests", 40, "--provider-rpm", "anthropic=100", "--provider-rpm", "none", "--json", out
    )
    assert done.returncode == 0, done.stderr
    keys = json.loads(out.read_text())["api_keys"]
    assert keys["anthropic"]["rpm"] == 100 and keys["anthropic"]["rpm_source"] == "--provider-rpm anthropic=100"
    assert keys["openai"]["rpm"] is None  # none: no RPM limit
    done = run_simulate(path, "--provider-rpm", "mistral=100")
    assert done.returncode == 2
    assert "omnilimit simulate: error: " in done.stderr and "no provider 'mistral'" in done.stderr
    assert "openai, anthropic" in done.stderr


def test_a_config_without_provider_names_says_where_its_capacity_comes_from():
    done = run_simulate(EXAMPLES_DIR / "production_high_volume.yaml", "--requests", 40)
    assert done.returncode == 0, done.stderr
    first_lines = done.stdout.splitlines()[:4]
    assert any("default: 60 RPM (no role names its provider" in line for line in first_lines), first_lines
    assert any("pass --provider-rpm N" in line for line in first_lines)
