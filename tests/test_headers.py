"""omnilimit.headers: an LLM provider's rate-limit headers read into RateLimitInfo; garbage ignored
with exactly one warning per bad header, never an exception."""

from __future__ import annotations

import logging
import math
from datetime import datetime, timezone

import pytest
from helpers import need
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omnilimit import headers
from omnilimit.headers import RateLimitInfo, parse_duration, parse_rate_limit_headers

NOW = datetime(2024, 6, 1, 12, 0, 0, tzinfo=timezone.utc).timestamp()  # Saturday

OPENAI_COUNTS = [
    "x-ratelimit-limit-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
]
OPENAI_RESETS = ["x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"]
ANTHROPIC_FAMILIES = ["requests", "tokens", "input-tokens", "output-tokens"]
ANTHROPIC_COUNTS = [f"anthropic-ratelimit-{f}-{k}" for f in ANTHROPIC_FAMILIES for k in ("limit", "remaining")]
ANTHROPIC_RESETS = [f"anthropic-ratelimit-{f}-reset" for f in ANTHROPIC_FAMILIES]
ALL_HEADERS = ["retry-after", "retry-after-ms", *OPENAI_COUNTS, *OPENAI_RESETS, *ANTHROPIC_COUNTS, *ANTHROPIC_RESETS]

# The field that each header, given alone, sets.
FIELD = {"retry-after": "retry_after_s", "retry-after-ms": "retry_after_s"}
for _budget in ("requests", "tokens"):
    for _kind in ("limit", "remaining", "reset"):
        _field = f"{_budget}_{_kind}" + ("_s" if _kind == "reset" else "")
        FIELD[f"x-ratelimit-{_kind}-{_budget}"] = _field
        FIELD[f"anthropic-ratelimit-{_budget}-{_kind}"] = _field
        if _budget == "tokens":
            FIELD[f"anthropic-ratelimit-input-tokens-{_kind}"] = _field
            FIELD[f"anthropic-ratelimit-output-tokens-{_kind}"] = _field
assert sorted(FIELD) == sorted(ALL_HEADERS)

FIELDS = [
    "retry_after_s",
    "requests_limit",
    "requests_remaining",
    "requests_reset_s",
    "tokens_limit",
    "tokens_remaining",
    "tokens_reset_s",
]


def parse(headers, now=NOW):
    return parse_rate_limit_headers(headers, now=now)


@pytest.fixture
def warnings(caplog):
    """The messages of the warnings logged on the "omnilimit" logger during the test."""
    caplog.set_level(logging.WARNING, logger="omnilimit")

    def messages():
        return [r.getMessage() for r in caplog.records if r.name == "omnilimit" and r.levelno >= logging.WARNING]

    return messages


# --- parse_duration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("0s", 0.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1h2m3.5s", 3723.5),
        ("7.66s", 7.66),
        ("2m59.56s", 179.56),
        ("0.5s", 0.5),
        (".5s", 0.5),
        ("1.s", 1.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("1.234ms", 0.001234),
        ("150us", 150e-6),
        ("150\u00b5s", 150e-6),  # MICRO SIGN, as Go prints it
        ("150\u03bcs", 150e-6),  # GREEK SMALL LETTER MU, which Go also accepts
        ("3ns", 3e-9),
        ("1s500ms", 1.5),
        ("1m1s1ms1us1ns", 61.001001001),
        ("12", 12.0),  # a bare number is seconds
        ("1.5", 1.5),
        ("0", 0.0),
        ("  6m0s\t", 360.0),
    ],
)
def test_parse_duration_reads_go_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds, rel=1e-12, abs=0)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "s",
        "ms",
        "-1s",
        "-1",
        "+1s",
        "1m1m",
        "1s1s",
        "1ms2ms",
        "1us1\u00b5s",  # the same unit spelled twice
        "1s1m",  # out of order
        "1ms1s",
        "inf",
        "nan",
        "infs",
        "1e3s",
        "1e3",
        "1x",
        "1d",  # Go has no days
        "1M",  # nor capital units
        "1S",
        "1 s",
        "1m 2s",
        "1m,2s",
        "1..5s",
        "1.2.3s",
        "9" * 400 + "h",  # a float too large to be finite
        "1h" + "9" * 400 + "m",
        "\u0661s",  # ARABIC-INDIC DIGIT ONE
    ],
)
def test_parse_duration_rejects_everything_else(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@given(
    st.text(max_size=20)
    | st.from_regex(r"[0-9.]{0,6}(h|m|s|ms|us|ns){0,1}([0-9.]{0,6}(h|m|s|ms|us|ns))*", fullmatch=True)
)
def test_parse_duration_is_finite_and_non_negative_or_a_value_error(text):
    try:
        seconds = parse_duration(text)
    except ValueError:
        return
    assert isinstance(seconds, float)
    assert math.isfinite(seconds)
    assert seconds >= 0


# --- OpenAI -------------------------------------------------------------------------------------


def test_openai_headers(warnings):
    info = parse(
        {
            "x-ratelimit-limit-requests": "60",
            "x-ratelimit-limit-tokens": "150000",
            "x-ratelimit-remaining-requests": "59",
            "x-ratelimit-remaining-tokens": "149984",
            "x-ratelimit-reset-requests": "1s",
            "x-ratelimit-reset-tokens": "6m0s",
            "content-type": "application/json",
        }
    )
    assert info == RateLimitInfo(
        requests_limit=60,
        requests_remaining=59,
        requests_reset_s=1.0,
        tokens_limit=150000,
        tokens_remaining=149984,
        tokens_reset_s=360.0,
    )
    assert info.pause_s() is None
    assert warnings() == []


def test_counts_accept_surrounding_whitespace_and_leading_zeros():
    info = parse({"x-ratelimit-remaining-requests": " \t42 ", "x-ratelimit-limit-requests": "0060"})
    assert (info.requests_remaining, info.requests_limit) == (42, 60)
    assert type(info.requests_remaining) is int


def test_counts_are_exact_up_to_the_cores_maximum(warnings):
    assert parse({"x-ratelimit-limit-tokens": str(2**62)}).tokens_limit == 2**62
    assert parse({"x-ratelimit-limit-tokens": str(2**62 - 1)}).tokens_limit == 2**62 - 1  # not through a float
    assert parse({"x-ratelimit-limit-tokens": str(2**62 + 1)}).tokens_limit is None
    assert parse({"x-ratelimit-limit-tokens": "9" * 5000}).tokens_limit is None
    assert len(warnings()) == 2


# --- Anthropic ----------------------------------------------------------------------------------


def test_anthropic_headers_relative_to_now(warnings):
    info = parse(
        {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "49",
            "anthropic-ratelimit-requests-reset": "2024-06-01T12:00:30Z",
            "anthropic-ratelimit-tokens-limit": "40000",
            "anthropic-ratelimit-tokens-remaining": "39000",
            "anthropic-ratelimit-tokens-reset": "2024-06-01T12:01:00Z",
        }
    )
    assert info == RateLimitInfo(
        requests_limit=50,
        requests_remaining=49,
        requests_reset_s=30.0,
        tokens_limit=40000,
        tokens_remaining=39000,
        tokens_reset_s=60.0,
    )
    assert warnings() == []
    # The same headers a second later are a second closer.
    assert parse({"anthropic-ratelimit-requests-reset": "2024-06-01T12:00:30Z"}, now=NOW + 1).requests_reset_s == 29.0


@pytest.mark.parametrize(
    ("stamp", "seconds"),
    [
        ("2024-06-01T12:00:30Z", 30.0),
        ("2024-06-01T12:00:30z", 30.0),
        ("2024-06-01t12:00:30Z", 30.0),
        ("2024-06-01 12:00:30Z", 30.0),  # RFC 3339 section 5.6 allows a space
        ("2024-06-01T12:00:30.250Z", 30.25),
        ("2024-06-01T12:00:30.5+00:00", 30.5),
        ("2024-06-01T14:00:30+02:00", 30.0),
        ("2024-06-01T11:30:30-00:30", 30.0),
        ("2024-06-01T12:00:30-00:00", 30.0),  # "unknown local offset": UTC
        ("2024-06-01T11:59:60Z", 0.0),  # a leap second is 12:00:00
        ("2024-06-01T12:00:00Z", 0.0),
        ("2024-06-01T11:59:00Z", 0.0),  # in the past: clamped
        ("2020-01-01T00:00:00Z", 0.0),
        ("2024-06-02T12:00:00Z", 86400.0),
        (" 2024-06-01T12:00:30Z ", 30.0),
    ],
)
def test_anthropic_reset_is_rfc3339_relative_to_now_and_clamped(stamp, seconds):
    assert parse({"anthropic-ratelimit-requests-reset": stamp}).requests_reset_s == pytest.approx(seconds)


@pytest.mark.parametrize(
    "stamp",
    [
        "2024-06-01T12:00:30",  # no offset
        "2024-06-01",
        "12:00:30Z",
        "2024-06-01T12:00Z",
        "2024-13-01T12:00:30Z",
        "2024-02-30T12:00:30Z",
        "2024-06-01T24:00:30Z",
        "2024-06-01T12:60:30Z",
        "2024-06-01T12:00:61Z",
        "2024-06-01T12:00:30+24:00",
        "2024-06-01T12:00:30+01:60",
        "2024-06-01T12:00:30+0100",
        "0000-06-01T12:00:30Z",
        "2024-06-01T12:00:30.Z",
        "24-06-01T12:00:30Z",
        "1717243230",  # epoch seconds are not RFC 3339
        "30s",
        "Sat, 01 Jun 2024 12:00:30 GMT",
        "",
    ],
)
def test_anthropic_reset_rejects_what_is_not_rfc3339(stamp, warnings):
    assert parse({"anthropic-ratelimit-requests-reset": stamp}).requests_reset_s is None
    assert len(warnings()) == 1


def test_anthropic_input_and_output_tokens_fold_into_the_budget_closest_to_running_out(warnings):
    headers = {
        "anthropic-ratelimit-input-tokens-limit": "40000",
        "anthropic-ratelimit-input-tokens-remaining": "0",
        "anthropic-ratelimit-input-tokens-reset": "2024-06-01T12:00:20Z",
        "anthropic-ratelimit-output-tokens-limit": "8000",
        "anthropic-ratelimit-output-tokens-remaining": "7000",
        "anthropic-ratelimit-output-tokens-reset": "2024-06-01T12:00:50Z",
    }
    info = parse(headers)
    # The smallest remaining with its own reset (not the output budget's later one); the smallest limit.
    assert (info.tokens_remaining, info.tokens_reset_s, info.tokens_limit) == (0, 20.0, 8000)
    assert info.pause_s() == 20.0

    # The combined "tokens" budget takes part too.
    headers |= {
        "anthropic-ratelimit-tokens-limit": "48000",
        "anthropic-ratelimit-tokens-remaining": "0",
        "anthropic-ratelimit-tokens-reset": "2024-06-01T12:00:40Z",
    }
    info = parse(headers)
    # Two budgets share the smallest remaining: the later of their resets.
    assert (info.tokens_remaining, info.tokens_reset_s, info.tokens_limit) == (0, 40.0, 8000)

    headers["anthropic-ratelimit-input-tokens-remaining"] = "100"
    headers["anthropic-ratelimit-tokens-remaining"] = "50"
    info = parse(headers)
    assert (info.tokens_remaining, info.tokens_reset_s) == (50, 40.0)
    assert warnings() == []


def test_folded_tokens_without_a_reset_for_the_smallest_remaining_have_no_reset(warnings):
    info = parse(
        {
            "anthropic-ratelimit-input-tokens-remaining": "0",
            "anthropic-ratelimit-input-tokens-reset": "garbage",
            "anthropic-ratelimit-output-tokens-remaining": "5",
            "anthropic-ratelimit-output-tokens-reset": "2024-06-01T12:00:50Z",
        }
    )
    # The output budget's reset says nothing about when the input budget refills.
    assert (info.tokens_remaining, info.tokens_reset_s) == (0, None)
    assert info.pause_s() is None
    assert len(warnings()) == 1


def test_folded_tokens_without_any_remaining_take_the_latest_reset():
    info = parse(
        {
            "anthropic-ratelimit-input-tokens-reset": "2024-06-01T12:00:20Z",
            "anthropic-ratelimit-output-tokens-reset": "2024-06-01T12:00:50Z",
        }
    )
    assert (info.tokens_remaining, info.tokens_reset_s) == (None, 50.0)


def test_openai_and_anthropic_together_take_the_more_restrictive_of_each_field():
    info = parse(
        {
            "x-ratelimit-limit-requests": "100",
            "x-ratelimit-remaining-requests": "3",
            "x-ratelimit-reset-requests": "10s",
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "7",
            "anthropic-ratelimit-requests-reset": "2024-06-01T12:00:20Z",
            "x-ratelimit-remaining-tokens": "500",
            "x-ratelimit-reset-tokens": "1m0s",
            "anthropic-ratelimit-tokens-remaining": "400",
            "anthropic-ratelimit-tokens-reset": "2024-06-01T12:00:05Z",
        }
    )
    assert (info.requests_limit, info.requests_remaining, info.requests_reset_s) == (50, 3, 20.0)
    assert (info.tokens_limit, info.tokens_remaining, info.tokens_reset_s) == (None, 400, 60.0)


# --- Retry-After --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("5", 5.0),
        ("0", 0.0),
        (" 120 ", 120.0),
        ("1.5", 1.5),
        ("Sat, 01 Jun 2024 12:00:30 GMT", 30.0),  # IMF-fixdate
        ("Saturday, 01-Jun-24 12:00:30 GMT", 30.0),  # obsolete RFC 850
        ("Sat Jun  1 12:00:30 2024", 30.0),  # obsolete asctime, no zone: GMT
        ("Sat, 01 Jun 2024 12:00:30 -0000", 30.0),
        ("Sat, 01 Jun 2024 11:00:00 GMT", 0.0),  # in the past: clamped
        ("Sun, 06 Nov 1994 08:49:37 GMT", 0.0),
    ],
)
def test_retry_after_is_seconds_or_an_http_date_relative_to_now(value, seconds, warnings):
    info = parse({"Retry-After": value})
    assert info.retry_after_s == pytest.approx(seconds)
    assert info.pause_s() == pytest.approx(seconds)
    assert warnings() == []


def test_retry_after_date_uses_the_clock_when_now_is_not_given(monkeypatch):
    monkeypatch.setattr(headers.time, "time", lambda: NOW + 10)
    assert parse_rate_limit_headers({"retry-after": "Sat, 01 Jun 2024 12:00:30 GMT"}).retry_after_s == 20.0
    assert parse_rate_limit_headers({"anthropic-ratelimit-tokens-reset": "2024-06-01T12:00:30Z"}).tokens_reset_s == 20.0


def test_retry_after_ms_is_milliseconds_and_preferred(warnings):
    assert parse({"retry-after-ms": "1500"}).retry_after_s == 1.5
    assert parse({"retry-after-ms": "20.5"}).retry_after_s == pytest.approx(0.0205)
    assert parse({"retry-after": "2", "retry-after-ms": "1500"}).retry_after_s == 1.5
    assert parse([("retry-after-ms", "1500"), ("Retry-After", "2")]).retry_after_s == 1.5
    assert parse({"retry-after": "2", "retry-after-ms": "0"}).retry_after_s == 0.0  # 0 is a value, not absent
    assert warnings() == []


def test_a_bad_retry_after_ms_falls_back_to_retry_after_with_one_warning(warnings):
    assert parse({"retry-after": "2", "retry-after-ms": "soon"}).retry_after_s == 2.0
    assert warnings() == [
        "Ignoring rate-limit header 'retry-after-ms': bad value 'soon' (expected a non-negative number of milliseconds)"
    ]


def test_a_bad_retry_after_is_warned_even_when_retry_after_ms_wins(warnings):
    assert parse({"retry-after": "-2", "retry-after-ms": "300"}).retry_after_s == 0.3
    assert len(warnings()) == 1
    assert "'retry-after'" in warnings()[0]
    assert "'-2'" in warnings()[0]


# --- pause_s ------------------------------------------------------------------------------------


def test_pause_is_retry_after_when_present_even_if_a_budget_resets_later():
    info = RateLimitInfo(retry_after_s=2.0, requests_remaining=0, requests_reset_s=30.0)
    assert info.pause_s() == 2.0
    assert RateLimitInfo(retry_after_s=0.0, tokens_remaining=0, tokens_reset_s=30.0).pause_s() == 0.0


def test_pause_is_the_exhausted_budgets_reset():
    assert (
        RateLimitInfo(requests_remaining=0, requests_reset_s=7.0, tokens_remaining=5, tokens_reset_s=60.0).pause_s()
        == 7.0
    )
    assert (
        RateLimitInfo(requests_remaining=3, requests_reset_s=7.0, tokens_remaining=0, tokens_reset_s=60.0).pause_s()
        == 60.0
    )


def test_pause_is_the_longest_of_two_exhausted_budgets():
    info = RateLimitInfo(requests_remaining=0, requests_reset_s=7.0, tokens_remaining=0, tokens_reset_s=3.0)
    assert info.pause_s() == 7.0
    info = RateLimitInfo(requests_remaining=0, requests_reset_s=1.0, tokens_remaining=0, tokens_reset_s=3.0)
    assert info.pause_s() == 3.0


def test_no_pause_when_nothing_is_exhausted_or_the_headers_do_not_say():
    assert RateLimitInfo().pause_s() is None
    assert (
        RateLimitInfo(requests_remaining=1, requests_reset_s=7.0, tokens_remaining=9, tokens_reset_s=60.0).pause_s()
        is None
    )
    assert RateLimitInfo(requests_reset_s=7.0, tokens_reset_s=60.0).pause_s() is None  # remaining unknown
    assert RateLimitInfo(requests_remaining=0, tokens_remaining=0).pause_s() is None  # reset unknown


def test_pause_from_real_headers():
    info = parse(
        {
            "x-ratelimit-remaining-tokens": "0",
            "x-ratelimit-reset-tokens": "1m30s",
            "x-ratelimit-remaining-requests": "10",
        }
    )
    assert info.pause_s() == 90.0


# --- Shapes of the headers argument -------------------------------------------------------------


def test_names_are_case_insensitive(warnings):
    info = parse(
        {
            "X-RateLimit-Remaining-Requests": "7",
            "ANTHROPIC-RATELIMIT-TOKENS-REMAINING": "8",
            "RETRY-AFTER": "9",
            "x-ratelimit-reset-REQUESTS": "2s",
        }
    )
    assert (info.requests_remaining, info.tokens_remaining, info.retry_after_s, info.requests_reset_s) == (
        7,
        8,
        9.0,
        2.0,
    )
    assert warnings() == []


def test_a_list_of_pairs_and_its_repeats(warnings):
    pairs = [("Retry-After", "3"), ("x-ratelimit-remaining-requests", "4"), ("retry-after", "5"), ("Set-Cookie", "a=b")]
    info = parse(pairs)
    assert (info.retry_after_s, info.requests_remaining) == (5.0, 4)  # a repeated name: the last value
    assert parse(iter(pairs)).retry_after_s == 5.0  # any iterable of pairs, once through
    assert parse([["retry-after", "6"]]).retry_after_s == 6.0
    assert warnings() == []


def test_nothing_said_is_all_none(warnings):
    assert parse(None) == RateLimitInfo()
    assert parse({}) == RateLimitInfo()
    assert parse([]) == RateLimitInfo()
    assert parse({"content-type": "text/plain", "x-request-id": "abc"}) == RateLimitInfo()
    assert parse_rate_limit_headers(None) == RateLimitInfo()
    assert all(getattr(RateLimitInfo(), field) is None for field in FIELDS)
    assert warnings() == []


def test_httpx_headers():
    httpx = need("httpx")
    headers = httpx.Headers(
        {"X-RateLimit-Remaining-Tokens": "0", "X-RateLimit-Reset-Tokens": "20ms", "Retry-After-Ms": "250"}
    )
    info = parse(headers)
    assert (info.tokens_remaining, info.tokens_reset_s, info.retry_after_s) == (0, 0.02, 0.25)
    response = httpx.Response(429, headers=[("retry-after", "Sat, 01 Jun 2024 12:00:30 GMT")])
    assert parse(response.headers).retry_after_s == 30.0
    assert parse(response.headers.raw).retry_after_s == 30.0  # (bytes, bytes) pairs


def test_requests_case_insensitive_dict():
    structures = need("requests.structures")
    headers = structures.CaseInsensitiveDict({"Anthropic-RateLimit-Requests-Remaining": "0", "retry-after": "1"})
    info = parse(headers)
    assert (info.requests_remaining, info.retry_after_s) == (0, 1.0)


def test_email_message_headers():
    import email

    message = email.message_from_string("Retry-After: 4\nX-RateLimit-Remaining-Requests: 2\n\n")
    info = parse(message)
    assert (info.retry_after_s, info.requests_remaining) == (4.0, 2)


def test_bytes_names_and_values():
    info = parse([(b"Retry-After", b"3"), (b"x-ratelimit-reset-tokens", bytearray(b"1s"))])
    assert (info.retry_after_s, info.tokens_reset_s) == (3.0, 1.0)


@pytest.mark.parametrize(
    "headers", [42, "retry-after: 5", b"retry-after", [("retry-after",)], [("a", "b", "c")], ["ab"]]
)
def test_a_headers_argument_of_the_wrong_shape_is_a_type_error(headers):
    with pytest.raises(TypeError):
        parse(headers)


@pytest.mark.parametrize("now", [math.nan, math.inf, -math.inf])
def test_now_must_be_finite(now):
    with pytest.raises(ValueError, match="now"):
        parse({"retry-after": "1"}, now=now)


# --- Garbage ------------------------------------------------------------------------------------

BAD_COUNTS = [
    "abc",
    "-1",
    "+1",
    "1e999",
    "1e3",
    "nan",
    "NaN",
    "inf",
    "Infinity",
    "true",
    "True",
    "1.5",
    "1.0",
    "0x10",
    "1_000",
    "1,000",
    "1 000",
    "\u0661\u0662",  # ARABIC-INDIC digits, which int() would take
    "\uff11",  # FULLWIDTH DIGIT ONE
    "",
    "   ",
    "5, 5",  # a repeated header joined by httpx
    "\x00",
]
BAD_SECONDS = ["abc", "-1", "-0.5", "1e999", "1e3", "nan", "inf", "Infinity", "", " ", "1,5", "5s", "9" * 400, "true"]
BAD_DURATIONS = ["abc", "-1s", "1m1m", "1s1m", "inf", "nan", "", "1d", "1e999s", "9" * 400, "6m 0s", "true"]
BAD_TIMESTAMPS = ["abc", "2024-06-01T12:00:30", "2024-13-01T00:00:00Z", "", "-1", "inf", "nan", "true"]
BAD_VALUES = (
    [(name, value) for name in OPENAI_COUNTS + ANTHROPIC_COUNTS for value in BAD_COUNTS]
    + [(name, value) for name in ("retry-after", "retry-after-ms") for value in BAD_SECONDS]
    + [
        ("retry-after", value)
        for value in ("Sat, 01 Jun", "Mon, 99 Foo 2024 12:00:00 GMT", "Sat, 01 Jun 2024 25:00:00 GMT")
    ]
    + [(name, value) for name in OPENAI_RESETS for value in BAD_DURATIONS]
    + [(name, value) for name in ANTHROPIC_RESETS for value in BAD_TIMESTAMPS]
)


@pytest.mark.parametrize(("name", "value"), BAD_VALUES)
def test_a_bad_value_is_ignored_with_one_warning_naming_header_and_value(name, value, warnings):
    info = parse({name: value})
    assert getattr(info, FIELD[name]) is None
    assert info == RateLimitInfo()
    assert warnings() == [f"Ignoring rate-limit header {name!r}: bad value {value!r} (expected {expected_for(name)})"]


def expected_for(name):
    if name == "retry-after":
        return "non-negative delay-seconds or an HTTP-date"
    if name == "retry-after-ms":
        return "a non-negative number of milliseconds"
    if name in OPENAI_RESETS:
        return "a duration such as '6m0s' or '20ms'"
    if name in ANTHROPIC_RESETS:
        return "an RFC 3339 timestamp such as '2024-06-01T12:00:30Z'"
    return "a non-negative integer"


@pytest.mark.parametrize("value", [True, False, 5, 1.5, None, object()])
def test_a_value_that_is_not_text_is_bad(value, warnings):
    assert parse({"x-ratelimit-remaining-requests": value}).requests_remaining is None
    assert len(warnings()) == 1
    assert "'x-ratelimit-remaining-requests'" in warnings()[0]


def test_every_bad_header_warns_once_and_the_good_ones_still_count(warnings):
    bad = {name: "garbage" for name in ALL_HEADERS if name != "x-ratelimit-remaining-requests"}
    headers = [*bad.items(), ("X-RateLimit-Remaining-Requests", "3"), ("unrelated", "garbage")]
    info = parse(headers)
    assert info == RateLimitInfo(requests_remaining=3)
    logged = warnings()
    assert len(logged) == len(bad)
    for name in bad:
        assert sum(f"header {name!r}:" in message for message in logged) == 1, name


def test_the_warning_names_the_header_as_sent(warnings):
    parse({"X-RateLimit-Limit-Tokens": "lots"})
    assert warnings() == [
        "Ignoring rate-limit header 'X-RateLimit-Limit-Tokens': bad value 'lots' (expected a non-negative integer)"
    ]


def test_the_warning_is_on_the_omnilimit_logger(caplog):
    caplog.set_level(logging.WARNING, logger="omnilimit")
    parse({"retry-after": "later"})
    assert [(r.name, r.levelno) for r in caplog.records] == [("omnilimit", logging.WARNING)]
    assert caplog.records[0].args == ("retry-after", "later", "non-negative delay-seconds or an HTTP-date")


def header_values():
    """Arbitrary text, and text shaped like the real values so that the fuzz reaches past the first check."""
    return st.one_of(
        st.text(max_size=40),
        st.from_regex(r"\s?[-+]?[0-9]{0,25}(\.[0-9]{0,5})?([eE][0-9]{1,3})?(h|m|s|ms|us|ns)?\s?", fullmatch=True),
        st.from_regex(
            r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})?",
            fullmatch=True,
        ),
        st.datetimes(timezones=st.just(timezone.utc)).map(lambda d: d.strftime("%a, %d %b %Y %H:%M:%S GMT")),
        st.datetimes().map(lambda d: d.isoformat() + "Z"),
        st.sampled_from(
            ["", " ", "0", "1", "-1", "nan", "inf", "1e999", "6m0s", "20ms", "Sat, 01 Jun 2024 12:00:30 GMT"]
        ),
    )


def check_info(info):
    for field in FIELDS:
        value = getattr(info, field)
        if value is None:
            continue
        if field.endswith("_s"):
            assert isinstance(value, float), (field, value)
            assert math.isfinite(value), (field, value)
        else:
            assert type(value) is int, (field, value)
        assert value >= 0, (field, value)
    pause = info.pause_s()
    assert pause is None or (math.isfinite(pause) and pause >= 0)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(ALL_HEADERS),
    value=header_values(),
    upper=st.booleans(),
    now=st.floats(min_value=0, max_value=4e9),
)
def test_fuzz_one_header_sets_its_field_or_warns_once(caplog, name, value, upper, now):
    caplog.set_level(logging.WARNING, logger="omnilimit")
    caplog.clear()
    info = parse({name.upper() if upper else name: value}, now=now)
    check_info(info)
    warned = [r for r in caplog.records if r.name == "omnilimit"]
    if getattr(info, FIELD[name]) is None:
        assert len(warned) == 1
        assert repr(value) in warned[0].getMessage()
    else:
        assert warned == []
    assert all(getattr(info, field) is None for field in FIELDS if field != FIELD[name])


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    headers=st.dictionaries(
        st.sampled_from(ALL_HEADERS) | st.text(max_size=10), header_values(), max_size=len(ALL_HEADERS)
    )
)
def test_fuzz_all_headers_never_raise_and_warn_at_most_once_each(caplog, headers):
    caplog.set_level(logging.WARNING, logger="omnilimit")
    caplog.clear()
    info = parse(headers)
    check_info(info)
    relevant = {name.strip().lower() for name in headers} & set(ALL_HEADERS)
    warned = [r for r in caplog.records if r.name == "omnilimit"]
    assert len(warned) <= len(relevant)
    assert {r.args[0] for r in warned} <= set(headers)
