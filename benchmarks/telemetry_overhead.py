"""What telemetry costs: the uncontended ``acquire(); release()`` pair of a limiter watched by
OpenTelemetry (an SDK MeterProvider, collected every 100 ms from another thread) and by a
Prometheus collector (scraped every 100 ms), against the same pair on a limiter nobody watches,
in one run; then what one collection costs.

    python benchmarks/telemetry_overhead.py      # needs opentelemetry-sdk and prometheus-client (omnilimit[test-all])

Interleaved rounds, the minimum per form (this machine has fast and slow phases).
"""

from __future__ import annotations

import threading
import time

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry, generate_latest

from omnilimit import ConcurrencyLimiter, RateLimiter
from omnilimit.prometheus import collector
from omnilimit.telemetry import instrument

PAIRS = 1_000_000
ROUNDS = 9


def pair_ns(acquire, release) -> float:
    started = time.perf_counter_ns()
    for _ in range(PAIRS):
        acquire()
        release()
    return (time.perf_counter_ns() - started) / PAIRS


def main() -> None:
    plain = {"concurrency": ConcurrencyLimiter(64, name="plain-c"), "rate": RateLimiter(6e9, provider_name="plain-r")}
    watched = {
        "concurrency": ConcurrencyLimiter(64, name="watched-c"),
        "rate": RateLimiter(6e9, provider_name="watched-r"),
    }
    reader = InMemoryMetricReader()
    instrument(list(watched.values()), meter_provider=MeterProvider(metric_readers=[reader]))
    registry = CollectorRegistry()
    registry.register(collector(list(watched.values())))
    stop = threading.Event()
    collections = [0]

    def collect() -> None:
        while not stop.wait(0.1):
            reader.get_metrics_data()
            generate_latest(registry)
            collections[0] += 1

    thread = threading.Thread(target=collect, daemon=True)
    thread.start()
    best: dict[tuple[str, str], float] = {}
    for _ in range(ROUNDS):
        for kind in ("concurrency", "rate"):
            for form, limiters in (("plain", plain), ("watched", watched)):
                limiter = limiters[kind]
                release = limiter.release if kind == "concurrency" else limiter.record_request
                ns = pair_ns(limiter.acquire, release)
                best[(kind, form)] = min(best.get((kind, form), float("inf")), ns)
    stop.set()
    thread.join()
    print(f"uncontended acquire(); release() pair, {PAIRS:,} pairs x {ROUNDS} rounds, minimum per form")
    print(f"({collections[0]} OpenTelemetry collections and Prometheus scrapes meanwhile)")
    for kind in ("concurrency", "rate"):
        plain_ns, watched_ns = best[(kind, "plain")], best[(kind, "watched")]
        ratio = watched_ns / plain_ns
        print(f"  {kind:<12} not watched {plain_ns:6.1f} ns   watched {watched_ns:6.1f} ns   ratio {ratio:.3f}")

    # One collection of 10 limiters, each with 1,000 new waits since the last (the histogram is
    # fed one record per wait), and one without new waits.
    many = [ConcurrencyLimiter(1, name=f"c{i}") for i in range(10)]
    reader = InMemoryMetricReader()
    instrument(many, meter_provider=MeterProvider(metric_readers=[reader]))
    registry = CollectorRegistry()
    registry.register(collector(many))
    reader.get_metrics_data()
    waits_recorded = _wait_many(many, 1000)
    started = time.perf_counter()
    reader.get_metrics_data()
    fed_s = time.perf_counter() - started
    started = time.perf_counter()
    reader.get_metrics_data()
    idle_s = time.perf_counter() - started
    started = time.perf_counter()
    generate_latest(registry)
    scrape_s = time.perf_counter() - started
    print(f"one OpenTelemetry collection of 10 limiters: {idle_s * 1e3:.2f} ms without new waits,")
    per_wait_us = fed_s / waits_recorded * 1e6
    print(f"  {fed_s * 1e3:.2f} ms with {waits_recorded:,} new waits to record ({per_wait_us:.2f} µs a wait)")
    print(f"one Prometheus scrape of the same 10 limiters: {scrape_s * 1e3:.2f} ms")


def _wait_many(limiters: list[ConcurrencyLimiter], per_limiter: int) -> int:
    """Makes `per_limiter` callers of each limiter wait (a holder releases to a queued caller);
    returns the waits the limiters have counted in all."""
    for limiter in limiters:
        for _ in range(per_limiter):
            limiter.acquire()
            done = threading.Event()

            def waiter(limiter: ConcurrencyLimiter = limiter, done: threading.Event = done) -> None:
                limiter.acquire()
                limiter.release()
                done.set()

            thread = threading.Thread(target=waiter)
            thread.start()
            while limiter.waiting == 0:
                time.sleep(0)
            limiter.release()
            done.wait()
            thread.join()
    return sum(limiter.wait_histogram().count for limiter in limiters)


if __name__ == "__main__":
    main()
