"""The report of ``omnilimit simulate`` as text, for a terminal: the run's figures, a table of the
API keys, one of the limiters, one of the roles, and the recommendation as YAML to paste."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from omnilimit.sim_report import HEADROOM
from omnilimit.sim_run import MAX_ATTEMPTS
from omnilimit.sim_setup import _number


def format_report(report: Mapping[str, Any]) -> str:
    """The report as text, for a terminal."""
    lines = [
        f"{report['source']}: {report['requests']} calls by {report['workers']} workers, "
        f"mean latency {report['latency_s']} s, {report['tokens_per_request']} tokens per call "
        f"(simulated {report['speedup']}x faster: {report['wall_s']} s of wall time)"
    ]
    keys = report["api_keys"]
    lines.append("API keys (one per provider; --provider-rpm NAME=N sets one):" if len(keys) > 1 else "API key:")
    for name, key in keys.items():
        limits = ["no RPM limit" if key["rpm"] is None else f"{_number(key['rpm'])} RPM ({key['rpm_source']})"]
        if key["tpm"] is not None:
            limits.append(f"{_number(key['tpm'])} TPM")
        if key["concurrency"] is not None:
            limits.append(f"{key['concurrency']} concurrent")
        roles = ", ".join(key["roles"])
        lines.append(f"  {name}: {', '.join(limits)}; {'role' if len(key['roles']) == 1 else 'roles'} {roles}")
    lines.append("")
    lines.append(f"  projected wall time    {report['projected_wall_s']:,.1f} s")
    capacity = report["provider_capacity_rpm"]
    used = "" if capacity is None else f" of the API keys' {capacity:,.1f} ({report['capacity_used']:.0%})"
    lines.append(f"  throughput             {report['throughput_rpm']:,.1f} requests/min{used}")
    lines.append(f"  completed              {report['completed']} of {report['requests']}")
    by = ", ".join(f"{k} {v}" for k, v in report["rate_limited_by"].items() if v)
    lines.append(f"  429s from the provider {report['rate_limited_429']}" + (f" ({by})" if by else ""))
    lines.append(
        f"  acquire timeouts       {report['timeouts']}"
        + (f"; failed after {MAX_ATTEMPTS} attempts: {report['failed']}" if report["failed"] else "")
    )
    binding = report["binding_constraint"]
    bursts = report["rate_limited_429"] and not binding.startswith("provider_")
    lines.append(
        f"  binding constraint     {binding}"
        + (" (the 429s came from bursts above a 1-s slice's share)" if bursts else "")
    )
    lines.append("")
    key_rows = []
    for name, key in keys.items():
        tightest = key["binding_constraint"]
        key_rows.append(
            [
                name,
                "none" if key["capacity_rpm"] is None else f"{key['capacity_rpm']:,.1f}",
                f"{key['throughput_rpm']:,.1f}",
                "-" if key["capacity_used"] is None else f"{key['capacity_used']:.0%}",
                str(key["rate_limited_429"]),
                f"{tightest} {key['ceilings_rpm'][tightest]:,.1f}",
            ]
        )
    lines += _table(
        ["API key", "capacity/min", "throughput/min", "used", "429s", "tightest ceiling of its calls/min"], key_rows
    )
    lines.append("")
    total_roles = len(report["roles"])
    limiter_rows = [
        [
            limiter["key"],
            limiter["kind"],
            f"{limiter['capacity_rpm']:,.1f}",
            f"{len(limiter['roles'])} of {total_roles}",
            f"{limiter['run_ceiling_rpm']:,.1f}",
        ]
        for limiter in report["limiters"]
    ]
    lines += _table(["limiter", "kind", "its limit/min", "roles", "ceiling on the run/min"], limiter_rows, left=2)
    lines.append("")
    lines.append("  role                    calls  completed  429s  timeouts  mean wait s  mean latency s")
    for role, r in report["roles"].items():
        lines.append(
            f"  {role:<22} {r['calls']:>6} {r['completed']:>10} {r['rate_limited_429']:>5} {r['timeouts']:>9} "
            f"{r['mean_wait_s']:>12} {r['mean_latency_s']:>15}"
        )
    lines += _recommendation_lines(report)
    return "\n".join(lines)


def _table(headings: list[str], rows: list[list[str]], left: int = 1) -> list[str]:
    """Rows under headings, the first ``left`` columns aligned left, the others right."""
    widths = [max(len(cell) for cell in column) for column in zip(headings, *rows, strict=False)]
    return [
        "  "
        + "  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=False)))
        for row in [headings, *rows]
    ]


def _recommendation_lines(report: Mapping[str, Any]) -> list[str]:
    recommendation = report["recommendation"]
    if not recommendation:
        return ["", "recommendation: none (no API key sets a limit to stay under)"]
    lines = [
        "",
        f"recommendation: the roles of each API key share one rate limiter at {HEADROOM:.0%} of its capacity "
        "(null removes a key):",
        "providers:",
    ]
    for role, keys in recommendation.items():
        lines.append(f"  {role}:")
        for key, value in keys.items():
            lines.append(f"    {key}: {'null' if value is None else json.dumps(value)}")
    for name, key in report["api_keys"].items():
        little = key["littles_law_max_concurrent_calls"]
        if little is not None:
            lines.append(
                f"({name}: Little's law with the measured latency of {report['measured_latency_s']} s makes the same "
                f"rate about {little} calls in flight: max_concurrent_calls {little} for its roles together, if you "
                "prefer concurrency limiting)"
            )
    if report["recommended_parallel_workers"] is not None:
        lines.append(
            f"(the {report['workers']} workers cannot reach that rate: generation.parallel_workers "
            f"{report['recommended_parallel_workers']} can)"
        )
    return lines
