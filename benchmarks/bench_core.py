"""Uncontended cost of omnilimit's limiters in ns per operation, next to the standard library's
locks and OmniGen's reference limiters (omnigen-usf==0.1.18, loaded by _reference.py).

    python benchmarks/bench_core.py [--quick] [--json FILE]

Each case runs `repeat` times with timeit (gc off, one thread), each repeat calibrated to last about
`repeat_s` seconds; the table gives the minimum (the figure the ratios use) and the median. Both
RateLimiters get a rate and a burst of 10**12: token buckets that start full and take one token per
call never wait within a run; the reference's only way to sleep is counted to show it.
Only the standard library and omnilimit are used.
"""

from __future__ import annotations

import _thread
import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import sys
import threading
import timeit
from typing import Any, NamedTuple

from _reference import ENV_VAR, load_reference

import omnilimit

HUGE = 10**12  # requests per minute and burst size: never exhausted within a run
PAIR = "acquire(); release()"
PAIR_TIMEOUT = "acquire(timeout=120); release()"
RATE = "RateLimiter.acquire(timeout=120)"
SETTINGS: dict[str, dict[str, Any]] = {
    "quick": {"repeat": 5, "repeat_s": 0.08},  # about 6 s in all
    "default": {"repeat": 7, "repeat_s": 0.3},  # about 30 s in all
}

PAIR_SETUPS = {
    "omnilimit": "lim = omnilimit.ConcurrencyLimiter(4, name='bench')",
    "_thread.lock": "lim = _thread.allocate_lock()",
    "threading.Semaphore": "lim = threading.Semaphore(4)",
    "threading.BoundedSemaphore": "lim = threading.BoundedSemaphore(4)",
    "reference": "lim = reference.ConcurrencyLimiter(4, name='bench')",
}
RATE_SETUPS = {
    "omnilimit": "lim = omnilimit.RateLimiter(HUGE, burst_size=HUGE, provider_name='bench')",
    "reference": "lim = count_waits(reference.RateLimiter(HUGE, HUGE, provider_name='bench'))",
}
# (target, numerator, denominator, calls, bound): met when numerator/denominator passes the bound
# for every call form, comparing minima.
TARGETS = [
    ("≥10x vs reference for the concurrency pair (both forms)", "reference", "omnilimit", (PAIR, PAIR_TIMEOUT), 10.0),
    ("≥5x vs reference for the rate decision", "reference", "omnilimit", (RATE,), 5.0),
    ("≤1.5x of _thread.lock (issue 4 target)", "omnilimit", "_thread.lock", (PAIR, PAIR_TIMEOUT), 1.5),
]


class Case(NamedTuple):
    call: str  # PAIR, PAIR_TIMEOUT or RATE
    impl: str  # "omnilimit", "reference" or a standard-library primitive
    setup: str  # binds `lim`
    stmt: str


def make_cases(with_reference: bool) -> list[Case]:
    forms = {PAIR: "lim.acquire(); lim.release()", PAIR_TIMEOUT: "lim.acquire(timeout=120); lim.release()"}
    cases = [Case(call, impl, setup, stmt) for call, stmt in forms.items() for impl, setup in PAIR_SETUPS.items()]
    cases += [Case(RATE, impl, setup, "lim.acquire(timeout=120)") for impl, setup in RATE_SETUPS.items()]
    cases.append(Case("(empty statement)", "timeit loop overhead", "lim = None", "pass"))
    return [case for case in cases if with_reference or case.impl != "reference"]


def count_waits(limiter: Any) -> Any:
    """Counts the reference RateLimiter's waits: it calls _calculate_wait_time before each sleep,
    and only then, so the hook costs nothing on the path measured."""
    compute = limiter._calculate_wait_time
    limiter.waits = 0

    def counted() -> float:
        limiter.waits += 1
        wait_s: float = compute()
        return wait_s

    limiter._calculate_wait_time = counted
    return limiter


def measure(case: Case, namespace: dict[str, Any], repeat: int, repeat_s: float) -> dict[str, Any]:
    """ns per operation of `case`, over `repeat` runs of about `repeat_s` seconds each."""
    namespace = dict(namespace)
    exec(case.setup, namespace)
    timer = timeit.Timer(case.stmt, globals=namespace)
    number = 1
    while (elapsed := timer.timeit(number)) < repeat_s / 10:
        number *= 10
    number = max(1, round(number * repeat_s / elapsed))
    runs_ns = [timer.timeit(number) / number * 1e9 for _ in range(repeat)]
    result = {
        **case._asdict(),
        "min_ns": min(runs_ns),
        "median_ns": statistics.median(runs_ns),
        "runs_ns": runs_ns,
        "number": number,
        "repeat": repeat,
    }
    if hasattr(namespace["lim"], "waits"):
        result["waits"] = namespace["lim"].waits
    return result


def compare(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target with its ratios (of minima, and of medians) and whether it is met."""
    by_key = {(r["call"], r["impl"]): r for r in results}
    summary: list[dict[str, Any]] = []
    for target, top, bottom, calls, bound in TARGETS:
        if not all((call, impl) in by_key for call in calls for impl in (top, bottom)):
            summary.append({"target": target, "met": None, "ratios": []})
            continue
        ratios = [
            {
                "call": call,
                "ratio": f"{top}/{bottom}",
                "min": by_key[call, top]["min_ns"] / by_key[call, bottom]["min_ns"],
                "median": by_key[call, top]["median_ns"] / by_key[call, bottom]["median_ns"],
            }
            for call in calls
        ]
        at_least = target.startswith("≥")
        waited = any(by_key[call, impl].get("waits") for call in calls for impl in (top, bottom))
        met = not waited and all(r["min"] >= bound if at_least else r["min"] <= bound for r in ratios)
        summary.append({"target": target, "met": met, "ratios": ratios})
    return summary


def report(info: dict[str, str], results: list[dict[str, Any]], targets: list[dict[str, Any]]) -> None:
    for key, value in info.items():
        print(f"{key + ':':<12}{value}")
    print(f"\n{'call':<34}{'implementation':<28}{'min ns/op':>10}{'median':>9}   loops x repeats")
    for r in results:
        waits = f"   waits: {r['waits']}" if "waits" in r else ""
        if r.get("waits"):
            waits += " (it slept: figure invalid)"
        print(
            f"{r['call']:<34}{r['impl']:<28}{r['min_ns']:>10.1f}{r['median_ns']:>9.1f}"
            f"{r['number']:>11} x {r['repeat']}{waits}"
        )
    print("\ntargets, measured in this run (ratio of min ns/op; of medians in brackets):")
    for t in targets:
        verdict = {True: "MET", False: "NOT MET", None: "not measured (no reference)"}[t["met"]]
        print(f"  {t['target']}: {verdict}")
        for r in t["ratios"]:
            print(f"    {r['call']:<34}{r['ratio']:<24}{r['min']:>7.2f}x  ({r['median']:.2f}x)")


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), model)
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{platform.platform()}, {model}, {os.cpu_count()} cores ({usable} usable)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter repeats (under 10 s)")
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE as JSON")
    args = parser.parse_args(argv)
    settings = SETTINGS["quick" if args.quick else "default"]

    reference, origin = load_reference()
    given = os.environ.get(ENV_VAR)
    command = shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    info = {
        "command": f"{ENV_VAR}={shlex.quote(given)} {command}" if given else command,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "python": f"{platform.python_implementation()} {platform.python_version()} ({sys.executable})",
        "omnilimit": f"{omnilimit.__version__} ({os.path.dirname(omnilimit.__file__)})",
        "reference": origin if reference else f"skipped: {origin}",
        "settings": f"{settings['repeat']} repeats of ~{settings['repeat_s']} s per case",
    }
    namespace = {
        "omnilimit": omnilimit,
        "_thread": _thread,
        "threading": threading,
        "reference": reference,
        "count_waits": count_waits,
        "HUGE": HUGE,
    }
    results = [measure(case, namespace, **settings) for case in make_cases(reference is not None)]
    targets = compare(results)
    report(info, results, targets)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(
                {"info": info, "settings": settings, "results": results, "targets": targets},
                out,
                indent=2,
                ensure_ascii=False,
            )
            out.write("\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
