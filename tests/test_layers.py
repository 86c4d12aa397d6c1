"""The layers the package keeps (YAML -> config -> manager -> limiters -> stores -> core), as far as
a test can see them without import-linter: `lint-imports` (run by CI with the contracts in
pyproject.toml) checks the module graph; this checks what the linter cannot see, and that the
layers' promises hold at run time."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "python" / "omnilimit"
TOOLS = {"cli.py", "__main__.py"}


def test_imports_from_the_package_root_name_only_modules():
    """The linter reads `from omnilimit import _core` as an import of the package itself (the native
    module has no .py file) and so ignores imports of the root: none may fetch anything else there,
    where every layer is re-exported (a limiter importing `from omnilimit import ProviderRateLimitManager`
    would break the layers unseen)."""
    modules = {path.stem for path in PACKAGE.iterdir() if path.suffix == ".py" or (path / "__init__.py").exists()}
    modules.add("_core")
    offending = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name in TOOLS and path.parent == PACKAGE:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module == "omnilimit" and node.level == 0:
                offending += [f"{path.name}: {alias.name}" for alias in node.names if alias.name not in modules]
    assert offending == []
