"""What an LLM provider's response headers say about its rate limits, for a limiter to act on.

``parse_rate_limit_headers(response.headers)`` reads the standard ``Retry-After`` (and the
``retry-after-ms`` that OpenAI and Azure send), OpenAI's ``x-ratelimit-*`` headers and Anthropic's
``anthropic-ratelimit-*`` headers into a ``RateLimitInfo``; ``RateLimitInfo.pause_s()`` is how long
to stop sending. Every time is returned as seconds from ``now``. A header that says garbage is
ignored with one warning on the ``omnilimit`` logger and never raises: a provider's bad header must
not break the request that carried it.

Formats read:

- ``Retry-After``: delay-seconds (RFC 9110: a non-negative integer; a decimal such as ``1.5`` is
  accepted too) or an HTTP-date, taken relative to ``now`` and clamped at 0 when in the past.
- ``retry-after-ms``: a non-negative number of milliseconds. Preferred over ``Retry-After`` when
  both are valid (it is the more precise of the two).
- OpenAI: ``x-ratelimit-{limit,remaining}-{requests,tokens}`` (integers) and
  ``x-ratelimit-reset-{requests,tokens}`` (durations as Go prints them: ``1s``, ``6m0s``,
  ``20ms``, ``1h2m3.5s``; see ``parse_duration``).
- Anthropic: ``anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining}``
  (integers) and ``-reset`` (RFC 3339 timestamps such as ``2024-06-01T12:00:30Z``, taken relative to
  ``now`` and clamped at 0 when in the past).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import TypeVar

from omnilimit._log import logger
from omnilimit._validate import MAX_COUNT

__all__ = ["RateLimitInfo", "parse_duration", "parse_rate_limit_headers"]


@dataclass(frozen=True)
class RateLimitInfo:
    """What the headers say; None where they say nothing (or said garbage).

    Every duration is in seconds from the ``now`` of the parse, finite and >= 0; every count is an
    int >= 0. ``requests_*`` and ``tokens_*`` describe the provider's request and token budgets;
    ``*_reset_s`` is the time until that budget is full again.

    Anthropic reports its token budget up to three times: ``tokens`` (the most restrictive of its
    token limits), ``input-tokens`` and ``output-tokens``. They are folded into the ``tokens_*``
    fields as the budget closest to running out: ``tokens_remaining`` is the smallest remaining,
    ``tokens_reset_s`` the reset of that same budget (the latest one if several share the smallest
    remaining; None if none of them gave a valid reset, since another budget's reset says nothing
    about when this one refills), ``tokens_limit`` the smallest limit. Without any remaining, the
    reset is the latest one given.

    OpenAI and Anthropic headers never come together; if they do, each field takes the more
    restrictive of the two: the smaller limit, the smaller remaining, the later reset.
    """

    retry_after_s: float | None = None
    requests_limit: int | None = None
    requests_remaining: int | None = None
    requests_reset_s: float | None = None
    tokens_limit: int | None = None
    tokens_remaining: int | None = None
    tokens_reset_s: float | None = None

    def pause_s(self) -> float | None:
        """How long to stop sending, or None if the headers do not say: ``retry_after_s`` if
        present; else the reset time of each budget whose remaining is 0 (the longest of those);
        else None. An exhausted budget without a reset time says nothing about how long to wait."""
        if self.retry_after_s is not None:
            return self.retry_after_s
        resets = [
            reset
            for remaining, reset in (
                (self.requests_remaining, self.requests_reset_s),
                (self.tokens_remaining, self.tokens_reset_s),
            )
            if remaining == 0 and reset is not None
        ]
        return max(resets) if resets else None


# --- Values -------------------------------------------------------------------------------------

# A decimal number without sign or exponent: "5", "1.5", "5.", ".5".
_NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_NUMBER_RE = re.compile(_NUMBER)
_INT_RE = re.compile(r"[0-9]+")

# Go's time.Duration units (OpenAI prints its resets with Go's Duration.String), largest first.
# "µ" is U+00B5 MICRO SIGN and "μ" U+03BC GREEK SMALL LETTER MU; Go accepts both.
_UNITS: dict[str, tuple[int, float, float]] = {  # unit -> (rank, seconds per unit as a fraction)
    "h": (0, 3600.0, 1.0),
    "m": (1, 60.0, 1.0),
    "s": (2, 1.0, 1.0),
    "ms": (3, 1.0, 1e3),  # divided, not multiplied by 1e-3: "20ms" is the float 0.02
    "us": (4, 1.0, 1e6),
    "\u00b5s": (4, 1.0, 1e6),
    "\u03bcs": (4, 1.0, 1e6),
    "ns": (5, 1.0, 1e9),
}
# "ms" before "m": the regex takes the first alternative that matches.
_DURATION_PART_RE = re.compile(f"({_NUMBER})(h|ms|m|s|us|\u00b5s|\u03bcs|ns)")

_RFC3339_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
    r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))"
)


def _finite_seconds(value: float, text: str) -> float:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"not a finite non-negative duration: {text!r}")
    return value


def parse_duration(text: str) -> float:
    """Seconds in a duration as OpenAI sends it in ``x-ratelimit-reset-*``.

    OpenAI prints durations with Go's ``time.Duration.String``: ``"1s"``, ``"6m0s"``, ``"20ms"``,
    ``"1h2m3.5s"``, ``"7.66s"``. Accepted: one or more ``<number><unit>`` parts with units ``h``,
    ``m``, ``s``, ``ms``, ``us`` / ``µs`` / ``μs`` and ``ns`` (case-sensitive, as in Go; ``M`` is
    not minutes), each unit at most once and from largest to smallest, as Go writes them; or a bare
    number, taken as seconds. Numbers are unsigned decimals (``"0.5s"``, ``".5s"``), without
    exponent. Surrounding whitespace is ignored.

    Raises ValueError on anything else: empty text, a sign (negative durations mean nothing here),
    an unknown unit, a repeated or out-of-order unit (``"1m1m"``, ``"1s1m"``), spaces between parts,
    ``"inf"``, ``"nan"``, or a value too large to be finite.
    """
    stripped = text.strip()
    if _NUMBER_RE.fullmatch(stripped):
        return _finite_seconds(float(stripped), text)
    if not stripped:
        raise ValueError("empty duration")
    total = 0.0
    position = 0
    last_rank = -1
    while position < len(stripped):
        part = _DURATION_PART_RE.match(stripped, position)
        if part is None:
            raise ValueError(f"not a duration (expected parts like '6m0s' or '20ms'): {text!r}")
        rank, multiplier, divisor = _UNITS[part.group(2)]
        if rank <= last_rank:
            raise ValueError(f"repeated or out-of-order unit {part.group(2)!r} in duration {text!r}")
        last_rank = rank
        total += float(part.group(1)) * multiplier / divisor
        position = part.end()
    return _finite_seconds(total, text)


def _parse_count(text: str) -> int:
    """A non-negative integer of ASCII digits (no sign, exponent, underscore or other digits)."""
    stripped = text.strip()
    if not _INT_RE.fullmatch(stripped):
        raise ValueError(text)
    digits = stripped.lstrip("0") or "0"
    if len(digits) > len(str(MAX_COUNT)) or int(digits) > MAX_COUNT:
        raise ValueError(text)  # no real budget is this large; int() of huge text is also slow
    return int(digits)


def _parse_number(text: str) -> float:
    """A non-negative decimal number, finite."""
    stripped = text.strip()
    if not _NUMBER_RE.fullmatch(stripped):
        raise ValueError(text)
    return _finite_seconds(float(stripped), text)


def _parse_retry_after(text: str, now: float) -> float:
    """delay-seconds, or an HTTP-date (RFC 9110) as seconds from ``now``, at least 0.

    The date is read by ``email.utils.parsedate_to_datetime``, which takes the three forms RFC 9110
    asks recipients to accept (IMF-fixdate, RFC 850, asctime) and is lenient beyond them; a date
    without a known zone is taken as GMT, the only zone an HTTP-date may have."""
    stripped = text.strip()
    if _NUMBER_RE.fullmatch(stripped):
        return _parse_number(stripped)
    try:
        when = parsedate_to_datetime(stripped)
    except (TypeError, ValueError, IndexError, OverflowError) as error:  # 3.9 raises TypeError
        raise ValueError(text) from error
    if when is None:  # typeshed allows it; no version returns it for a str
        raise ValueError(text)
    if when.tzinfo is None:  # "-0000": HTTP-dates are always GMT
        when = when.replace(tzinfo=timezone.utc)
    return _seconds_until(when, now, text)


def _parse_rfc3339(text: str, now: float) -> float:
    """An RFC 3339 timestamp (``2024-06-01T12:00:30Z``) as seconds from ``now``, at least 0."""
    match = _RFC3339_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(text)
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    fraction = float("0" + match.group(7)) if match.group(7) else 0.0
    leap = second == 60  # RFC 3339 allows a leap second; datetime does not
    offset = timedelta(0)
    if match.group(8):
        offset_hours, offset_minutes = int(match.group(9)), int(match.group(10))
        if offset_hours > 23 or offset_minutes > 59:
            raise ValueError(text)
        offset = timedelta(hours=offset_hours, minutes=offset_minutes)
        if match.group(8) == "-":
            offset = -offset
    try:
        when = datetime(year, month, day, hour, minute, 59 if leap else second, tzinfo=timezone(offset))
    except ValueError as error:  # month 13, February 30, hour 24...
        raise ValueError(text) from error
    return _seconds_until(when, now, text, extra_s=fraction + (1.0 if leap else 0.0))


def _seconds_until(when: datetime, now: float, text: str, extra_s: float = 0.0) -> float:
    return _finite_seconds(max(0.0, when.timestamp() + extra_s - now), text)


# --- Headers ------------------------------------------------------------------------------------

_T = TypeVar("_T", int, float)

_RETRY_AFTER = "retry-after"
_RETRY_AFTER_MS = "retry-after-ms"

# The budget headers: name -> (source, budget, field). Anthropic's "input-tokens" and
# "output-tokens" budgets are folded into "tokens" (see RateLimitInfo).
_BUDGET_HEADERS: dict[str, tuple[str, str, str]] = {}
for _field in ("limit", "remaining", "reset"):
    for _budget in ("requests", "tokens"):
        _BUDGET_HEADERS[f"x-ratelimit-{_field}-{_budget}"] = ("openai", _budget, _field)
    for _budget in ("requests", "tokens", "input-tokens", "output-tokens"):
        _BUDGET_HEADERS[f"anthropic-ratelimit-{_budget}-{_field}"] = ("anthropic", _budget, _field)

_EXPECTED_COUNT = "a non-negative integer"
_EXPECTED_RETRY_AFTER = "non-negative delay-seconds or an HTTP-date"
_EXPECTED_RETRY_AFTER_MS = "a non-negative number of milliseconds"
_EXPECTED_RESET = {
    "openai": "a duration such as '6m0s' or '20ms'",
    "anthropic": "an RFC 3339 timestamp such as '2024-06-01T12:00:30Z'",
}


@dataclass
class _Budget:
    limit: int | None = None
    remaining: int | None = None
    reset: float | None = None


def _pairs(headers: object) -> Iterator[tuple[object, object]]:
    if headers is None:
        return
    if isinstance(headers, (str, bytes, bytearray)):
        raise TypeError(f"headers must be a mapping or an iterable of (name, value) pairs, got {headers!r}")
    if isinstance(headers, Mapping):
        yield from headers.items()
        return
    items = getattr(headers, "items", None)
    if callable(items):  # email.message.Message / http.client.HTTPMessage: pairs, not a Mapping
        headers = items()
    if not isinstance(headers, Iterable):
        raise TypeError(f"headers must be a mapping or an iterable of (name, value) pairs, got {headers!r}")
    for pair in headers:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise TypeError(f"headers must be (name, value) pairs, got {pair!r}")
        yield pair[0], pair[1]


def _text(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):  # raw headers (httpx.Headers.raw, ASGI) are latin-1
        return bytes(value).decode("latin-1")
    return None


def _relevant_headers(headers: object) -> dict[str, tuple[str, object]]:
    """The headers this module reads, by lowercase name -> (name as sent, value); a repeated name
    keeps its last value, as ``dict(pairs)`` would."""
    found: dict[str, tuple[str, object]] = {}
    for raw_name, value in _pairs(headers):
        name = _text(raw_name)
        if name is None:
            continue
        key = name.strip().lower()
        if key in (_RETRY_AFTER, _RETRY_AFTER_MS) or key in _BUDGET_HEADERS:
            found[key] = (name, value)
    return found


def _parse_header(header: tuple[str, object], parser: Callable[[str], _T], expected: str) -> _T | None:
    """``parser(value)``, or None with one warning if the value is not text or ``parser`` rejects it."""
    name, value = header
    text = _text(value)
    if text is not None:
        try:
            return parser(text)
        except ValueError:
            pass
    logger.warning("Ignoring rate-limit header %r: bad value %r (expected %s)", name, value, expected)
    return None


def _smallest(values: Iterable[int | None]) -> int | None:
    present = [value for value in values if value is not None]
    return min(present) if present else None


def _latest(values: Iterable[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return max(present) if present else None


def _closest_to_running_out(budgets: list[_Budget]) -> _Budget:
    """Anthropic's token budgets as one: the smallest remaining with its own reset (the latest if
    several share it), the smallest limit; without any remaining, the latest reset."""
    remaining = _smallest(budget.remaining for budget in budgets)
    if remaining is None:
        reset = _latest(budget.reset for budget in budgets)
    else:
        reset = _latest(budget.reset for budget in budgets if budget.remaining == remaining)
    return _Budget(_smallest(budget.limit for budget in budgets), remaining, reset)


def _most_restrictive(budgets: list[_Budget]) -> _Budget:
    """Field by field: the smaller limit and remaining, the later reset."""
    return _Budget(
        _smallest(budget.limit for budget in budgets),
        _smallest(budget.remaining for budget in budgets),
        _latest(budget.reset for budget in budgets),
    )


def parse_rate_limit_headers(
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None,
    now: float | None = None,
) -> RateLimitInfo:
    """What ``headers`` say about the provider's rate limits (see the module docstring for the
    headers and formats read, ``RateLimitInfo`` for how they combine).

    ``headers`` is any Mapping (a dict, ``httpx.Headers``, requests' ``CaseInsensitiveDict``), an
    iterable of ``(name, value)`` pairs, or None (nothing known). Header names are case-insensitive;
    when a list names a header twice the last value counts (a Mapping such as ``httpx.Headers``
    joins repeats with ", ", which is then a bad value). Names and values may also be bytes (read as
    latin-1). ``now`` is the current wall-clock time (``time.time()``, the default) that HTTP-dates
    and RFC 3339 timestamps are measured from; it must be finite.

    A bad value never raises: the header is ignored and logged with one warning on the
    ``omnilimit`` logger naming the header and the value. Only a ``headers`` argument that is not a
    mapping or iterable of pairs, or a non-finite ``now`` (programming errors), raises.
    """
    if now is None:
        now = time.time()
    elif not math.isfinite(now):
        raise ValueError(f"now must be a finite time.time() value, got {now!r}")
    at = now  # a name the closures below can see as a float

    found = _relevant_headers(headers)

    retry_after_ms = retry_after = None
    if _RETRY_AFTER_MS in found:
        retry_after_ms = _parse_header(
            found[_RETRY_AFTER_MS], lambda text: _parse_number(text) / 1000.0, _EXPECTED_RETRY_AFTER_MS
        )
    if _RETRY_AFTER in found:
        retry_after = _parse_header(
            found[_RETRY_AFTER], lambda text: _parse_retry_after(text, at), _EXPECTED_RETRY_AFTER
        )

    budgets: dict[tuple[str, str], _Budget] = {}
    for key, (source, budget_name, field) in _BUDGET_HEADERS.items():
        if key not in found:
            continue
        budget = budgets.setdefault((source, budget_name), _Budget())
        if field == "limit":
            budget.limit = _parse_header(found[key], _parse_count, _EXPECTED_COUNT)
        elif field == "remaining":
            budget.remaining = _parse_header(found[key], _parse_count, _EXPECTED_COUNT)
        elif source == "openai":
            budget.reset = _parse_header(found[key], parse_duration, _EXPECTED_RESET[source])
        else:
            budget.reset = _parse_header(found[key], lambda text: _parse_rfc3339(text, at), _EXPECTED_RESET[source])

    def get(source: str, budget_name: str) -> _Budget:
        return budgets.get((source, budget_name), _Budget())

    anthropic_tokens = _closest_to_running_out(
        [get("anthropic", name) for name in ("tokens", "input-tokens", "output-tokens")]
    )
    requests = _most_restrictive([get("openai", "requests"), get("anthropic", "requests")])
    tokens = _most_restrictive([get("openai", "tokens"), anthropic_tokens])
    return RateLimitInfo(
        retry_after_s=retry_after_ms if retry_after_ms is not None else retry_after,
        requests_limit=requests.limit,
        requests_remaining=requests.remaining,
        requests_reset_s=requests.reset,
        tokens_limit=tokens.limit,
        tokens_remaining=tokens.remaining,
        tokens_reset_s=tokens.reset,
    )
