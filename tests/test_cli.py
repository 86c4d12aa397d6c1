"""The ``omnilimit`` command as a whole: every command has a plain-text help with a description,
reports an error as ``omnilimit COMMAND: error: MESSAGE`` (exit status 2), and ``check --json``
writes ``{"source", "error"}`` for a file it cannot use; ``omnilimit`` or ``omnilimit shm`` alone
prints its help; ``omnilimit demo`` says what it does and whether the limiters held."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import with_the_suite

from omnilimit import cli, demo

COMMANDS = [[], ["check"], ["simulate"], ["demo"], ["bench"], ["shm"], ["shm", "list"], ["shm", "remove"]]
# reStructuredText or Markdown that a docstring would carry into a help text
MARKUP = re.compile(r"``|`|\*\*|:(func|class|meth|mod|attr|data|exc|obj|ref|doc|py:\w+):")


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """``omnilimit ARGS`` (``python -m omnilimit``) in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "omnilimit", *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )


def run_in_process(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    """``cli.main(ARGS)``: its status (or argparse's, from SystemExit), stdout and stderr."""
    try:
        status = cli.main([str(a) for a in args])
    except SystemExit as exited:
        assert isinstance(exited.code, int)
        status = exited.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def description_of(help_text: str) -> str:
    """The paragraph after the usage lines of an argparse help ('' when there is none)."""
    paragraphs = help_text.split("\n\n")
    assert paragraphs[0].startswith("usage: "), help_text
    following = paragraphs[1] if len(paragraphs) > 1 else ""
    return "" if following.startswith(("positional arguments:", "options:", "optional arguments:")) else following


# --- help ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "omnilimit")
def test_every_help_is_plain_text_with_a_description(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run_in_process(capsys, *command, "--help")
    assert status == 0 and err == ""
    assert out.startswith(f"usage: {' '.join(['omnilimit', *command])} ")
    assert MARKUP.search(out) is None, MARKUP.search(out)
    assert len(description_of(out)) > 40, out


def test_the_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run_in_process(capsys, "--help")
    for name in ("check", "simulate", "demo", "bench", "shm"):
        assert re.search(rf"^    {name} +\S", out, re.MULTILINE), (name, out)
    assert "omnilimit COMMAND: error: MESSAGE" in out


# the benchmark suite's package, which `omnilimit bench` runs, for a child process
WITH_SUITE = with_the_suite()


def test_bench_help_has_no_docstring_markup() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "omnilimit", "bench", "--help"],
        env=WITH_SUITE,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "``" not in done.stdout and "omnilimit bench``" not in done.stdout
    assert description_of(done.stdout).startswith("Run the benchmark suite")


def test_bench_without_the_suite_says_how_to_get_it() -> None:
    # as where only omnilimit is installed: `import omnilimit_bench` fails
    code = (
        "import sys; sys.modules['omnilimit_bench'] = None; "
        "from omnilimit.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    for args in (["bench"], ["bench", "--help"], ["bench", "--only", "uncontended"]):
        done = subprocess.run(
            [sys.executable, "-c", code, *args], env=WITH_SUITE, capture_output=True, text=True, timeout=60, check=False
        )
        assert (done.returncode, done.stdout) == (2, ""), done.stderr
        assert done.stderr == f"omnilimit bench: error: {cli.BENCH_MISSING}\n"
    assert cli.BENCH_MISSING.endswith("pip install ./benchmarks")


def test_a_broken_suite_is_not_reported_as_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "omnilimit_bench.report", None)  # the package is there, not its module
    with pytest.raises(ModuleNotFoundError, match=r"omnilimit_bench\.report"):
        cli.main(["bench"])


def test_shm_alone_prints_its_help() -> None:
    done = run("shm")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("usage: omnilimit shm ")
    assert "required" not in done.stderr and "error" not in done.stderr
    for action in ("list", "remove"):
        assert re.search(rf"^    {action} +\S", done.stderr, re.MULTILINE), done.stderr


def test_omnilimit_alone_prints_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run_in_process(capsys)
    assert status == 2 and out == ""
    assert err.startswith("usage: omnilimit ") and "required" not in err
    assert all(name in err for name in cli.COMMANDS)


# --- errors --------------------------------------------------------------------------------------

NO_SUCH_FILE = "absent.yaml"


@pytest.mark.parametrize(
    ("args", "prefix"),
    [
        (["bogus"], "omnilimit: error: "),
        (["check"], "omnilimit check: error: "),
        (["check", "--bogus", NO_SUCH_FILE], "omnilimit check: error: "),
        (["check", NO_SUCH_FILE], "omnilimit check: error: "),
        (["simulate"], "omnilimit simulate: error: "),
        (["simulate", "x.yaml", "--requests", "many"], "omnilimit simulate: error: "),
        (["simulate", NO_SUCH_FILE], "omnilimit simulate: error: "),
        (["bench", "--bogus"], "omnilimit bench: error: "),
        (["bench", "--only", "nothing"], "omnilimit bench: error: "),
        (["demo", "extra"], "omnilimit demo: error: "),
        (["shm", "bogus"], "omnilimit shm: error: "),
        (["shm", "list", "extra"], "omnilimit shm: error: "),
        (["shm", "remove"], "omnilimit shm remove: error: "),
        (["shm", "remove", "not/a/name"], "omnilimit shm remove: error: "),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else "",
)
def test_every_command_reports_an_error_with_its_prefix(
    args: list[str], prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # NO_SUCH_FILE does not exist here
    status, out, err = run_in_process(capsys, *args)
    assert status == 2, (out, err)
    assert out == "" and "Traceback" not in err
    assert err.splitlines()[-1].startswith(prefix), err


def test_an_unusable_shm_prefix_is_an_error_not_a_traceback() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "omnilimit", "shm", "list"],
        env={**os.environ, "OMNILIMIT_SHM_PREFIX": "../etc/"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("omnilimit shm list: error: OMNILIMIT_SHM_PREFIX") and done.stderr.count("\n") == 1


def test_fail_writes_one_line_and_returns_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.fail("check", "a.yaml: providers.bad\nwarning: forged") == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "omnilimit check: error: a.yaml: providers.bad\\nwarning: forged\n"


def test_fail_writes_the_json_where_it_was_asked_for(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.fail("simulate", "x.yaml: the file is empty", json_to="-", source="x.yaml") == 2
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"source": "x.yaml", "error": "x.yaml: the file is empty"}
    assert captured.err == "omnilimit simulate: error: x.yaml: the file is empty\n"
    target = tmp_path / "out.json"
    assert cli.fail("simulate", "boom", json_to=str(target), source="x.yaml") == 2
    assert json.loads(target.read_text(encoding="utf-8")) == {"source": "x.yaml", "error": "boom"}
    assert capsys.readouterr().out == ""
    unwritable = tmp_path / "no dir" / "out.json"
    assert cli.fail("simulate", "boom", json_to=str(unwritable), source="x.yaml") == 2
    assert capsys.readouterr().err.splitlines() == [
        "omnilimit simulate: error: boom",
        f"omnilimit simulate: error: {unwritable}: cannot write the JSON: No such file or directory",
    ]


def test_the_error_json_survives_a_file_name_that_is_not_utf8() -> None:
    text = cli.error_json("bad\udcff.yaml", "bad\udcff.yaml: cannot read the file")
    text.encode("utf-8")
    assert json.loads(text)["source"] == "bad\udcff.yaml"


# --- check --json on a file it cannot use --------------------------------------------------------

BAD_FILES = {
    "yaml": ("providers:\n  r:\n\tname: openai\n", "config.yaml: line 3, column 1:"),
    "config": ("providers:\n  r:\n    rate_limit_rpm: abc\n", "config.yaml: providers.r.rate_limit_rpm: "),
    "empty": ("# nothing\n", "the file is empty"),
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_check_json_to_stdout_on_a_bad_file_is_one_json_object(tmp_path: Path, kind: str) -> None:
    text, fragment = BAD_FILES[kind]
    path = write(tmp_path, text)
    done = run("check", "--json", "-", path)
    assert done.returncode == 2, done.stderr
    error = json.loads(done.stdout)  # the whole of stdout: one object
    assert error == {"source": str(path), "error": error["error"]} and fragment in error["error"]
    assert done.stderr == f"omnilimit check: error: {error['error']}\n"


def test_check_json_to_stdout_on_a_missing_or_binary_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "absent.yaml"
    status, out, err = run_in_process(capsys, "check", missing, "--json", "-")
    assert status == 2 and json.loads(out) == {
        "source": str(missing),
        "error": f"{missing}: cannot read the file: No such file or directory",
    }
    assert err.startswith("omnilimit check: error: ")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00providers")
    status, out, _ = run_in_process(capsys, "check", binary, "--json", "-")
    assert status == 2 and "not UTF-8" in json.loads(out)["error"]


def test_check_json_to_a_file_on_a_bad_file_gets_the_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, BAD_FILES["config"][0])
    target = tmp_path / "out.json"
    target.write_text('{"stale": true}\n', encoding="utf-8")  # a previous run's: not to be read as this one's
    status, out, err = run_in_process(capsys, "check", path, "--json", target)
    assert status == 2 and out == ""
    written = json.loads(target.read_text(encoding="utf-8"))
    assert set(written) == {"source", "error"} and written["source"] == str(path)
    assert err == f"omnilimit check: error: {written['error']}\n"


def test_check_json_of_a_valid_file_has_no_error_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "providers:\n  r:\n    max_concurrent_calls: 5\n")
    status, out, _ = run_in_process(capsys, "check", "--json", "-", path)
    assert status == 0 and "error" not in json.loads(out)


def test_simulate_json_to_stdout_on_a_bad_file_is_one_json_object(tmp_path: Path) -> None:
    path = write(tmp_path, BAD_FILES["config"][0])
    done = run("simulate", path, "--json", "-")
    assert done.returncode == 2, done.stderr
    error = json.loads(done.stdout)
    assert error == {"source": str(path), "error": error["error"]} and BAD_FILES["config"][1] in error["error"]
    assert done.stderr == f"omnilimit simulate: error: {error['error']}\n"


def test_check_help_documents_the_error_json(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run_in_process(capsys, "check", "--help")
    flat = " ".join(out.split())
    assert '{"source": CONFIG.yaml, "error": MESSAGE}' in flat
    assert "omnilimit check: error: MESSAGE" in flat


# --- demo ----------------------------------------------------------------------------------------


def test_demo_says_what_it_does_how_long_and_what_it_prints(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run_in_process(capsys, "demo", "--help")
    flat = " ".join(out.split())
    for words in ("ConcurrencyLimiter", "RateLimiter", "about 7 seconds", "prints", "get_stats()", "Exit status"):
        assert words in flat, words
    _, top, _ = run_in_process(capsys, "--help")
    assert "about 7 s" in " ".join(top.split())


def test_demo_runs_and_both_limiters_hold() -> None:
    done = run("demo")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "most calls in flight at once: 8 (limit 8): held" in done.stdout
    assert "never ahead of burst + rate x time: held" in done.stdout
    assert done.stdout.count("get_stats(): {") == 2


class _NoLimit:
    """A ConcurrencyLimiter that lets everything through: what the demo must catch."""

    def __init__(self, **_: object) -> None:
        pass

    def acquire(self, timeout: float | None = None) -> bool:
        return True

    def release(self) -> None:
        pass

    def get_current_rpm(self) -> int:
        return 0

    def get_stats(self) -> dict[str, int]:
        return {}


class _NoRate(_NoLimit):
    """A RateLimiter that admits every call at once."""

    burst_size = 1

    def record_request(self) -> None:
        pass


@pytest.mark.parametrize(
    ("broken", "skipped", "shown", "error"),
    [
        (
            ("ConcurrencyLimiter", _NoLimit),
            "run_rate",
            ": NOT HELD",
            r"the ConcurrencyLimiter let \d+ calls in flight at once \(limit 8\)",
        ),
        (
            ("RateLimiter", _NoRate),
            "run_concurrency",
            "never ahead of burst + rate x time: NOT HELD",
            r"the RateLimiter admitted \d+ call\(s\) ahead of burst \+ rate x time",
        ),
    ],
    ids=["concurrency", "rate"],
)
def test_demo_reports_a_limiter_that_does_not_hold(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    broken: tuple[str, type],
    skipped: str,
    shown: str,
    error: str,
) -> None:
    monkeypatch.setattr(demo, *broken)
    monkeypatch.setattr(demo, skipped, lambda **_: None)
    status, out, err = run_in_process(capsys, "demo")
    assert status == 1
    assert shown in out
    assert re.fullmatch(rf"omnilimit demo: error: {error}\n", err)


def test_the_version_is_written_once() -> None:
    """``omnilimit --version``, ``omnilimit.__version__`` and the installed metadata all say the
    version pyproject.toml gives (the one place it is written)."""
    import omnilimit

    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    written = re.search(r'^version = "([^"]+)"$', pyproject, re.M)
    assert written is not None
    shown = subprocess.run(
        [sys.executable, "-m", "omnilimit", "--version"], capture_output=True, text=True, timeout=60, check=True
    )
    assert shown.stdout == f"omnilimit {written[1]}\n"
    assert omnilimit.__version__ == written[1]
    sources = Path(omnilimit.__file__).parent
    assert not [p for p in sources.rglob("*.py") if re.search(r"__version__ = [\"']", p.read_text())]
