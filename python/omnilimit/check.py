"""``omnilimit check``: what a configuration file makes, before anything runs.

    omnilimit check CONFIG.yaml [--json FILE]

The file is read and validated as ``ProviderRateLimitManager.from_yaml`` reads it (the same rules,
the same ``ConfigError``), then described: one row per limiter it makes (the key, the kind, the
limit, the burst, the backend and the roles sharing it), the keys of each role that the limiter
ignores and why, ``generation.parallel_workers``, and the guide's best-practice warnings, one per
line starting with ``warning: ``. ``--json FILE`` writes the same data as JSON (``--json -``: to
stdout, instead of the table).

Exit status: 0 for a valid file, warnings or not; 2 for a file that is refused or cannot be read,
with the reason on stderr. Nothing is created: no limiter, no shared-memory segment, no Redis
connection. The values of keys that are not limiter settings (``api_key``...) are never printed,
only their names.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from collections.abc import Mapping
from typing import Any, TextIO

from omnilimit._shown import printable, redact
from omnilimit.config import (
    COMBINED,
    CONCURRENCY,
    LIMITER_KEYS,
    RATE,
    TABLE,
    Config,
    LimiterPlan,
    RoleSettings,
    file_error_message,
    limit_phrases,
    limit_text,
    number_text,
    parse_config,
    read_yaml,
)
from omnilimit.errors import ConfigError
from omnilimit.spec import is_redis

WIDTH = 100  # the table's target width; a long limiter key or URL can make it wider (neither is cut)
LIMIT_WIDTH = 26  # the limit column wraps beyond this
MIN_ROLES_WIDTH = 16  # the roles column wraps to what is left of WIDTH, but never narrower than this

HEADINGS = ("key", "kind", "limit", "burst", "backend", "roles")
RIGHT = {3}  # the columns aligned right: burst, a number

NOT_A_LIMITER_SETTING = "not a limiter setting (the provider client's)"
PRECEDENCE = "max_concurrent_calls takes precedence"
NAMING_KEYS = ("name", "model")  # used by the limiter (its key, the auto-detected RPM) but not LIMITER_KEYS


def check_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Reads and validates a configuration file and describes it (see ``describe``). Raises
    ConfigError for a file omnilimit refuses, OSError for one it cannot read and
    UnicodeDecodeError for one that is not UTF-8 text."""
    source = os.fspath(path)
    document = read_yaml(source)
    config = parse_config(document, source)
    return describe(config, document)


def describe(config: Config, document: Mapping[str, Any]) -> dict[str, Any]:
    """The effective limiters of a validated configuration, JSON-ready.

    ``document`` is the parsed YAML ``config`` was made from; it supplies the keys the limiters
    ignore (the names only). Returns ``{"source", "limiters", "parallel_workers", "warnings"}``;
    each limiter is ``{"key", "kind", "limit", "max_concurrent", "rpm", "rpm_auto_detected",
    "tpm", "burst", "token_burst", "backend", "backend_options", "roles", "ignored", "text"}``: ``limit`` is the
    concurrency cap of a concurrency or combined limiter and the RPM of a rate limiter,
    ``rpm_auto_detected`` the provider and model whose default RPM it is (None: set), ``burst``
    the rate limiter's (None for a concurrency limiter), ``token_burst`` its token burst (None
    without a token budget), ``ignored`` a list of ``{"role", "key",
    "reason"}`` and ``text`` the limit as the table shows it."""
    providers = document.get("providers")
    raw: Mapping[Any, Any] = providers if isinstance(providers, Mapping) else {}
    limiters = [_limiter(plan, raw) for plan in config.limiters.values()]
    return {
        "source": config.source,
        "limiters": limiters,
        "parallel_workers": config.parallel_workers,
        "warnings": list(config.warnings),
    }


def _limiter(plan: LimiterPlan, providers: Mapping[Any, Any]) -> dict[str, Any]:
    max_concurrent = plan.limit if plan.kind in (CONCURRENCY, COMBINED) else None
    rpm = plan.limit if plan.kind == RATE else plan.rpm
    auto = _auto_detected(plan, rpm)
    backend = _backend(plan.backend)
    ignored: list[dict[str, str]] = []
    for settings in plan.roles:
        written = providers.get(settings.role)  # None for a role without settings
        ignored += ignored_keys(settings, written if isinstance(written, Mapping) else {}, plan)
    return {
        "key": plan.key,
        "kind": plan.kind,
        "limit": plan.limit,
        "max_concurrent": max_concurrent,
        "rpm": rpm,
        "rpm_auto_detected": auto,
        "tpm": plan.tpm,
        "burst": plan.burst,
        "token_burst": plan.token_burst,
        "backend": backend,
        "backend_options": dict(plan.backend_options),
        "roles": [str(settings.role) for settings in plan.roles],
        "ignored": ignored,
        "text": limit_text(plan.kind, plan.limit, plan.rpm, plan.tpm, auto=auto, words=TABLE),
    }


def _auto_detected(plan: LimiterPlan, rpm: int | float | None) -> str | None:
    """``provider[ model]`` when the limiter's RPM is the auto-detected one (no role that decides
    it sets rate_limit_rpm to that value), else None."""
    if rpm is None:
        return None
    deciding = [s for s in plan.roles if s.kind == (COMBINED if plan.kind == COMBINED else RATE)]
    chosen = [s for s in deciding if s.rpm == rpm]
    if not chosen or any(s.auto_detected is None for s in chosen):
        return None
    return chosen[0].auto_detected


def _backend(backend: str | None) -> str:
    if backend is None:
        return "memory"
    return redact(backend) if is_redis(backend) else backend


def ignored_keys(settings: RoleSettings, mapping: Mapping[Any, Any], plan: LimiterPlan) -> list[dict[str, str]]:
    """The keys of one role's ``mapping`` (its provider settings, as written) that its limiter
    ``plan`` does not use, each ``{"role", "key", "reason"}``, in the file's order: an RPM or
    token budget that ``max_concurrent_calls`` overrides (in the role or in the shared limiter),
    Redis options a rate limiter has no use for, and every key that is not a limiter setting
    (the provider client's, e.g. ``api_key``: only its name is reported)."""
    role = str(settings.role)
    out: list[dict[str, str]] = []
    for name in mapping:
        key = str(name)
        if key in NAMING_KEYS:
            continue
        if key not in LIMITER_KEYS:
            out.append({"role": role, "key": key, "reason": NOT_A_LIMITER_SETTING})
            continue
        reason = _why_ignored(key, settings, plan)
        if reason is not None:
            out.append({"role": role, "key": key, "reason": reason})
    return out


def _why_ignored(key: str, settings: RoleSettings, plan: LimiterPlan) -> str | None:
    """Why the limiter setting ``key`` of a role does not reach its limiter (None: it does)."""
    if key in settings.ignored:
        return PRECEDENCE
    given = {
        "rate_limit_rpm": settings.rate_limit_rpm,
        "rate_limit_tpm": settings.rate_limit_tpm,
        "rate_limit_burst": settings.burst,
        "rate_limit_token_burst": settings.token_burst,
    }
    if given.get(key) is not None and settings.kind == RATE and plan.kind != RATE:
        # _plan: a shared concurrency limiter has no rate; a combined one takes its rate from the combined roles
        return f"the shared limiter '{plan.key}' is a {plan.kind} limiter, set by the roles with max_concurrent_calls"
    if key == "rate_limit_mode" and settings.mode == COMBINED and settings.max_concurrent_calls is None:
        return "combined needs max_concurrent_calls: this role's limiter is a rate limiter"
    if key == "rate_limit_lease_seconds" and settings.lease_seconds is not None and plan.kind == RATE:
        return "leases are for concurrency limiters: this is a rate limiter"
    if key == "rate_limit_coordination" and settings.coordination is not None and plan.kind == CONCURRENCY:
        return "coordination is how a rate limiter decides: this is a concurrency limiter"
    return None


# --- printing ------------------------------------------------------------------------------------


def print_report(data: dict[str, Any], out: TextIO | None = None) -> None:
    """Prints ``describe``'s data: a summary line, the table of limiters, the ignored keys, the
    parallel workers and the warnings."""
    out = out or sys.stdout
    data = _printable(data)  # names from the file, escaped: a newline in a key cannot forge a line
    limiters = data["limiters"]
    roles = sum(len(limiter["roles"]) for limiter in limiters)
    print(
        f"{data['source']}: {_count(len(limiters), 'limiter')} for {_count(roles, 'role')}\n",
        file=out,
    )
    _print_table(limiters, out)
    ignored = [entry for limiter in limiters for entry in limiter["ignored"]]
    print("\nignored keys:" + ("" if ignored else " none"), file=out)
    for line in _ignored_lines(ignored):
        print(line, file=out)
    print("", file=out)
    if data["parallel_workers"] is not None:
        print(f"generation.parallel_workers: {data['parallel_workers']}", file=out)
    for warning in data["warnings"]:
        print(f"warning: {warning}", file=out)
    if not data["warnings"]:
        print("no warnings", file=out)


def _printable(value: Any) -> Any:
    """``value`` (describe()'s data) with every string made safe for one line of a terminal."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {key: _printable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_printable(item) for item in value]
    return value


def _json_text(data: dict[str, Any]) -> str:
    """The data as JSON text; names that UTF-8 cannot carry (a lone surrogate) as ``\\u`` escapes."""
    text = json.dumps(data, indent=2, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(data, indent=2)
    return text + "\n"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _print_table(limiters: list[dict[str, Any]], out: TextIO) -> None:
    """One row per limiter; the limit, backend and roles cells take several lines when long."""
    rows: list[list[list[str]]] = []
    for limiter in limiters:
        limit = _limit_cell(limiter)
        backend = [limiter["backend"], *(f"{k}={_value(v)}" for k, v in limiter["backend_options"].items())]
        burst = ["-" if limiter["burst"] is None else str(limiter["burst"])]
        if limiter["token_burst"] is not None:
            burst.append(f"{limiter['token_burst']} tokens")
        rows.append([[limiter["key"]], [limiter["kind"]], limit, burst, backend, [", ".join(limiter["roles"])]])
    widths = [max(len(heading), *(len(line) for row in rows for line in row[i])) for i, heading in enumerate(HEADINGS)]
    fixed = 2 + sum(widths[:-1]) + 2 * (len(HEADINGS) - 1)
    roles_width = max(MIN_ROLES_WIDTH, WIDTH - fixed)
    for row in rows:
        row[-1] = textwrap.wrap(row[-1][0], roles_width, break_long_words=False) or [""]
    widths[-1] = max(len(HEADINGS[-1]), *(len(line) for row in rows for line in row[-1]))
    for row in [[[heading] for heading in HEADINGS], *rows]:
        for n in range(max(len(cell) for cell in row)):
            texts = [cell[n] if n < len(cell) else "" for cell in row]
            line = "  ".join(
                text.rjust(width) if i in RIGHT else text.ljust(width)
                for i, (text, width) in enumerate(zip(texts, widths, strict=False))
            )
            print(("  " + line).rstrip(), file=out)


def _limit_cell(limiter: dict[str, Any]) -> list[str]:
    """The limit's lines: one per dimension (``limit_phrases``), the auto-detection note wrapped on
    lines of its own after "(auto-detected for"."""
    kind, limit, rpm, tpm, auto = (limiter[k] for k in ("kind", "limit", "rpm", "tpm", "rpm_auto_detected"))
    lines = []
    for phrase in limit_phrases(kind, limit, rpm, tpm, auto=auto, words=TABLE):
        head, note, rest = phrase.partition(" (auto-detected for ")
        lines.append(head + note.rstrip())
        if note:
            lines += textwrap.wrap(rest, LIMIT_WIDTH, break_long_words=False)
    return lines


def _value(value: Any) -> str:
    return number_text(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def _ignored_lines(ignored: list[dict[str, str]]) -> list[str]:
    """``role: key, key - reason``, one line per role and reason (wrapped), in the file's order."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for entry in ignored:
        grouped.setdefault((entry["role"], entry["reason"]), []).append(entry["key"])
    lines = []
    for (role, reason), keys in grouped.items():
        text = f"{role}: {', '.join(keys)} - {reason}"
        lines += textwrap.wrap(text, WIDTH, initial_indent="  ", subsequent_indent="      ", break_long_words=False)
    return lines


# --- the command ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``omnilimit check CONFIG.yaml [--json FILE]``: 0 for a valid file, 2 for a bad or unreadable
    one (``omnilimit check: error: MESSAGE`` on stderr; with ``--json``, ``{"source", "error"}``
    written where the data would have gone)."""
    from omnilimit.cli import fail

    parser = argparse.ArgumentParser(
        prog="omnilimit check",
        description="Validate an OmniGen provider configuration and print the limiters it makes, the keys they "
        "ignore and the guide's warnings. Nothing is created: no limiter, no shared memory, no Redis connection. "
        "Exit status 0 when the file is valid (warnings or not), 2 when it is refused or cannot be read.",
        epilog="For a file that is refused or cannot be read, the error is one line on stderr: 'omnilimit check: "
        "error: MESSAGE'; with --json, the JSON written (to FILE, or to standard output for -) is "
        '{"source": CONFIG.yaml, "error": MESSAGE} instead of the data: test for the key "error". A usage error '
        "(a missing or unknown argument) writes no JSON.",
    )
    parser.add_argument("config", metavar="CONFIG.yaml", help="the configuration file (providers: ..., generation:)")
    parser.add_argument(
        "--json",
        metavar="FILE",
        help="also write the data as JSON to FILE (-: to standard output, instead of the table); the keys: "
        "source, limiters, parallel_workers, warnings",
    )
    args = parser.parse_args(argv)
    try:
        data = check_file(args.config)
    except (ConfigError, OSError, UnicodeDecodeError) as error:
        return fail("check", file_error_message(args.config, error), json_to=args.json, source=args.config)
    if args.json == "-":
        sys.stdout.write(_json_text(data))
        return 0
    print_report(data)
    if args.json:
        try:
            with open(args.json, "w", encoding="utf-8") as out:
                out.write(_json_text(data))
        except OSError as error:
            return fail("check", f"{args.json}: cannot write the JSON: {error.strerror or error}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
