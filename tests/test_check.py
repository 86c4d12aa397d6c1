"""``omnilimit check CONFIG.yaml``: the limiters a file makes, the keys they ignore, the guide's
warnings; exit 0 for a valid file, 2 (the reason on stderr, no traceback) for a bad one."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from omnilimit import check
from omnilimit.config import load_yaml

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.yaml"))


def run_check(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """``omnilimit check ARGS`` (``python -m omnilimit check``) in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "omnilimit", "check", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def check_in_process(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    status = check.main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def warnings_of(out: str) -> list[str]:
    return [line[len("warning: ") :] for line in out.splitlines() if line.startswith("warning: ")]


def table_row(out: str, key: str) -> str:
    """The first line of the table row of limiter `key`."""
    [row] = [line for line in out.splitlines() if line.startswith(f"  {key} ")]
    return row


def as_json(path: Path) -> dict[str, Any]:
    done = run_check(path, "--json", "-")
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return data


# --- the guide's configurations ------------------------------------------------------------------


def test_there_are_examples() -> None:
    assert len(EXAMPLE_FILES) >= 10


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_every_example_checks_clean(path: Path) -> None:
    done = run_check(path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and "Traceback" not in done.stdout
    config = load_yaml(path)
    for key, plan in config.limiters.items():
        row = table_row(done.stdout, key)
        assert plan.kind in row.split()
        assert str(plan.roles[0].role) in row
    # The guide's warnings, as the loader words them, and no others.
    assert warnings_of(done.stdout) == list(config.warnings)
    if config.parallel_workers is not None:
        assert f"generation.parallel_workers: {config.parallel_workers}" in done.stdout.splitlines()


def test_example5_warns_that_the_rpm_is_ignored() -> None:
    done = run_check(EXAMPLES / "example5_mixed_not_recommended.yaml")
    assert done.returncode == 0  # a warning is not an error
    [warning] = warnings_of(done.stdout)
    assert "providers.user_followup" in warning and "rate_limit_rpm 500 is ignored" in warning
    row = table_row(done.stdout, "openai_gpt-4o-mini_user_followup")
    assert row.split()[1:4] == ["concurrency", "50", "concurrent"] and " - " in row  # no burst
    assert re.search(r"^  user_followup: rate_limit_rpm - max_concurrent_calls takes precedence$", done.stdout, re.M)


def test_production_high_volume_has_no_warning_as_100_slots_cover_20_workers() -> None:
    done = run_check(EXAMPLES / "production_high_volume.yaml")
    assert done.returncode == 0
    assert warnings_of(done.stdout) == [] and "no warnings" in done.stdout
    assert "generation.parallel_workers: 20" in done.stdout
    for key in ("default_user_followup", "default_assistant_response"):
        assert "100 concurrent" in table_row(done.stdout, key)


def test_example2_shows_the_auto_detected_rpm_and_its_source() -> None:
    path = EXAMPLES / "example2_rpm_auto_detection.yaml"
    done = run_check(path)
    assert done.returncode == 0
    row = table_row(done.stdout, "openai_gpt-4o-mini_user_followup")
    assert "500 RPM (auto-detected for" in row and row.split()[-3:] == ["1", "memory", "user_followup"]
    assert "openai gpt-4o-mini)" in done.stdout
    limiters = {limiter["key"]: limiter for limiter in as_json(path)["limiters"]}
    openai = limiters["openai_gpt-4o-mini_user_followup"]
    assert openai["text"] == "500 RPM (auto-detected for openai gpt-4o-mini)"
    assert (openai["kind"], openai["rpm"], openai["burst"]) == ("rate", 500, 1)
    anthropic = limiters["anthropic_claude-3-haiku_assistant_response"]
    assert anthropic["rpm"] == 50 and anthropic["rpm_auto_detected"] == "anthropic claude-3-haiku"


def test_a_set_rpm_is_not_called_auto_detected() -> None:
    done = run_check(EXAMPLES / "example3_custom_rpm.yaml")
    assert "auto-detected" not in done.stdout
    assert "300 RPM" in table_row(done.stdout, "openai_gpt-4o-mini_user_followup")


def test_a_shared_key_is_one_row_naming_every_role() -> None:
    done = run_check(EXAMPLES / "shared_concurrency.yaml")
    assert done.stdout.splitlines()[0].endswith("1 limiter for 2 roles")
    row = table_row(done.stdout, "my_key")
    assert "50 concurrent" in row and "user_followup, assistant_response" in row


def test_in_process_with_aligned_columns(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = check_in_process(capsys, EXAMPLES / "example1_simple_concurrency.yaml")
    assert status == 0 and err == ""
    assert out.splitlines()[0].endswith("example1_simple_concurrency.yaml: 2 limiters for 2 roles")
    header = next(line for line in out.splitlines() if line.lstrip().startswith("key "))
    assert header.split() == ["key", "kind", "limit", "burst", "backend", "roles"]
    # The columns line up: each row's kind starts under the heading's.
    column = header.index("kind")
    for key in ("openai_gpt-4o-mini_user_followup", "openai_gpt-4o-mini_assistant_response"):
        assert table_row(out, key)[column:].startswith("concurrency")


# --- what the table says -------------------------------------------------------------------------


def test_provider_keys_are_listed_as_ignored_without_their_values(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "providers:\n"
        "  user_followup:\n"
        "    name: openai\n"
        "    model: gpt-4o-mini\n"
        "    api_key: sk-live-SECRET-1234\n"
        "    temperature: 0.7\n"
        "    base_url: https://user:pw-SECRET@example.invalid/v1\n"
        "    max_concurrent_calls: 20\n",
    )
    done = run_check(path)
    assert done.returncode == 0
    assert re.search(
        r"^  user_followup: api_key, temperature, base_url - not a limiter setting \(the provider client's\)$",
        done.stdout,
        re.M,
    )
    data = as_json(path)
    for text in (done.stdout, done.stderr, json.dumps(data)):
        assert "SECRET" not in text and "0.7" not in text
    [limiter] = data["limiters"]
    assert [(i["role"], i["key"]) for i in limiter["ignored"]] == [
        ("user_followup", "api_key"),
        ("user_followup", "temperature"),
        ("user_followup", "base_url"),
    ]
    assert "name" not in {i["key"] for i in limiter["ignored"]}  # name and model make the key


def test_redis_password_is_redacted(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "providers:\n"
        "  r:\n"
        "    name: anthropic\n"
        "    max_concurrent_calls: 5\n"
        "    rate_limit_backend: redis://app:hunter2@redis.internal:6379/0\n"
        "    rate_limit_on_backend_error: local\n"
        "    rate_limit_local_fraction: 0.5\n",
    )
    done = run_check(path)
    assert done.returncode == 0, done.stderr
    assert "hunter2" not in done.stdout
    assert "redis://app:***@redis.internal:6379/0" in table_row(done.stdout, "anthropic_r")
    assert "on_backend_error=local" in done.stdout and "local_fraction=0.5" in done.stdout
    [limiter] = as_json(path)["limiters"]
    assert limiter["backend"] == "redis://app:***@redis.internal:6379/0"
    assert limiter["backend_options"] == {"on_backend_error": "local", "local_fraction": 0.5}


def test_a_lease_on_a_rate_limiter_is_ignored(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "providers:\n  r:\n    rate_limit_rpm: 60\n    rate_limit_backend: redis://localhost:6379/0\n"
        "    rate_limit_lease_seconds: 10\n",
    )
    [limiter] = as_json(path)["limiters"]
    assert [(i["key"], i["reason"]) for i in limiter["ignored"]] == [
        ("rate_limit_lease_seconds", "leases are for concurrency limiters: this is a rate limiter")
    ]


def test_coordination_is_shown_and_ignored_on_a_concurrency_limiter(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "providers:\n  r:\n    rate_limit_rpm: 60\n    rate_limit_backend: redis://localhost:6379/0\n"
        "    rate_limit_coordination: lease\n  c:\n    max_concurrent_calls: 4\n"
        "    rate_limit_backend: redis://localhost:6379/0\n    rate_limit_coordination: lease\n",
    )
    assert "coordination=lease" in run_check(path).stdout
    rate, concurrency = sorted(as_json(path)["limiters"], key=lambda limiter: limiter["kind"], reverse=True)
    assert rate["kind"] == "rate" and rate["backend_options"] == {"coordination": "lease"} and not rate["ignored"]
    assert [(i["key"], i["reason"]) for i in concurrency["ignored"]] == [
        ("rate_limit_coordination", "coordination is how a rate limiter decides: this is a concurrency limiter")
    ]


def test_shm_backend(tmp_path: Path) -> None:
    path = write(tmp_path, "providers:\n  r:\n    max_concurrent_calls: 4\n    rate_limit_backend: shm\n")
    done = run_check(path)
    assert done.returncode == 0 and table_row(done.stdout, "default_r").split()[-2:] == ["shm", "r"]


def test_combined_limiter_shows_every_dimension(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "providers:\n  r:\n    name: openai\n    model: gpt-4o\n    max_concurrent_calls: 10\n"
        "    rate_limit_rpm: 300\n    rate_limit_tpm: 200000\n    rate_limit_mode: combined\n",
    )
    done = run_check(path)
    assert done.returncode == 0 and warnings_of(done.stdout) == []
    assert "ignored keys: none" in done.stdout  # combined: the RPM and the TPM count
    lines = done.stdout.splitlines()
    at = lines.index(table_row(done.stdout, "openai_gpt-4o_r"))
    assert "combined" in lines[at] and "10 concurrent" in lines[at]
    assert "300 RPM" in lines[at + 1] and "200000 TPM" in lines[at + 2]
    [limiter] = as_json(path)["limiters"]
    assert limiter["text"] == "10 concurrent, 300 RPM, 200000 TPM"
    assert (limiter["kind"], limiter["limit"], limiter["max_concurrent"], limiter["rpm"], limiter["tpm"]) == (
        "combined",
        10,
        10,
        300,
        200000,
    )
    assert limiter["burst"] == 1


def test_rate_limiter_with_a_token_budget(tmp_path: Path) -> None:
    path = write(tmp_path, "providers:\n  r:\n    rate_limit_rpm: 0.5\n    rate_limit_tpm: 40000.0\n")
    [limiter] = as_json(path)["limiters"]
    assert limiter["text"] == "0.5 RPM, 40000 TPM" and limiter["kind"] == "rate"


def test_combined_mode_without_a_concurrency_cap_is_reported_as_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, "providers:\n  r:\n    rate_limit_rpm: 100\n    rate_limit_mode: combined\n")
    [limiter] = as_json(path)["limiters"]
    assert limiter["kind"] == "rate"
    assert [i["key"] for i in limiter["ignored"]] == ["rate_limit_mode"]


def test_shared_key_with_different_limits_warns(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "providers:\n"
        "  a:\n    name: openai\n    rate_limit_shared_key: acct\n    rate_limit_rpm: 500\n"
        "  b:\n    name: openai\n    rate_limit_shared_key: acct\n    rate_limit_rpm: 300\n",
    )
    done = run_check(path)
    assert done.returncode == 0
    [warning] = warnings_of(done.stdout)
    assert "'acct'" in warning and "rate_limit_rpm 500" in warning and "uses 300 RPM" in warning
    assert "300 RPM" in table_row(done.stdout, "acct") and "a, b" in table_row(done.stdout, "acct")


def test_a_shared_concurrency_limiter_ignores_a_roles_rpm(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "providers:\n"
        "  a:\n    rate_limit_shared_key: k\n    rate_limit_rpm: 100\n"
        "  b:\n    rate_limit_shared_key: k\n    max_concurrent_calls: 8\n"
        "generation:\n  parallel_workers: 8\n",
    )
    done = run_check(path)
    assert done.returncode == 0
    [warning] = warnings_of(done.stdout)
    assert "different limits" in warning
    [limiter] = as_json(path)["limiters"]
    assert limiter["kind"] == "concurrency" and limiter["limit"] == 8 and limiter["burst"] is None
    [ignored] = limiter["ignored"]
    assert (ignored["role"], ignored["key"]) == ("a", "rate_limit_rpm") and "'k'" in ignored["reason"]


def test_every_kind_of_warning_appears(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "providers:\n"
        "  mixed:\n    max_concurrent_calls: 4\n    rate_limit_rpm: 500\n    rate_limit_tpm: 10000\n"
        "  a:\n    rate_limit_shared_key: acct\n    max_concurrent_calls: 30\n"
        "  b:\n    rate_limit_shared_key: acct\n    max_concurrent_calls: 40\n"
        "generation:\n  parallel_workers: 10\n",
    )
    done = run_check(path)
    assert done.returncode == 0
    warnings = warnings_of(done.stdout)
    assert warnings == list(load_yaml(path).warnings) and len(warnings) == 3
    assert any("rate_limit_rpm 500 and rate_limit_tpm 10000 are ignored" in w for w in warnings)
    assert any("'acct'" in w and "different limits" in w for w in warnings)
    assert any("max_concurrent_calls 4 is below generation.parallel_workers 10" in w for w in warnings)
    # Each warning on one line of its own, after the table and the ignored keys.
    lines = done.stdout.splitlines()
    assert lines.index("generation.parallel_workers: 10") < lines.index(f"warning: {warnings[0]}")


def test_a_role_without_settings_and_many_roles_wrap(tmp_path: Path) -> None:
    roles = [f"role_number_{n}" for n in range(12)]
    text = "providers:\n  bare:\n" + "".join(f"  {r}:\n    rate_limit_shared_key: pool\n" for r in roles)
    done = run_check(write(tmp_path, text))
    assert done.returncode == 0, done.stderr
    assert "60 RPM (auto-detected for" in table_row(done.stdout, "default_bare")
    # The roles wrap to keep the table within 100 columns (the summary line names the file).
    assert all(len(line) <= 100 for line in done.stdout.splitlines()[1:])
    for role in roles:
        assert role in done.stdout
    [limiter] = [entry for entry in as_json(write(tmp_path, text))["limiters"] if entry["key"] == "pool"]
    assert limiter["roles"] == roles


# --- JSON ----------------------------------------------------------------------------------------


def test_json_to_a_file_next_to_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_path = tmp_path / "check.json"
    status, out, _ = check_in_process(capsys, EXAMPLES / "example5_mixed_not_recommended.yaml", "--json", out_path)
    assert status == 0 and "openai_gpt-4o-mini_user_followup" in out  # the table is printed too
    data = json.loads(out_path.read_text())
    assert set(data) == {"source", "limiters", "parallel_workers", "warnings"}
    assert data["parallel_workers"] is None and len(data["warnings"]) == 1
    [limiter] = data["limiters"]
    assert {"key", "kind", "limit", "rpm", "tpm", "burst", "backend", "roles", "ignored"} <= set(limiter)
    assert limiter["key"] == "openai_gpt-4o-mini_user_followup"
    assert (limiter["kind"], limiter["limit"], limiter["rpm"], limiter["tpm"]) == ("concurrency", 50, None, None)
    assert (limiter["burst"], limiter["backend"], limiter["roles"]) == (None, "memory", ["user_followup"])
    assert limiter["ignored"] == [
        {"role": "user_followup", "key": "rate_limit_rpm", "reason": "max_concurrent_calls takes precedence"}
    ]


def test_json_to_stdout_is_only_json(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = check_in_process(capsys, EXAMPLES / "production_high_volume.yaml", "--json", "-")
    assert status == 0
    data = json.loads(out)
    assert data["parallel_workers"] == 20 and data["warnings"] == []
    assert [(x["key"], x["limit"]) for x in data["limiters"]] == [
        ("default_user_followup", 100),
        ("default_assistant_response", 100),
    ]


def test_json_that_cannot_be_written_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "no such dir" / "x.json"
    status, _, err = check_in_process(capsys, EXAMPLES / "quickstart_rpm.yaml", "--json", target)
    assert status == 2 and "cannot write" in err


# --- bad files -----------------------------------------------------------------------------------


def assert_refused(done: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert done.returncode == 2, done.stdout
    assert done.stdout == "" and "Traceback" not in done.stderr
    for fragment in fragments:
        assert fragment in done.stderr, done.stderr
    return done.stderr


def test_a_bad_value_names_the_role_and_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, "providers:\n  good:\n    max_concurrent_calls: 5\n  bad:\n    rate_limit_rpm: 0\n")
    assert_refused(run_check(path), "config.yaml: providers.bad.rate_limit_rpm: must be a finite number > 0, got 0")


def test_a_bad_value_does_not_leak_a_secret(tmp_path: Path) -> None:
    path = write(tmp_path, "providers:\n  r:\n    api_key: sk-SECRET\n    max_concurrent_calls: -5\n")
    err = assert_refused(run_check(path), "providers.r.max_concurrent_calls: must be a whole number >= 1, got -5")
    assert "SECRET" not in err


def test_malformed_yaml_names_its_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "providers:\n  r:\n\tname: openai\n")
    assert_refused(run_check(path), "config.yaml: line 3, column 1:")


def test_a_duplicate_key_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "providers:\n  r:\n    max_concurrent_calls: 5\n  r:\n    max_concurrent_calls: 50\n")
    assert_refused(run_check(path), "line 4, column 3: found duplicate key 'r'")


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    assert_refused(run_check(write(tmp_path, "# nothing here\n")), "the file is empty")
    assert_refused(run_check(write(tmp_path, "", "blank.yaml")), "blank.yaml", "the file is empty")


def test_a_file_without_providers_is_refused(tmp_path: Path) -> None:
    assert_refused(run_check(write(tmp_path, "generation:\n  parallel_workers: 4\n")), "'providers' is missing")


def test_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "absent.yaml"
    assert_refused(run_check(missing), "absent.yaml", "No such file or directory")
    status, out, err = check_in_process(capsys, missing)
    assert status == 2 and out == "" and "absent.yaml" in err


def test_a_directory_and_a_binary_file(tmp_path: Path) -> None:
    assert_refused(run_check(tmp_path), "cannot read")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00providers")
    assert_refused(run_check(binary), "binary.yaml", "not UTF-8")


def test_in_process_errors_are_returned_not_raised(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "providers:\n  r:\n    rate_limit_rpm: abc\n")
    status, out, err = check_in_process(capsys, path)
    assert status == 2 and out == ""
    assert err.startswith("omnilimit check: error: ") and "providers.r.rate_limit_rpm" in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        check.main([])
    assert exited.value.code == 2
    assert "omnilimit check" in capsys.readouterr().err


def test_a_reader_that_leaves_early_gets_no_traceback() -> None:
    reader = subprocess.Popen(
        [sys.executable, "-m", "omnilimit", "check", str(EXAMPLE_FILES[0]), "--json", "-"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert reader.stdout is not None
    reader.stdout.close()  # as `| head -0` would
    _, err = reader.communicate(timeout=60)
    assert b"Traceback" not in err and b"BrokenPipe" not in err
