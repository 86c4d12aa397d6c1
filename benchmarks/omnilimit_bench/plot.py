"""``omnilimit bench --plot FILE.png``: throughput and p99 latency against thread count, drawn from
the contention section with matplotlib."""

from __future__ import annotations

from typing import Any


def _pyplot() -> Any:
    import matplotlib  # ImportError without it: main() checks before the run

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot(data: dict[str, Any], path: str) -> None:
    """Throughput and p99 acquire latency against thread count, one line per implementation."""
    plt = _pyplot()
    rows = data["results"].get("contention")
    if not rows:
        raise SystemExit("--plot draws the contention section: run it (leave out --only, or add --only contention)")
    counts = sorted({r["threads"] for r in rows})
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for impl in dict.fromkeys(r["impl"] for r in rows):
        mine = sorted((r for r in rows if r["impl"] == impl), key=lambda r: r["threads"])
        xs = [r["threads"] for r in mine]
        left.plot(xs, [r["cycles_per_s"] for r in mine], marker="o", label=impl)
        right.plot(xs, [r["p99_us"] for r in mine], marker="o", label=impl)
    for axis, title, unit in (
        (left, "throughput", "acquire/release cycles per s"),
        (right, "p99 acquire latency", "µs"),
    ):
        axis.set_xscale("log", base=2)
        axis.set_xticks(counts, [str(n) for n in counts])
        axis.xaxis.set_minor_locator(plt.NullLocator())
        axis.set_yscale("log")
        axis.set_xlabel("threads")
        axis.set_ylabel(unit)
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
    left.legend()
    fig.suptitle(f"max_concurrent=4 · {data['info']['machine']}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
