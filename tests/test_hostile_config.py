"""Configuration files written to hurt: bombs, deep nesting, bytes, huge numbers, odd names, tags.

Whatever a file holds, loading it answers with a manager or a ConfigError (OSError only when the
file cannot be read), within a second and a few MB, and ``omnilimit check`` exits 2 with one
readable line; nothing it echoes forges a line, fails to encode or shows a password.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import textwrap
import time
from fractions import Fraction

import pytest
from helpers import need
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omnilimit import ConcurrencyLimiter, ConfigError, ProviderRateLimitManager, RateLimiter

ALIAS_BOMB = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
providers: {user: {name: openai, max_concurrent_calls: *h}}
"""

# A small bomb (under the alias bound) that still expands to millions of items if anything
# walks it: the error message must not.
SMALL_BOMB = """\
a: &a [x, x, x, x, x, x, x, x, x, x]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
providers: {user: {name: openai, rate_limit_rpm: *f}}
"""


def _check(path, *extra):
    """Runs ``omnilimit check`` in a child whose memory is capped at 512 MB."""

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (512 << 20, 512 << 20))

    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "omnilimit", "check", str(path), *extra],
        capture_output=True,
        timeout=60,
        preexec_fn=cap,
    )
    return done, time.monotonic() - started


@pytest.mark.parametrize("text", [ALIAS_BOMB, SMALL_BOMB], ids=["nine-level bomb", "under the alias bound"])
def test_an_alias_bomb_is_a_config_error_within_a_second(tmp_path, text):
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    started = time.monotonic()
    with pytest.raises(ConfigError) as raised:
        ProviderRateLimitManager.from_yaml(path)
    assert time.monotonic() - started < 1.0
    assert len(str(raised.value)) < 500
    done, took = _check(path)
    assert done.returncode == 2, done.stderr
    assert len(done.stderr) < 1000 and done.stdout == b""
    assert b"Traceback" not in done.stderr
    print(f"[bomb] check: {took:.2f} s, {len(done.stderr)} bytes: {done.stderr.decode()!r}")


def test_deep_nesting_is_a_config_error_not_a_recursion_error(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("providers: " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(ConfigError, match="nested more than"):
        ProviderRateLimitManager.from_yaml(path)
    path.write_text("providers:\n" + "".join(" " * i + f"k{i}:\n" for i in range(1, 200)))
    with pytest.raises(ConfigError, match="nested more than"):
        ProviderRateLimitManager.from_yaml(path)


def test_a_huge_file_is_refused_unread(tmp_path):
    path = tmp_path / "huge.yaml"
    with path.open("w") as f:
        f.write("providers: {user: {name: openai}}\n")
        f.write("# " + "x" * (2 << 20) + "\n")
    with pytest.raises(ConfigError, match="larger than"):
        ProviderRateLimitManager.from_yaml(path)


@pytest.mark.parametrize(
    "value",
    [
        "!!float abc",
        "!!float",
        "!!int 0x",
        "1" * 5000,  # an integer of more than 4,300 digits
        "!!timestamp 2024-99-99",
        "!!binary '%%%'",
        "!!python/object:os.system ls",
        "!!set {a, b}",
        "1e999999",
        "-" + "9" * 400,
    ],
)
def test_odd_values_and_tags_are_config_errors(tmp_path, value):
    path = tmp_path / "odd.yaml"
    path.write_text(f"providers:\n  user:\n    name: openai\n    rate_limit_rpm: {value}\n")
    with pytest.raises(ConfigError) as raised:
        ProviderRateLimitManager.from_yaml(path)
    assert len(str(raised.value)) < 500


@pytest.mark.parametrize("data", [b"\xff\xfe\x00providers", b"providers: {user: {name: \xc3\x28}}"])
def test_bytes_that_are_not_utf8_are_a_config_error(tmp_path, data):
    path = tmp_path / "bytes.yaml"
    path.write_bytes(data)
    with pytest.raises(ConfigError, match="not UTF-8"):
        ProviderRateLimitManager.from_yaml(path)
    done, _ = _check(path)
    assert done.returncode == 2 and b"not UTF-8" in done.stderr


def test_merge_keys_work_as_in_yaml_safe_load(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text(
        textwrap.dedent(
            """
            defaults: &defaults
              name: openai
              model: gpt-4o-mini
              rate_limit_rpm: 300
            providers:
              user_followup:
                <<: *defaults
                rate_limit_rpm: 120        # overrides the merged value: not a duplicate
              assistant_response:
                <<: *defaults
            """
        )
    )
    manager = ProviderRateLimitManager.from_yaml(path)
    assert manager.limiter_for("user_followup").rpm == 120
    assert manager.limiter_for("assistant_response").rpm == 300
    path.write_text("providers:\n  user:\n    name: openai\n    name: anthropic\n")
    with pytest.raises(ConfigError, match="duplicate key 'name'"):
        ProviderRateLimitManager.from_yaml(path)


def test_names_are_escaped_where_they_are_echoed(tmp_path):
    path = tmp_path / "names.yaml"
    path.write_text(
        'providers:\n  "forged\\nwarning: all is well \\ud800":\n    name: openai\n    "api_key\\nwarning: x": sk\n'
        "    max_concurrent_calls: 4\n"
    )
    done, _ = _check(path)
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode("utf-8")
    assert "forged\\nwarning: all is well \\ud800" in out
    assert not any(
        line.startswith("warning: all is well") or line.startswith("warning: x") for line in out.splitlines()
    )
    done, _ = _check(path, "--json", "-")
    assert done.returncode == 0, done.stderr
    path.write_text('providers:\n  "bad\\nrole":\n    name: openai\n    max_concurrent_calls: -5\n')
    done, _ = _check(path)
    assert done.returncode == 2 and done.stderr.count(b"\n") == 1, done.stderr
    assert b"bad\\nrole" in done.stderr


@pytest.mark.parametrize(
    "make",
    [
        lambda: RateLimiter(2**2000),
        lambda: RateLimiter(60, tokens_per_minute=2**2000),
        lambda: RateLimiter(60).set_rate(2**2000),
        lambda: ConcurrencyLimiter(Fraction(10**400, 1)),
        lambda: RateLimiter(60, burst_size=Fraction(10**400, 1)),
    ],
)
def test_numbers_too_large_for_a_float_are_value_errors_naming_the_argument(make):
    with pytest.raises(ValueError, match=r"requests_per_minute|tokens_per_minute|max_concurrent|burst_size") as raised:
        make()
    assert not isinstance(raised.value, OverflowError) and len(str(raised.value)) < 300


def test_numpy_bools_are_refused_as_timeouts_as_bools_are():
    numpy = need("numpy")
    for limiter in (RateLimiter(60), ConcurrencyLimiter(1)):
        with pytest.raises(ValueError, match="timeout"):
            limiter.acquire(timeout=numpy.True_)
    assert RateLimiter(60).acquire(timeout=numpy.float64(0.1))  # numpy numbers are fine


# ---- Passwords never shown -----------------------------------------------------------------------

SECRET = "hunter2"


@pytest.mark.parametrize(
    "url",
    [
        f"redis://:{SECRET}@localhost:notaport/0",
        f"redis://:{SECRET}@localhost:6379/abc",
        f"redis://:{SECRET}@/0",
        f"redis+cluster://:{SECRET}@localhost:6379/3",
        f"redis://localhost:6379/abc?password={SECRET}",
        f"redis://user:{SECRET}@localhost:6379/0?password={SECRET}",
    ],
)
def test_config_errors_never_show_a_redis_password(tmp_path, url):
    config = {"providers": {"user": {"name": "openai", "rate_limit_rpm": 60, "rate_limit_backend": url}}}
    try:
        manager = ProviderRateLimitManager.from_config(config)
    except ConfigError as error:
        assert SECRET not in str(error)
    else:
        assert SECRET not in repr(manager.config)
    path = tmp_path / "secret.yaml"
    path.write_text(f"providers:\n  user:\n    name: openai\n    rate_limit_rpm: 60\n    rate_limit_backend: '{url}'\n")
    done, _ = _check(path)
    assert SECRET.encode() not in done.stdout + done.stderr


def test_valid_configurations_with_passwords_never_show_them(tmp_path):
    url = f"redis://:{SECRET}@localhost:6379/0"
    config = {
        "providers": {
            "a": {"name": "openai", "rate_limit_rpm": 60, "rate_limit_backend": url, "rate_limit_shared_key": "k"},
            "b": {
                "name": "openai",
                "rate_limit_rpm": 60,
                "rate_limit_backend": f"redis://localhost:6379/0?password={SECRET}",
                "rate_limit_shared_key": "k",
            },
        }
    }
    with pytest.raises(ConfigError) as raised:  # roles sharing a key must agree on the backend
        ProviderRateLimitManager.from_config(config)
    assert SECRET not in str(raised.value) and "***" in str(raised.value)
    del config["providers"]["b"]
    manager = ProviderRateLimitManager.from_config(config)
    assert SECRET not in repr(manager.config)
    path = tmp_path / "ok.yaml"
    path.write_text(f"providers:\n  a:\n    name: openai\n    rate_limit_rpm: 60\n    rate_limit_backend: '{url}'\n")
    done, _ = _check(path)
    assert done.returncode == 0 and SECRET.encode() not in done.stdout + done.stderr
    done, _ = _check(path, "--json", "-")
    assert SECRET.encode() not in done.stdout


# ---- The loader, fuzzed -------------------------------------------------------------------------

yaml_pieces = st.sampled_from(
    [
        "providers:",
        "\n",
        "  ",
        "- ",
        ": ",
        "&a ",
        "*a ",
        "<<: *a",
        "!!float ",
        "!!int ",
        "!!str ",
        "!!binary ",
        "!!python/name:os.system",
        "[",
        "]",
        "{",
        "}",
        ",",
        "'",
        '"',
        "\\",
        "\\ud800",
        "%YAML 1.1\n",
        "---\n",
        "...\n",
        "? ",
        "|\n",
        ">\n",
        "#",
        "1" * 5000,
        "9e999",
        "-0x",
        "0o9",
        ".inf",
        ".nan",
        "null",
        "~",
        "true",
        "user",
        "name: openai",
        "max_concurrent_calls: ",
        "rate_limit_rpm: ",
        "\t",
        "\x00",
        "\x85",
        "\ufeff",
    ]
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(yaml_pieces | st.text(max_size=6), max_size=40).map("".join) | st.binary(max_size=300))
def test_from_yaml_answers_a_manager_or_a_config_error_for_anything(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("fuzz") / "config.yaml"
    if isinstance(content, str):
        path.write_bytes(content.encode("utf-8", "surrogatepass"))
    else:
        path.write_bytes(content)
    started = time.monotonic()
    try:
        ProviderRateLimitManager.from_yaml(path)
    except ConfigError as error:
        assert len(str(error)) < 1000
        str(error).encode("utf-8")  # printable: no lone surrogate left in it
    assert time.monotonic() - started < 1.0


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the peak RSS from /proc")
def test_the_nine_level_bomb_stays_within_a_few_mb(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(ALIAS_BOMB)
    script = textwrap.dedent(
        f"""
        import resource
        from omnilimit import ConfigError, ProviderRateLimitManager
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            ProviderRateLimitManager.from_yaml({str(path)!r})
        except ConfigError:
            pass
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
        """
    )
    grew_kb = int(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout)
    assert grew_kb < 10_000  # under 10 MB more than the import
