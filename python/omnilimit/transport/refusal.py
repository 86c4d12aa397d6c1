"""A refusal (``LimiterTimeout``, ``LimiterClosed``) raised through an SDK unchanged and not retried.

The anthropic SDK (2.x) wraps whatever its transport raises in ``APIConnectionError`` and retries
it with back-off, unless it is one of its own errors (``AnthropicError``); the openai SDK (3.x)
lets the errors of other packages through and also leaves its own (``OpenAIError``) as they are.
So a refusal seen in a request of one of these SDKs (its ``User-Agent`` says which) is raised as
a class that is both the omnilimit error and that SDK's base error: ``except LimiterTimeout``
catches it, and neither SDK wraps it or tries again (the caller has already waited its timeout).
The SDK is looked up among the modules already imported, never imported here.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

# The start of the User-Agent an SDK's clients send (``AsyncAnthropic/Python 2.15.0``), without
# "Async" -> (its module, the base class of its errors).
_SDKS = {"Anthropic/": ("anthropic", "AnthropicError"), "OpenAI/": ("openai", "OpenAIError")}


def through_sdk(error: BaseException, headers: Mapping[str, str]) -> BaseException:
    """``error``, as the SDK that sent a request with ``headers`` lets through (see the module)."""
    agent = headers.get("user-agent", "").removeprefix("Async")
    for prefix, (module, base) in _SDKS.items():
        if agent.startswith(prefix):
            sdk_error = getattr(sys.modules.get(module), base, None)
            if isinstance(sdk_error, type) and issubclass(sdk_error, Exception):
                joined = _joined(type(error), sdk_error)(*error.args)
                joined.__cause__, joined.__context__ = error.__cause__, error.__context__
                return joined
    return error


_JOINED: dict[tuple[type[BaseException], type[Exception]], type[BaseException]] = {}


def _as_plain(kind: type[BaseException]) -> Any:
    """``__reduce__`` of a joined class: pickled (a process pool sending it back), it is the plain
    omnilimit error, which the receiving process can always rebuild."""

    def reduce(self: BaseException) -> tuple[Any, tuple[Any, ...]]:
        return kind, self.args

    return reduce


def _joined(kind: type[BaseException], sdk_error: type[Exception]) -> type[BaseException]:
    """``kind`` that is also ``sdk_error``, named as ``kind`` is (tracebacks read the same); one
    class per pair (setdefault: two threads making it at once keep the same one)."""
    joined = _JOINED.get((kind, sdk_error))
    if joined is None:
        names = {"__module__": kind.__module__, "__qualname__": kind.__qualname__, "__reduce__": _as_plain(kind)}
        made = type(kind.__name__, (kind, sdk_error), names)
        joined = _JOINED.setdefault((kind, sdk_error), made)
    return joined
