"""``omnilimit bench``: run the suite, print omnilimit against every peer found, check the targets.

    omnilimit bench [--full] [--only SECTION ...] [--redis URL] [--json FILE] [--plot FILE.png]

The targets are those of the project's benchmark issue; they are reported, met or not, with the
figures of this run. Nothing here is asserted by the test suite: timings belong to this command.

This module holds the run (``run``: every section asked for, JSON-ready) and the command
(``main``); ``tables.py`` prints a run, ``targets.py`` checks the targets, ``plot.py`` draws it.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import logging
import os
import platform
import shlex
import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO

import omnilimit
from omnilimit._shown import redact
from omnilimit.spec import SCHEMES

from .plot import _pyplot, plot
from .reference import ENV_VAR, load_reference
from .suite import REDIS_ENV_VAR, SECTIONS, SETTINGS, Impls, Settings, redis_problem
from .tables import TITLES, print_report
from .targets import targets

PEER_DISTRIBUTIONS = ("pyrate-limiter", "limits", "token-bucket", "aiolimiter", "filelock", "redis")


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), model)
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{platform.platform()}, {model}, {os.cpu_count()} cores ({usable} usable)"


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def run(
    settings: Settings,
    sections: Iterable[str],
    command: str = "omnilimit bench",
    progress: TextIO | None = None,
    redis_url: str | None = None,
) -> dict[str, Any]:
    """Every figure of one run, JSON-ready: info, settings, results by section, skipped peers, targets.

    Section 10 (redis) runs against the server at `redis_url`; without one it is skipped, and says
    why (on `progress`, and in the run's skipped list)."""
    reference, origin = load_reference()
    skipped = [] if reference is not None else [{"name": "reference (omnigen-usf 0.1.18)", "reason": origin}]
    impls = Impls(reference, origin, skipped, redis_url)
    sections = list(sections)
    if "redis" in sections and (problem := redis_problem(redis_url)) is not None:
        sections.remove("redis")
        skipped.append({"name": TITLES["redis"], "reason": problem})
        if progress is not None:
            print(f"  skipping redis: {problem}", file=progress, flush=True)
    given = os.environ.get(ENV_VAR)
    info = {
        "command": f"{ENV_VAR}={shlex.quote(given)} {command}" if given else command,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "omnilimit": omnilimit.__version__,
        "reference": origin if reference is not None else "skipped",
        "peers": ", ".join(f"{d} {_version(d)}" for d in PEER_DISTRIBUTIONS),
    }
    results: dict[str, Any] = {}
    started = time.perf_counter()
    log = logging.getLogger("omnilimit")
    level = log.level
    log.setLevel(logging.ERROR)  # the runs time out on purpose: one warning each would flood the output
    try:
        for section in sections:
            if progress is not None:
                print(f"  running {section}...", file=progress, flush=True)
            results[section] = SECTIONS[section](impls, settings)
    finally:
        log.setLevel(level)
    info["seconds"] = f"{time.perf_counter() - started:.1f}"
    return {
        "info": info,
        "settings": settings.as_dict(),
        "results": results,
        "skipped": impls.skipped,
        "targets": targets(results),
    }


def _shown(arg: str) -> str:
    """A command-line argument as the report shows it: a Redis URL without its password."""
    option, equals, value = arg.partition("=")
    if equals and option == "--redis":
        return f"--redis={redact(value)}"
    return redact(arg) if arg.startswith(SCHEMES) else arg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="omnilimit bench",
        description="Run the benchmark suite: omnilimit against the standard library's locks, OmniGen's own "
        "limiter and the peer libraries installed (pip install 'omnilimit[bench]' brings them; the others are listed "
        "as skipped), section by section, then the project's performance targets, each met or not, with this run's "
        "figures. About 45 s; --full takes a few minutes. Progress "
        "goes to stderr, the report to stdout.",
    )
    parser.add_argument("--full", action="store_true", help="longer runs and more trials (a few minutes)")
    parser.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # the suite's own tests
    parser.add_argument(
        "--only", nargs="+", choices=list(SECTIONS), metavar="SECTION", help=f"run only these: {', '.join(SECTIONS)}"
    )
    parser.add_argument(
        "--redis",
        metavar="URL",
        help=f"run section 10 (redis) against the Redis server at URL, e.g. redis://localhost:6379/0 (default:"
        f" ${REDIS_ENV_VAR}; without either it is skipped); the run should be the server's only client",
    )
    parser.add_argument("--json", metavar="FILE", help="write every figure to FILE as JSON")
    parser.add_argument(
        "--plot", metavar="FILE.png", help="draw throughput and p99 latency against threads (needs omnilimit[plot])"
    )
    args = parser.parse_args(argv)
    settings = SETTINGS["smoke" if args.smoke else "full" if args.full else "short"]
    sections = args.only or list(SECTIONS)
    if args.plot:
        try:
            _pyplot()  # fail now, not after the run
        except ImportError as error:
            parser.error(f"--plot needs matplotlib: pip install 'omnilimit[plot]' ({error})")
        if args.only and "contention" not in args.only:
            parser.error("--plot draws the contention section: add contention to --only")
    redis_url = args.redis or os.environ.get(REDIS_ENV_VAR) or None
    if "redis" in sections and (redis_url or args.only):  # asked for: fail now, not after the run
        problem = redis_problem(redis_url)
        if problem is not None:
            parser.error(f"section redis: {problem}")
    command = shlex.join(["omnilimit", "bench", *map(_shown, sys.argv[1:] if argv is None else argv)])
    if redis_url and not args.redis:
        command = f"{REDIS_ENV_VAR}={shlex.quote(redact(redis_url))} {command}"
    data = run(settings, sections, command, progress=sys.stderr, redis_url=redis_url)
    print_report(data)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=2, ensure_ascii=False)
            out.write("\n")
        print(f"\nwrote {args.json}")
    if args.plot:
        plot(data, args.plot)
        print(f"wrote {args.plot}")
    return 0
