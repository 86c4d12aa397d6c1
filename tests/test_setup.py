"""The set-up the README promises: its first two commands make a virtual environment (a fresh
Debian or Ubuntu refuses ``pip install`` outside one), CI runs the README's command that runs every
test, and the everyday ``test`` extra stays light."""

from __future__ import annotations

import re
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
    assert names == {"pytest", "pytest-timeout", "hypothesis", "redis"}
    assert "omnilimit[test,bench,plot]" in extras["test-all"]
    assert any(requirement.startswith("omnigen-usf") for requirement in extras["bench"])


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib")
def test_the_docs_extra_has_what_mkdocs_yml_uses():
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {re.split(r"[<>=!;\[ ]", requirement)[0] for requirement in extras["docs"]}
    assert names == {"mkdocs", "mkdocs-material", "mkdocstrings"}
    assert any(requirement.startswith("mkdocstrings[python]") for requirement in extras["docs"])
