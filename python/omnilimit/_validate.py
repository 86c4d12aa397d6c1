"""Validation of constructor arguments: a clear ValueError naming the argument, never a silent
fallback to a default."""

from __future__ import annotations

import math
import numbers

# A count that the core keeps in 64 bits with room to spare for arithmetic.
MAX_COUNT = 2**62


def whole_number(name: str, value: object, *, maximum: int = MAX_COUNT) -> int:
    """``value`` as an int in [1, maximum]. Integral floats (``50.0``) are accepted; bools,
    fractions, NaN, infinities, strings and None are not."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    if isinstance(value, numbers.Integral):
        count = int(value)
    else:
        as_float = float(value)
        if not math.isfinite(as_float) or not as_float.is_integer():
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
        count = int(as_float)
    if count < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    if count > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {value!r}")
    return count


def positive_rate(name: str, value: object) -> float:
    """``value`` as a finite float > 0 (fractional rates such as 0.5 per minute are valid)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    rate = float(value)
    if not math.isfinite(rate) or rate <= 0.0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return rate


def label(name: str, value: object) -> str:
    """A limiter's name: a string."""
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {value!r}")
    return value
