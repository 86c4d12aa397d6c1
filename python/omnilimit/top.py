"""``omnilimit top``: the limiters at work, live, one line each.

Three sources. By default the shared limiters of this host: every segment in /dev/shm (backend
``shm``) is mapped read-only and read (``_core._peek_segment``), so watching changes nothing and
needs no configuration; the figures are every process's. With ``--redis``, the limiters a Redis
server holds, read with plain reads (every host's figures). With ``--url``, a running program's
Prometheus endpoint (``omnilimit.prometheus.serve`` or a collector in its own server): any
backend, as that program exports it.

A line shows the limit, the admissions, their rate per minute over the last few seconds, a bar of
how much of the limit is in use (that rate against the RPM, or the tokens against the TPM when
they bind; slots held against the maximum), the callers waiting, the 99th percentile of the waits,
the 429s and the pauses; ``-`` where the source does not know. The screen refreshes every second
(``--interval``); ``q`` quits. ``--once`` prints one table (no terminal needed) and exits.
"""

from __future__ import annotations

import argparse
import collections
import math
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from omnilimit._shown import printable, redact

PROG = "omnilimit top"
ERROR_STATUS = 2


@dataclass
class Row:
    """One limiter's line."""

    name: str
    kind: str  # rate, concurrency, combined (shown by its rate; a shared one: a line per part's segment)
    where: str  # shm, memory, redis, redis-lease
    admitted: int | None  # None: not counted where it is read (lease mode in Redis)
    limit: float  # requests per minute, or slots
    in_use: float  # requests in the last minute, or slots held
    waiting: int | None  # None: not known here (a shared rate limiter's sleepers are each process's)
    wait_p99_s: float | None  # None: not known here (Redis keeps no waits)
    rate_limited: int
    pauses: int
    paused_for: float
    tpm_limit: float | None = None  # with a token budget
    tokens_settled: int = 0  # recorded as used: what the budget spent, refunds deducted
    tokens_in_use: float = 0.0  # tokens recorded in the last minute
    rate_now: float | None = None  # admissions per minute since the last refresh (None: first look)
    tokens_now: float | None = None  # tokens settled per minute over the last few seconds
    notes: list[str] = field(default_factory=list)

    def use(self) -> tuple[float, str]:
        """How much of its limit is in use (1.0: all of it), and of which limit: slots held against
        the maximum; for a rate limiter, its rate since the last look (or the last minute's)
        against the RPM, or its tokens against the TPM when that is the larger share."""
        if self.kind == "concurrency":
            return (self.in_use / self.limit if self.limit > 0 else 0.0), "slots"
        requests = self.rate_now if self.rate_now is not None else self.in_use
        share = requests / self.limit if self.limit > 0 else 0.0
        if self.tpm_limit:
            tokens = self.tokens_now if self.tokens_now is not None else self.tokens_in_use
            if tokens / self.tpm_limit > share:
                return tokens / self.tpm_limit, "tpm"
        return share, "rpm"


# --- the sources ---------------------------------------------------------------------------------


def shm_rows() -> list[Row]:
    """The shared limiters of this host, one row each (a segment that cannot be read: a row with
    its reason)."""
    from omnilimit import _core

    prefix = _core._shm_prefix()
    try:
        entries = sorted(name[len(prefix) :] for name in os.listdir("/dev/shm") if name.startswith(prefix))
    except FileNotFoundError:
        return []
    rows = []
    for name in entries:
        try:
            figures = _core._peek_segment(name)
        except FileNotFoundError:
            continue  # removed since the listing
        except (OSError, ValueError, _core.SharedStateError) as error:
            rows.append(_unreadable(name, str(error)))
            continue
        rows.append(_row_from_segment(name, figures))
    return rows


def _row_from_segment(name: str, figures: dict[str, object]) -> Row:
    def number(key: str) -> float:
        value = figures.get(key, 0)
        return float(value) if isinstance(value, (int, float)) else 0.0

    rate = figures["kind"] == "rate"
    return Row(
        name=name,
        kind=str(figures["kind"]),
        where="shm",
        admitted=int(number("admitted")),
        limit=number("rpm_limit") if rate else number("max_concurrent"),
        in_use=number("current_rpm") if rate else number("active"),
        waiting=None if "waiting" not in figures else int(number("waiting")),
        wait_p99_s=number("wait_p99_s"),
        rate_limited=int(number("rate_limited")),
        pauses=int(number("pauses")),
        paused_for=number("paused_for"),
        tpm_limit=number("tpm_limit") if "tpm_limit" in figures else None,
        tokens_settled=int(number("tokens_settled")),
        tokens_in_use=number("current_tpm"),
    )


def _unreadable(name: str, why: str) -> Row:
    return Row(name, "?", "shm", 0, 0.0, 0.0, 0, 0.0, 0, 0, 0.0, notes=[why])


def prometheus_rows(url: str, timeout_s: float = 2.0) -> list[Row]:
    """The limiters a program exports at ``url`` (its Prometheus text). Raises OSError when the
    endpoint cannot be read, ValueError when it is not Prometheus text, ModuleNotFoundError without
    prometheus-client."""
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            "reading a Prometheus endpoint needs prometheus-client: pip install 'omnilimit[prometheus]'",
            name=error.name,
        ) from error
    with urllib.request.urlopen(url, timeout=timeout_s) as answer:
        text = answer.read(16 << 20).decode("utf-8", "replace")
    rows: dict[tuple[str, str], Row] = {}
    waits: dict[tuple[str, str], list[tuple[float, float]]] = {}
    exact: set[tuple[str, str]] = set()  # the limiters whose p99 the program exported

    def row(labels: dict[str, str]) -> Row:
        key = (labels.get("limiter", "?"), labels.get("kind", "?"))
        if key not in rows:
            rows[key] = Row(key[0], key[1], labels.get("backend", "?"), 0, 0.0, 0.0, 0, 0.0, 0, 0, 0.0)
        return rows[key]

    for family in text_string_to_metric_families(text):
        if not family.name.startswith("omnilimit_"):
            continue
        for sample in family.samples:
            labels, value = sample.labels, sample.value
            name = sample.name
            if name == "omnilimit_requests_total":
                target = row(labels)
                if labels.get("result") == "admitted":
                    target.admitted = int(value)
                elif labels.get("result") == "rate_limited":
                    target.rate_limited = int(value)
            elif name == "omnilimit_waiting":
                row(labels).waiting = int(value)
            elif name == "omnilimit_active" and labels.get("kind") == "concurrency":
                row(labels).in_use = value  # (a combined limiter's line shows its rate, as a rate limiter's)
            elif (
                name == "omnilimit_limit_concurrency" and labels.get("kind") == "concurrency"
            ) or name == "omnilimit_limit_requests_per_minute":
                row(labels).limit = value
            elif name == "omnilimit_limit_tokens_per_minute":
                row(labels).tpm_limit = value
            elif name == "omnilimit_rate_tokens_per_minute":
                row(labels).tokens_in_use = value
            elif name == "omnilimit_tokens_total" and labels.get("state") == "settled":
                row(labels).tokens_settled = int(value)
            elif name == "omnilimit_rate_requests_per_minute" and labels.get("kind") != "concurrency":
                row(labels).in_use = value
            elif name == "omnilimit_pauses_total":
                row(labels).pauses = int(value)
            elif name == "omnilimit_pause_remaining_seconds":
                row(labels).paused_for = value
            elif name == "omnilimit_wait_p99_seconds":
                target = row(labels)
                target.wait_p99_s = max(target.wait_p99_s or 0.0, value)
                exact.add((labels.get("limiter", "?"), labels.get("kind", "?")))
            elif name == "omnilimit_wait_seconds_bucket":
                row(labels)
                key = (labels.get("limiter", "?"), labels.get("kind", "?"))
                bound = math.inf if labels.get("le") == "+Inf" else float(labels.get("le", "inf"))
                waits.setdefault(key, []).append((bound, value))
    for key, buckets in waits.items():
        if key not in exact:  # another exporter: estimated from the histogram's bounds
            rows[key].wait_p99_s = _quantile(0.99, buckets, rows[key].admitted or 0)
            exact.add(key)
    return list(rows.values())


def redis_rows(url: str, timeout_s: float = 2.0) -> list[Row]:
    """The limiters kept on the Redis (or Valkey) server at ``url``, read with plain reads (nothing
    is written): every host's admissions, refusals, limits, the last minute's rate, slots held and
    the line of waiters, the pause. Redis keeps no waits (their quantiles are each process's) and
    no 429 count. A limiter in lease mode shows the sum of its live leases' shares as its limit
    (the capacity is each process's configuration) and what they report they use. Raises OSError
    (or redis' ConnectionError, an OSError) when the server cannot be reached."""
    from omnilimit.readings import optional_module

    redis = optional_module("redis", "redis", "omnilimit top --redis")
    client = redis.Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, decode_responses=True
    )
    try:
        seconds, micros = client.time()
        now_us = seconds * 1_000_000 + micros
        rows = [
            *(_redis_rate(client, name, seconds, now_us) for name in _names(client, "rate:bucket")),
            *(_redis_slots(client, name, seconds, now_us) for name in _names(client, "sem:state")),
            *(_redis_lease(client, name, now_us) for name in _names(client, "lease:leases")),
        ]
    except redis.RedisError as error:
        raise OSError(str(error)) from error
    finally:
        client.close()
    return rows


def _names(client: Any, suffix: str) -> list[str]:
    start, end = "omnilimit:{", "}:" + suffix
    return sorted(key[len(start) : -len(end)] for key in client.scan_iter(match=f"omnilimit:{{*{end}", count=1000))


def _last_minute(client: Any, key: str, second: int) -> int:
    """What a window hash (second -> count) counted in the last 60 s."""
    return sum(int(n) for at, n in client.hgetall(key).items() if second - 60 < int(at) <= second)


def _float(value: Any) -> float:
    return float(value) if value not in (None, "") else 0.0


def _redis_rate(client: Any, name: str, second: int, now_us: int) -> Row:
    tag = f"omnilimit:{{{name}}}:rate"
    interval, admitted, pause_end, token_interval, tokens = client.hmget(
        f"{tag}:bucket", "interval", "admitted", "pause_end", "tinterval", "tokens"
    )
    row = Row(
        name=name,
        kind="rate",
        where="redis",
        admitted=int(_float(admitted)),
        limit=60e6 / _float(interval) if _float(interval) > 0 else 0.0,
        in_use=_last_minute(client, f"{tag}:window", second),
        waiting=None,
        wait_p99_s=None,
        rate_limited=0,
        pauses=0,
        paused_for=max(0.0, (_float(pause_end) - now_us) / 1e6),
    )
    if _float(token_interval) > 0:
        row.tpm_limit = 60e6 / _float(token_interval)
        row.tokens_settled = int(_float(tokens))
        row.tokens_in_use = _last_minute(client, f"{tag}:tokens", second)
    return row


def _redis_slots(client: Any, name: str, second: int, now_us: int) -> Row:
    tag = f"omnilimit:{{{name}}}:sem"
    maximum, admitted, pause_end = client.hmget(f"{tag}:state", "max", "admitted", "pause_end")
    return Row(
        name=name,
        kind="concurrency",
        where="redis",
        admitted=int(_float(admitted)),
        limit=_float(maximum),
        in_use=client.zcount(f"{tag}:leases", now_us, "+inf"),  # the permits whose lease still runs
        waiting=client.zcard(f"{tag}:line"),
        wait_p99_s=None,
        rate_limited=0,
        pauses=0,
        paused_for=max(0.0, (_float(pause_end) - now_us) / 1e6),
    )


def _redis_lease(client: Any, name: str, now_us: int) -> Row:
    shares = used = 0.0
    for lease in client.hvals(f"omnilimit:{{{name}}}:lease:leases"):
        fields = lease.split()
        if len(fields) >= 4 and _float(fields[0]) > now_us:  # a live lease: expiry share wants used ...
            shares += _float(fields[1])
            used += _float(fields[3])
    # The leases report their use per minute: that is the rate shown (no admission is counted in Redis).
    return Row(name, "rate", "redis-lease", None, shares, used, None, None, 0, 0, 0.0, rate_now=used)


def _quantile(q: float, buckets: list[tuple[float, float]], admitted: int) -> float:
    """The q-quantile of the admitted callers' waits from a cumulative histogram of the callers
    that waited (the others waited 0), interpolated inside its bucket (histogram_quantile's rule);
    a rank beyond the last finite bound reports that bound."""
    ordered = sorted(buckets)
    waited = ordered[-1][1] if ordered else 0.0
    everyone = max(float(admitted), waited)
    if everyone == 0:
        return 0.0
    rank = q * everyone - (everyone - waited)
    if rank <= 0:
        return 0.0
    lower, below = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside > 0 else 1.0)
        lower, below = bound, count
    return lower


# --- the table -----------------------------------------------------------------------------------

HEADER = ("LIMITER", "KIND", "WHERE", "LIMIT", "ADMITTED", "NOW/MIN", "USE", "WAITING", "P99 WAIT", "429s", "PAUSES")
LIMIT_WIDTH = 17
FIXED_WIDTH = 24 + 11 + 11 + LIMIT_WIDTH + 9 + 8 + 12 + 7 + 9 + 6 + 6 + 10  # a line but its bar (and spaces)


def render(rows: list[Row], width: int, source: str) -> list[str]:
    """The screen's lines for ``rows``, each at most ``width`` characters."""
    bar_width = max(6, min(20, width - FIXED_WIDTH))
    lines = [_fit(f"omnilimit top  {source}  {time.strftime('%H:%M:%S')}  (q quits)", width)]
    lines.append(
        _fit(
            f"{HEADER[0]:<24} {HEADER[1]:<11} {HEADER[2]:<11} {HEADER[3]:>{LIMIT_WIDTH}} {HEADER[4]:>9} "
            f"{HEADER[5]:>8} {HEADER[6]:<{bar_width + 12}} {HEADER[7]:>7} {HEADER[8]:>9} {HEADER[9]:>6} "
            f"{HEADER[10]:>6}",
            width,
        )
    )
    if not rows:
        lines.append(_fit("(no limiter to show)", width))
    for row in sorted(rows, key=lambda r: (r.name, r.kind)):
        if row.notes:
            lines.append(_fit(f"{printable(row.name)[:24]:<24} cannot be read: {'; '.join(row.notes)}", width))
            continue
        if row.kind == "concurrency":
            limit = f"{_count(row.limit)} slots"
        elif row.where == "redis-lease":
            limit = f"{_count(row.limit)} rpm leased"  # the live leases' shares: the capacity is not in Redis
        elif row.tpm_limit:
            limit = f"{_count(row.limit)} rpm {_count(row.tpm_limit)} tpm"
        else:
            limit = f"{_count(row.limit)} rpm"
        used, of = row.use()
        filled = max(0, min(bar_width, round(used * bar_width)))
        bar = "#" * filled + "." * (bar_width - filled)
        now = "-" if row.rate_now is None else f"{row.rate_now:,.0f}"
        waiting = "-" if row.waiting is None else str(row.waiting)
        admitted = "-" if row.admitted is None else f"{row.admitted:,}"
        p99 = "-" if row.wait_p99_s is None else _seconds(row.wait_p99_s)
        pause = f" paused {row.paused_for:.1f}s" if row.paused_for > 0 else ""
        lines.append(
            _fit(
                f"{printable(row.name)[:24]:<24} {row.kind:<11} {row.where:<11} {limit:>{LIMIT_WIDTH}} "
                f"{admitted:>9} {now:>8} "
                f"{bar} {used * 100:>4.0f}% {of:<5} {waiting:>7} {p99:>9} "
                f"{row.rate_limited:>6} {row.pauses:>6}{pause}",
                width,
            )
        )
    return lines


def _count(value: float) -> str:
    """1,200 / 60k / 12.5k / 2.5M: a limit in a few characters."""
    if value >= 1e6:
        return f"{value / 1e6:.3g}M"
    if value >= 1e4:
        return f"{value / 1e3:.3g}k"
    return f"{value:,.0f}"


def _seconds(value: float) -> str:
    if value <= 0:
        return "0"
    if value < 1:
        return f"{value * 1000:.1f}ms"
    return f"{value:.2f}s"


def _fit(line: str, width: int) -> str:
    return line if len(line) <= width else line[: max(0, width - 1)] + "…"


class Rates:
    """Admissions (and tokens settled) per minute over the last few seconds, per limiter: from the oldest
    look within ``SPAN_S`` (at least ``MIN_SPAN_S`` old) to now, so that a limiter admitting one
    request a second does not swing between 0 and twice its rate from one refresh to the next."""

    SPAN_S = 5.0
    MIN_SPAN_S = 0.5

    def __init__(self) -> None:
        self._looks: dict[tuple[str, str], collections.deque[tuple[float, int, int]]] = {}

    def update(self, rows: list[Row]) -> None:
        now = time.monotonic()
        for row in rows:
            if row.admitted is None:
                continue  # its source gives its rate itself
            looks = self._looks.setdefault((row.name, row.kind), collections.deque())
            if looks and (row.admitted < looks[-1][1] or row.tokens_settled < looks[-1][2]):
                looks.clear()  # the limiter started afresh (a segment removed and made again)
            while len(looks) > 1 and now - looks[1][0] >= self.SPAN_S:
                looks.popleft()
            looks.append((now, row.admitted, row.tokens_settled))
            then, admitted, tokens = looks[0]
            if now - then >= self.MIN_SPAN_S:
                row.rate_now = (row.admitted - admitted) / (now - then) * 60.0
                row.tokens_now = (row.tokens_settled - tokens) / (now - then) * 60.0


# --- the command ---------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Watch the limiters at work, one line each: this host's shared limiters (segments in "
        "/dev/shm, read-only), the limiters a Redis server holds (--redis), or a program's Prometheus endpoint "
        "(--url). Refreshes every second; q quits.",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--url", help="a Prometheus endpoint serving omnilimit's metrics (http://HOST:PORT/metrics)")
    source.add_argument(
        "--redis", metavar="URL", help="a Redis or Valkey server holding limiters (redis://HOST:PORT/DB)"
    )
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes (default 1)")
    parser.add_argument("--once", action="store_true", help="print the table once and exit (no terminal needed)")
    return parser


def main(argv: list[str]) -> int:
    from omnilimit.cli import fail

    args = _parser().parse_args(argv)
    if not (math.isfinite(args.interval) and 0.05 <= args.interval <= 3600):
        return fail("top", f"--interval must be between 0.05 and 3600 seconds, got {args.interval!r}")
    if args.url is not None and not args.url.startswith(("http://", "https://")):
        return fail("top", f"--url must be an http:// or https:// URL, got {printable(args.url)}")
    if args.redis is not None and not args.redis.startswith(("redis://", "rediss://", "unix://")):
        return fail("top", f"--redis must be a redis://, rediss:// or unix:// URL, got {printable(redact(args.redis))}")
    if args.url is not None:
        source = redact(args.url)
    elif args.redis is not None:
        source = redact(args.redis)
    else:
        source = "shared memory (/dev/shm)"

    def look() -> list[Row]:
        if args.url is not None:
            return prometheus_rows(args.url)
        if args.redis is not None:
            return redis_rows(args.redis)
        return shm_rows()

    try:
        rows = look()
    except (OSError, ValueError, ModuleNotFoundError) as error:
        return fail("top", f"{source}: {_reason(error)}")
    if args.once:
        for line in render(rows, 200, source):
            print(line)
        return 0
    if not sys.stdin.isatty() or not sys.stdout.isatty():
        return fail("top", "the live view needs a terminal (--once prints one table)")
    import curses

    curses.use_env(False)  # the terminal's size, not a COLUMNS / LINES exported by some earlier shell
    return int(curses.wrapper(lambda screen: _live(screen, look, source, args.interval)))


def _live(screen: object, look: Callable[[], list[Row]], source: str, interval: float) -> int:
    import curses

    assert isinstance(screen, curses.window)
    curses.curs_set(0)
    screen.timeout(50)
    rates = Rates()
    next_look = 0.0
    problem = ""
    rows: list[Row] = []
    while True:
        if time.monotonic() >= next_look:
            try:
                rows = look()
                rates.update(rows)
                problem = ""
            except (OSError, ValueError) as error:
                problem = f"cannot read {source}: {_reason(error)} (showing the last figures)"
            next_look = time.monotonic() + interval
            _follow_the_terminal(screen)
            height, width = screen.getmaxyx()
            screen.erase()
            lines = render(rows, max(20, width - 1), source)
            if problem:
                lines.insert(1, _fit(problem, max(20, width - 1)))
            for y, line in enumerate(lines[: height - 1]):
                screen.addstr(y, 0, line)
            screen.refresh()
        key = screen.getch()
        if key in (ord("q"), ord("Q")):
            return 0
        if key == curses.KEY_RESIZE:
            next_look = 0.0


def _follow_the_terminal(screen: object) -> None:
    """Resizes curses' screen to the terminal's size when they differ: a resize that reached the
    terminal before curses watched for it (a terminal multiplexer sizes a new pane just after
    starting its program) sends no KEY_RESIZE, and the screen would keep its first size."""
    import curses

    assert isinstance(screen, curses.window)
    try:
        size = os.get_terminal_size(sys.stdout.fileno())
    except OSError:
        return
    if (size.lines, size.columns) != screen.getmaxyx() and size.lines > 0 and size.columns > 0:
        curses.resizeterm(size.lines, size.columns)


def _reason(error: BaseException) -> str:
    if isinstance(error, urllib.error.URLError):
        return str(error.reason)
    return str(error)
