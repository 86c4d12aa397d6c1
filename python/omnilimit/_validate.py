"""Validation of limits and names: a clear ValueError naming the argument, never a silent
fallback to a default."""

from __future__ import annotations

import math
import numbers

from omnilimit._shown import shown

# A count that the core keeps in 64 bits with room to spare for arithmetic.
MAX_COUNT = 2**62


class InvalidValue(ValueError):
    """``name`` does not meet ``requirement``; config.py rephrases it with the file and role."""

    def __init__(self, name: str, requirement: str, value: object) -> None:
        self.name = name
        self.requirement = requirement
        self.value = value
        super().__init__(f"{name} {requirement}, got {shown(value)}")


def whole_number(name: str, value: object, *, maximum: int = MAX_COUNT) -> int:
    """``value`` as an int in [1, maximum]. Integral floats (``50.0``) are accepted; bools,
    fractions, NaN, infinities, strings and None are not."""
    requirement = "must be a whole number >= 1"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidValue(name, requirement, value)
    if isinstance(value, numbers.Integral):
        count = int(value)
    else:
        as_float = _as_float(value)
        if not math.isfinite(as_float) or not as_float.is_integer():
            raise InvalidValue(name, requirement, value)
        count = int(as_float)
    if count < 1:
        raise InvalidValue(name, requirement, value)
    if count > maximum:
        raise InvalidValue(name, f"must be at most {maximum}", value)
    return count


def positive_rate(name: str, value: object) -> float:
    """``value`` as a finite float > 0 (fractional rates such as 0.5 per minute are valid)."""
    requirement = "must be a finite number > 0"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidValue(name, requirement, value)
    rate = _as_float(value)
    if not math.isfinite(rate) or rate <= 0.0:
        raise InvalidValue(name, requirement, value)
    return rate


def _as_float(value: numbers.Real) -> float:
    """``float(value)``, or infinity for a number too large for a float (``2**2000``,
    ``Fraction(10**400, 1)``), which every check then refuses by name."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf  # type: ignore[operator]


def label(name: str, value: object, *, allow_empty: bool = True) -> str:
    """A name: a string (non-empty unless ``allow_empty``)."""
    if not isinstance(value, str) or (not allow_empty and not value):
        raise InvalidValue(name, "must be a string" if allow_empty else "must be a non-empty string", value)
    return value


def flag(name: str, value: object) -> bool:
    """A keyword flag: True or False (0 and 1 too, as the native ``acquire`` reads it)."""
    if value is True or value is False:
        return value
    if type(value) is int and value in (0, 1):
        return bool(value)
    raise InvalidValue(name, "must be True or False", value)


def token_count(value: object, name: str = "tokens") -> int:
    """A count of tokens (``tokens`` for an acquire, ``used`` for a settle): a whole number in
    [0, MAX_COUNT] (not a bool). The core's own check (register_rate.cpp) says the same."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise ValueError(f"{name} must be a whole number >= 0 (at most 2**62), got {shown(value)}")
    return value
