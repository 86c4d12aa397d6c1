"""``omnilimit simulate CONFIG.yaml``: what a configuration does to a run, before the run costs money.

The real limiters, built from the configuration by ``ProviderRateLimitManager``, are driven by
``parallel_workers`` worker threads that work as OmniGen's workers do: each takes the next call
of the run and makes it through the next role of the configuration, in turn (a conversation's
turns: ``user_followup``, ``assistant_response``, ...). A call acquires its role's limiter, calls
the ``SimulatedProvider`` of its role's provider (one API key per provider name: the roles of one
provider share its limits, roles of different providers never do), and releases (or records the
request). A call answered 429 is retried after the provider's retry-after, up to ``MAX_ATTEMPTS``
attempts in all (as OpenAI's client does by default), each attempt acquiring again.

**Time is scaled** so that a long run takes seconds: at ``--speedup X`` every rate (the
configuration's RPM and TPM, the provider's) runs X times faster, every duration (latency,
retry-after, acquire timeout, the provider's 1-s slices) X times shorter, and concurrency caps stay.
The report converts back to real time. ``auto`` (the default) aims at about ``TARGET_WALL_S`` of
wall time while keeping the run's expected pace at least ``MIN_INTERVAL_S`` between requests, so
that a thread's wake-up jitter stays small next to the gaps the limiters make.

**Each API key's limits** are ``--provider-rpm`` / ``--provider-tpm`` / ``--provider-concurrency``:
``N`` for every provider, ``NAME=N`` for one (given again for others); an RPM not given is the
provider's auto-detected limit (the smallest of its roles' models), which for a provider omnilimit
does not know (or a role without ``name``) is 60, and the report says so first.

**The recommendation** keeps each API key below its limits with ``HEADROOM``: the roles of one
provider share one rate limiter (``rate_limit_shared_key``) at ``HEADROOM`` of that key's capacity
in requests per minute (its RPM, its concurrency over the measured latency, its TPM over the
tokens per call: whichever is smallest), with a token budget when the key has a TPM limit and a
concurrency cap (``rate_limit_mode: combined``) when it has a concurrency limit. A concurrency
cap alone cannot keep every 1-s slice under an RPM limit when latencies vary; the guide's
conversion formula (Little's law, concurrency = rate x latency) is reported with the measured
latency, as the equivalent ``max_concurrent_calls``. When the workers cannot reach the rate, the
``parallel_workers`` that can is reported too.

This module holds the command line (``main``, its options and errors) and ``simulate``, which
builds the run and returns its report; ``sim_setup`` holds the ``Options``, the API keys and the
time scaling, ``sim_run`` the workers, ``sim_report`` the report and the recommendation,
``sim_text`` the report as text, and ``sim_provider`` the simulated provider.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

import yaml

from omnilimit.cli import fail
from omnilimit.config import file_error_message, parse_config, read_yaml
from omnilimit.errors import ConfigError
from omnilimit.manager import ProviderRateLimitManager
from omnilimit.sim_provider import SimulatedProvider
from omnilimit.sim_report import HEADROOM, _report, apply_recommendation
from omnilimit.sim_run import ACQUIRE_TIMEOUT_S, MAX_ATTEMPTS, _progress, _Quiet, _RoleTally, _Run, _worker
from omnilimit.sim_setup import (
    BACKEND_KEYS,
    LIMITS,
    MAX_SPEEDUP,
    MIN_INTERVAL_S,
    MIN_LATENCY_S,
    TARGET_WALL_S,
    ApiKey,
    Options,
    _check_options,
    api_keys,
    auto_speedup,
    key_capacity_rpm,
    provider_capacity_rpm,
    scaled_document,
)
from omnilimit.sim_text import format_report

__all__ = [  # the names of the command's modules that omnilimit.simulate gives (it held them all)
    "ACQUIRE_TIMEOUT_S",
    "BACKEND_KEYS",
    "DEFAULT_WORKERS",
    "HEADROOM",
    "LIMITS",
    "MAX_ATTEMPTS",
    "MAX_SPEEDUP",
    "MIN_INTERVAL_S",
    "MIN_LATENCY_S",
    "TARGET_WALL_S",
    "ApiKey",
    "Options",
    "api_keys",
    "apply_recommendation",
    "auto_speedup",
    "format_report",
    "key_capacity_rpm",
    "main",
    "provider_capacity_rpm",
    "scaled_document",
    "simulate",
]

DEFAULT_WORKERS = 10  # parallel_workers when the configuration sets none (the guide's examples)


def simulate(document: Mapping[str, Any], source: str, options: Options) -> dict[str, Any]:
    """Runs the simulation of a configuration document; returns the report (JSON-ready). Raises
    ConfigError for a bad configuration, ValueError for bad options."""
    _check_options(options)
    config = parse_config(document, source)
    roles = list(config.roles)
    workers = options.workers or config.parallel_workers or DEFAULT_WORKERS
    keys = api_keys(config, options)
    speedup = options.speedup or auto_speedup(config, options, workers, keys)
    providers = {  # per-minute limits as in real time: their slices are 1/speedup s
        name: SimulatedProvider(
            key.rpm,
            key.tpm,
            key.concurrency,
            latency_s=options.latency_s / speedup,
            slice_s=1.0 / speedup,
            seed=options.seed + index,
        )
        for index, (name, key) in enumerate(keys.items())
    }
    provider_of = {role: providers[key.provider] for key in keys.values() for role in key.roles}
    run = _Run(roles={role: _RoleTally() for role in roles})
    quiet = _Quiet()  # the limiters' timeout warnings are counted, not printed
    with quiet:
        manager = ProviderRateLimitManager.from_config(scaled_document(document, config, speedup), source)
        started = time.monotonic()
        done = threading.Event()
        progress = None
        if options.progress:
            progress = threading.Thread(
                target=_progress, args=(run, options.requests, speedup, started, done), daemon=True
            )
            progress.start()
        threads = [
            threading.Thread(
                target=_worker, args=(manager, roles, provider_of, run, options, speedup, index), daemon=True
            )
            for index in range(workers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        done.set()
        if progress is not None:
            progress.join()
    return _report(config, options, run, keys, providers, workers, speedup, elapsed)


def _provider_limit(text: str) -> tuple[str | None, float]:
    """--provider-rpm / -tpm / -concurrency: ``N`` or ``NAME=N``, N a number or ``none`` (no such
    limit: math.inf). Returns (NAME or None, N)."""
    name, _, value = text.rpartition("=")
    number = math.inf if value.strip().lower() == "none" else float(value)
    if not number > 0:
        raise ValueError(f"must be > 0 or none, got {value!r}")
    return (name or None), number


def _limits(args: argparse.Namespace) -> tuple[dict[str, float | None], dict[str, dict[str, float]]]:
    """The --provider-* options: the limits for every API key, and those for named ones."""
    every: dict[str, float | None] = dict.fromkeys(LIMITS)
    named: dict[str, dict[str, float]] = {}
    for limit in LIMITS:
        for name, number in getattr(args, f"provider_{limit}") or ():
            if limit == "concurrency" and number != math.inf and not float(number).is_integer():
                raise ValueError(f"--provider-concurrency must be a whole number or none, got {number:g}")
            if name is None:
                every[limit] = number
            else:
                named.setdefault(name, {})[limit] = number
    return every, named


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="omnilimit simulate",
        description="Drive the limiters of a configuration against a simulated provider and predict the run.",
    )
    parser.add_argument("config", metavar="CONFIG.yaml", help="an OmniGen provider configuration")
    parser.add_argument(
        "--requests", type=int, default=Options.requests, metavar="N", help="calls in total (default %(default)s)"
    )
    parser.add_argument(
        "--latency",
        type=float,
        default=Options.latency_s,
        metavar="SECONDS",
        help="mean call latency (default %(default)s; log-normal spread around it)",
    )
    parser.add_argument(
        "--provider-rpm",
        type=_provider_limit,
        action="append",
        metavar="[NAME=]N",
        help="the requests per minute of each provider's API key, or of provider NAME's (repeat for others); none "
        "for no limit (default: each provider's auto-detected limit, the smallest of its models)",
    )
    parser.add_argument(
        "--provider-tpm",
        type=_provider_limit,
        action="append",
        metavar="[NAME=]N",
        help="tokens per minute of each API key, or of provider NAME's (default: none)",
    )
    parser.add_argument(
        "--provider-concurrency",
        type=_provider_limit,
        action="append",
        metavar="[NAME=]N",
        help="concurrent requests of each API key, or of provider NAME's (default: none)",
    )
    parser.add_argument(
        "--tokens", type=int, default=Options.tokens, metavar="N", help="tokens per request (default %(default)s)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help=f"worker threads (default: generation.parallel_workers, else {DEFAULT_WORKERS})",
    )
    parser.add_argument(
        "--speedup", default="auto", metavar="X", help="time runs X times faster (default auto: a few seconds)"
    )
    parser.add_argument("--seed", type=int, default=0, help="the latencies' random seed (default 0)")
    parser.add_argument(
        "--json",
        metavar="FILE",
        help='write the report as JSON (- for standard output); for a file it cannot use, {"source": CONFIG, '
        '"error": MESSAGE} (exit 2)',
    )
    parser.add_argument(
        "--write-recommended", metavar="FILE", help="write the configuration with the recommendation applied"
    )
    args = parser.parse_args(argv)
    try:
        speedup = None if args.speedup == "auto" else float(args.speedup)
    except ValueError:
        parser.error(f"--speedup must be a number or auto, got {args.speedup!r}")
    try:
        every, named = _limits(args)
    except ValueError as error:
        parser.error(str(error))
    concurrency = every["concurrency"]
    options = Options(
        requests=args.requests,
        latency_s=args.latency,
        provider_rpm=every["rpm"],
        provider_tpm=every["tpm"],
        provider_concurrency=None if concurrency is None or concurrency == math.inf else int(concurrency),
        named_limits=named,
        tokens=args.tokens,
        speedup=speedup,
        workers=args.workers,
        seed=args.seed,
        progress=sys.stderr.isatty(),
    )
    try:
        document = read_yaml(args.config)
        report = simulate(document, args.config, options)
    except (ConfigError, OSError, UnicodeDecodeError) as error:
        return fail("simulate", file_error_message(args.config, error), json_to=args.json, source=args.config)
    except ValueError as error:
        return fail("simulate", str(error), json_to=args.json, source=args.config)
    if args.json == "-":
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
    try:
        if args.json and args.json != "-":
            with open(args.json, "w", encoding="utf-8") as out:
                json.dump(report, out, indent=2)
        if args.write_recommended and report["recommendation"]:
            with open(args.write_recommended, "w", encoding="utf-8") as out:
                yaml.safe_dump(apply_recommendation(document, report["recommendation"]), out, sort_keys=False)
    except OSError as error:
        return fail("simulate", f"{error.filename}: cannot write the file: {error.strerror or error}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
