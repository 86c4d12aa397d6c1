"""The set-up the README promises: its first two commands make a virtual environment (a fresh
Debian or Ubuntu refuses ``pip install`` outside one), CI runs the README's command that runs every
test, the everyday ``test`` extra stays light, and the suite fails on every warning."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def bash_blocks(text: str) -> list[list[str]]:
    """The commands of each fenced bash block, comments stripped."""
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [[line.split("   #")[0].strip() for line in block.splitlines() if line.strip()] for block in blocks]


def test_the_first_commands_make_and_use_a_virtual_environment():
    first = bash_blocks((ROOT / "README.md").read_text())[0]
    assert len(first) == 2
    for command in first:
        assert command.startswith("python3 -m venv .venv && . .venv/bin/activate && pip install ")
    assert first[1].endswith('pip install ".[test]" && pytest')


def test_ci_runs_the_readmes_command_for_every_test():
    blocks = bash_blocks((ROOT / "README.md").read_text())
    [everything] = [c for block in blocks for c in block if '".[test-all]" && pytest' in c and "venv" in c]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert everything in [line.strip() for line in ci]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib")
def test_the_everyday_extra_is_light_and_test_all_has_the_rest():
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {re.split(r"[<>=!;\[ ]", requirement)[0] for requirement in extras["test"]}
    # uvloop: the coroutine tests run on it too
    assert names == {"pytest", "pytest-timeout", "hypothesis", "redis", "uvloop"}
    assert "omnilimit[test,bench,plot,lint,docs]" in extras["test-all"]  # CI runs the gates in the same venv
    assert {"ruff", "mypy", "import-linter"} <= {re.split(r"[<>=!;\[ ]", r)[0] for r in extras["lint"]}
    assert any(requirement.startswith("omnigen-usf") for requirement in extras["bench"])


def test_an_assert_in_a_worker_thread_fails_its_test(tmp_path):
    """The suite runs with filterwarnings=error: an exception in a thread (reported by pytest as a
    warning) fails the test that started the thread, and so does a pipe left open."""
    (tmp_path / "test_thread.py").write_text(
        "import threading\n\n\n"
        "def test_thread():\n"
        "    thread = threading.Thread(target=lambda: exec('assert 1 == 2'))\n"
        "    thread.start()\n"
        "    thread.join()\n\n\n"
        "def test_fine():\n"
        "    pass\n"
    )
    config = ROOT / "pyproject.toml"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-c",
            str(config),
            "--rootdir",
            str(tmp_path),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 failed, 1 passed" in done.stdout, done.stdout
    assert "test_thread" in done.stdout and "AssertionError" in done.stdout


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib")
def test_the_docs_extra_has_what_mkdocs_yml_uses():
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {re.split(r"[<>=!;\[ ]", requirement)[0] for requirement in extras["docs"]}
    assert names == {"mkdocs", "mkdocs-material", "mkdocstrings"}
    assert any(requirement.startswith("mkdocstrings[python]") for requirement in extras["docs"])


def test_the_bench_package_requires_this_checkouts_omnilimit():
    """The suite reads some of omnilimit's internals: it is released with omnilimit, and its
    package asks for exactly the version it was written against."""
    version = re.search(r'(?m)^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text())
    bench = (ROOT / "benchmarks" / "pyproject.toml").read_text()
    assert version is not None
    assert re.findall(r'"omnilimit(?:[=<>!~].*?)?"', bench) == [f'"omnilimit=={version[1]}"']


def test_the_build_says_at_once_that_it_is_for_linux_only(tmp_path):
    """On another system (here: configuring for macOS) CMake stops before any compiler check,
    with the README's statement, instead of failing later inside a header."""
    from helpers import need

    cmake = need("cmake")
    binary = Path(cmake.CMAKE_BIN_DIR) / "cmake"
    configured = subprocess.run(
        [str(binary), "-S", str(ROOT), "-B", str(tmp_path), "-DCMAKE_SYSTEM_NAME=Darwin"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert configured.returncode != 0
    said = " ".join(configured.stderr.split())
    assert "omnilimit builds on Linux only" in said and "this system is Darwin" in said
    assert "compiler" not in said.split("omnilimit builds on Linux only")[0]  # nothing tried before it
    assert "Linux only" in (ROOT / "README.md").read_text()
