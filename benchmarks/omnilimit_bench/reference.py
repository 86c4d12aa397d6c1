"""Load OmniGen's limiters, ``omnigen/utils/rate_limiter.py`` of ``omnigen-usf==0.1.18``, as the
reference to compare against, without importing the ``omnigen`` package (its ``__init__`` pulls in
openai, datasets, pytz...).

The one file is found in, first, ``$OMNILIMIT_REFERENCE`` (a path to ``rate_limiter.py`` or to the
wheel, read with zipfile), then the installed distribution. It is executed as a private module while
a stub ``omnigen.utils.logger`` stands in ``sys.modules`` for its one omnigen import; the stubs are
removed afterwards and whatever ``sys.modules`` held before is put back.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import sys
import types
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

DISTRIBUTION = "omnigen-usf"
VERSION = "0.1.18"
MEMBER = "omnigen/utils/rate_limiter.py"
ENV_VAR = "OMNILIMIT_REFERENCE"
INSTALL_HINT = f"pip install 'omnilimit[bench]' (it brings {DISTRIBUTION}=={VERSION})"
MODULE_NAME = "omnilimit_bench_reference_rate_limiter"


class Unavailable(Exception):
    """The reference cannot be found; the message says why."""


def _installed_path() -> Path:
    """rate_limiter.py of the installed omnigen package, found without importing the package."""
    candidates = []
    try:  # for a top-level name find_spec imports nothing: omnigen/__init__.py does not run
        spec = importlib.util.find_spec("omnigen")
    except ValueError:  # an "omnigen" in sys.modules without __spec__
        spec = None
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(location, "utils", "rate_limiter.py") for location in spec.submodule_search_locations]
    with suppress(importlib.metadata.PackageNotFoundError):
        candidates.append(Path(str(importlib.metadata.distribution(DISTRIBUTION).locate_file(MEMBER))))
    for path in candidates:
        if path.is_file():
            return path
    raise Unavailable(f"{DISTRIBUTION} is not installed and {ENV_VAR} is not set")


def _read_source() -> tuple[str, str, str]:
    """The reference's source text, its file name and where it came from (for people: the
    distribution when installed); raises Unavailable when not found."""
    given = os.environ.get(ENV_VAR)
    if given:
        path = Path(given)
        if not path.is_file():
            raise Unavailable(f"{ENV_VAR}={given} is not a file")
        if path.suffix == ".whl":
            with zipfile.ZipFile(path) as wheel:
                if MEMBER not in wheel.namelist():
                    raise Unavailable(f"{path} holds no {MEMBER}")
                return wheel.read(MEMBER).decode("utf-8"), f"{path}!{MEMBER}", f"{path}!{MEMBER}"
        return path.read_text(encoding="utf-8"), str(path), str(path)

    path = _installed_path()
    try:
        where = f"{DISTRIBUTION} {importlib.metadata.version(DISTRIBUTION)}, installed"
    except importlib.metadata.PackageNotFoundError:
        where = str(path)
    return path.read_text(encoding="utf-8"), str(path), where


@contextmanager
def _logger_stub() -> Iterator[None]:
    """``omnigen.utils.logger.setup_logger()`` returning a quiet logger, only for the ``with``."""
    logger = logging.getLogger("omnigen.reference")
    logger.setLevel(logging.ERROR)
    names = ("omnigen", "omnigen.utils", "omnigen.utils.logger")
    stubs = {name: types.ModuleType(name) for name in names}
    stubs["omnigen"].__path__ = []  # packages, so the dotted import resolves through them
    stubs["omnigen.utils"].__path__ = []
    stubs["omnigen.utils.logger"].__dict__["setup_logger"] = lambda *args, **kwargs: logger
    saved = {name: sys.modules[name] for name in stubs if name in sys.modules}
    sys.modules.update(stubs)
    try:
        yield
    finally:
        for name in stubs:
            del sys.modules[name]
        sys.modules.update(saved)


def load_reference() -> tuple[types.ModuleType | None, str]:
    """``(module, where it came from)``, or ``(None, why it is not available)``."""
    try:
        source, filename, where = _read_source()
        module = types.ModuleType(MODULE_NAME)
        module.__file__ = filename
        with _logger_stub():
            exec(compile(source, filename, "exec"), module.__dict__)
    except Exception as error:  # any failure only means "no reference rows"
        reason = error if isinstance(error, Unavailable) else f"{type(error).__name__}: {error}"
        return None, f"{reason}; {INSTALL_HINT} or set {ENV_VAR} to its rate_limiter.py or .whl"
    return module, where
