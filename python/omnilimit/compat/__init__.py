"""Compatibility with OmniGen: ``patch_omnigen()`` switches an installed omnigen-usf over to
omnilimit's limiters."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any

from omnilimit.compat import omnigen as _replacements

__all__ = ["patch_omnigen"]

_REFERENCE_MODULE = "omnigen.utils.rate_limiter"


def patch_omnigen() -> list[str]:
    """Makes an installed omnigen-usf use omnilimit's ``RateLimiter``, ``ConcurrencyLimiter``,
    ``ProviderRateLimitManager``, ``get_default_rate_limit`` and ``DEFAULT_RATE_LIMITS``.

    ``omnigen.utils.rate_limiter`` is imported (which imports omnigen's pipelines) and, in it and
    in every imported ``omnigen`` module that bound one of these objects at import time (its
    runners and generators do), each binding is replaced by omnilimit's. Modules imported later get
    omnilimit's from the patched module. Returns the ``module.name`` bindings it replaced; a second
    call finds nothing left to replace and returns ``[]``. Objects omnigen created before the call
    (a manager already built by a runner) keep omnigen's classes: patch first, then build.

    Raises ModuleNotFoundError when omnigen-usf is not installed, ImportError when it is but cannot
    be imported (a missing dependency of its own)."""
    if importlib.util.find_spec("omnigen") is None:
        raise ModuleNotFoundError("omnigen-usf is not installed: nothing to patch", name="omnigen")
    try:
        reference = importlib.import_module(_REFERENCE_MODULE)
    except ImportError as error:
        raise ImportError(f"omnigen-usf is installed but {_REFERENCE_MODULE} cannot be imported: {error}") from error
    replacement_by_id: dict[int, tuple[Any, Any]] = {}
    for name in _replacements.__all__:
        original = getattr(reference, name, None)
        ours = getattr(_replacements, name)
        if original is not None and original is not ours:
            replacement_by_id[id(original)] = (original, ours)
    patched: list[str] = []
    if not replacement_by_id:
        return patched
    for module_name, module in sorted(sys.modules.items()):
        if module is None or not (module_name == "omnigen" or module_name.startswith("omnigen.")):
            continue
        for attribute, value in list(vars(module).items()):
            found = replacement_by_id.get(id(value))
            if found is not None and found[0] is value:
                setattr(module, attribute, found[1])
                patched.append(f"{module_name}.{attribute}")
    return patched
