"""omnilimit.telemetry (OpenTelemetry) and omnilimit.prometheus: every documented instrument read
back from a real SDK (the in-memory reader) and a real text exposition, with the values the
limiters' own counters hold; waiting and active read while callers wait."""

import re
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import need, start_thread, wait_until

from omnilimit import CombinedLimiter, ConcurrencyLimiter, RateLimiter, _core
from omnilimit.waits import EXPORT_BOUNDS_S, WaitCounts

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guide" / "observability.md"


def otel_sdk():
    need("opentelemetry.sdk.metrics")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    return reader, MeterProvider(metric_readers=[reader])


def collected(reader):
    """{(instrument, limiter, extra attribute value or None): point} of one collection, and the
    instruments' units."""
    points, units = {}, {}
    for resource in reader.get_metrics_data().resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                units[metric.name] = metric.unit
                for point in metric.data.data_points:
                    attributes = dict(point.attributes)
                    extra = [
                        attributes[k]
                        for k in ("omnilimit.result", "omnilimit.tokens.state", "omnilimit.part")
                        if k in attributes
                    ]
                    key = (metric.name, attributes["omnilimit.limiter"], extra[0] if extra else None)
                    assert key not in points, key
                    points[key] = (point, attributes)
    return points, units


def value(points, name, limiter, extra=None):
    return points[(name, limiter, extra)][0].value


class Scene:
    """Three limiters with known traffic: a concurrency limiter (2 slots), a rate limiter with a
    token budget (60 RPM, burst 2) and a combined one (1 slot); a caller of each left waiting."""

    def __init__(self):
        self.slots = ConcurrencyLimiter(2, name="slots")
        self.rate = RateLimiter(60, burst_size=2, provider_name="openai", tokens_per_minute=60_000, token_burst=1000)
        self.both = CombinedLimiter(1, 6000, name="both")
        self.limiters = {"slots": self.slots, "openai": self.rate, "both": self.both}
        self.threads = []

    def traffic(self):
        slots, rate, both = self.slots, self.rate, self.both
        assert slots.acquire() and slots.acquire()  # both slots held
        assert not slots.acquire(timeout=0)  # denied
        assert not slots.acquire(timeout=0.02)  # timed out
        for _ in range(2):
            assert rate.acquire(tokens=100)
            rate.record_request(tokens=40)
        assert not rate.acquire(timeout=0, tokens=1)  # denied: the burst is spent
        assert both.acquire()
        both.record_request()
        both.release()
        assert both.acquire()  # held: the next caller waits for the slot
        self.threads = [
            start_thread(slots.acquire, 30),
            start_thread(rate.acquire, 30, 10),
            start_thread(both.acquire, 30),
        ]
        wait_until(lambda: slots.waiting == 1 and rate.waiting == 1 and both.waiting == 1)

    def let_go(self):
        self.slots.release()
        self.both.release()
        for thread in self.threads:
            thread.join(10)
        assert not any(t.is_alive() for t in self.threads)


def test_every_instrument_reads_back_with_the_right_values():
    reader, provider = otel_sdk()
    from omnilimit.telemetry import instrument

    scene = Scene()
    instrumentation = instrument(scene.limiters, meter_provider=provider)
    scene.traffic()

    points, units = collected(reader)  # while one caller of each waits
    for limiter, admitted, timed_out, denied in (("slots", 2, 1, 1), ("openai", 2, 0, 1), ("both", 2, 0, 0)):
        assert value(points, "omnilimit.requests", limiter, "admitted") == admitted
        assert value(points, "omnilimit.requests", limiter, "timed_out") == timed_out
        assert value(points, "omnilimit.requests", limiter, "denied") == denied
        assert value(points, "omnilimit.requests", limiter, "rate_limited") == 0
        assert value(points, "omnilimit.waiting", limiter) == 1
        assert value(points, "omnilimit.pauses", limiter) == 0
        assert value(points, "omnilimit.pause.remaining", limiter) == 0
    assert value(points, "omnilimit.active", "slots") == 2
    assert value(points, "omnilimit.active", "both") == 1
    assert ("omnilimit.active", "openai", None) not in points  # a rate limiter holds no slot
    assert value(points, "omnilimit.limit.concurrency", "slots") == 2
    assert value(points, "omnilimit.limit.concurrency", "both") == 1
    assert value(points, "omnilimit.limit.requests", "openai") == 60
    assert value(points, "omnilimit.limit.requests", "both") == 6000
    assert value(points, "omnilimit.limit.tokens", "openai") == 60_000
    assert ("omnilimit.limit.tokens", "both", None) not in points  # no token budget
    assert value(points, "omnilimit.rate.requests", "openai") == 2
    assert value(points, "omnilimit.rate.requests", "both") == 1
    assert value(points, "omnilimit.rate.tokens", "openai") == 80
    assert value(points, "omnilimit.tokens", "openai", "admitted") == 200
    assert value(points, "omnilimit.tokens", "openai", "settled") == 80
    _, attributes = points[("omnilimit.requests", "slots", "admitted")]
    assert attributes == {
        "omnilimit.limiter": "slots",
        "omnilimit.kind": "concurrency",
        "omnilimit.backend": "memory",
        "omnilimit.scope": "process",
        "omnilimit.result": "admitted",
    }
    assert points[("omnilimit.waiting", "both", None)][1]["omnilimit.kind"] == "combined"
    assert units["omnilimit.wait.duration"] == "s"
    assert units["omnilimit.requests"] == "{request}"
    assert units["omnilimit.limit.requests"] == "{request}/min"

    scene.let_go()  # the waiters are admitted: each waited
    scene.rate.on_rate_limited(retry_after=30)
    points, _ = collected(reader)
    assert value(points, "omnilimit.requests", "slots", "admitted") == 3
    assert value(points, "omnilimit.requests", "openai", "admitted") == 3
    assert value(points, "omnilimit.requests", "both", "admitted") == 3
    assert value(points, "omnilimit.requests", "openai", "rate_limited") == 1
    assert value(points, "omnilimit.pauses", "openai") == 1
    assert 29 < value(points, "omnilimit.pause.remaining", "openai") <= 30
    assert value(points, "omnilimit.tokens", "openai", "admitted") == 210
    for limiter in ("slots", "openai", "both"):
        assert value(points, "omnilimit.waiting", limiter) == 0
    # The wait histogram: every wait of the limiter's own histogram, each in the right bucket.
    for limiter, part, native in (
        ("slots", "concurrency", scene.slots),
        ("openai", "rate", scene.rate),
        ("both", "concurrency", scene.both.concurrency),
    ):
        point, attributes = points[("omnilimit.wait.duration", limiter, part)]
        waits = native.wait_histogram()
        assert waits.count >= 1
        assert point.count == waits.count
        assert list(point.explicit_bounds) == list(EXPORT_BOUNDS_S)
        below = [sum(point.bucket_counts[: i + 1]) for i in range(len(EXPORT_BOUNDS_S))]
        assert below == waits.cumulative(EXPORT_BOUNDS_S) or all(
            abs(a - b) <= 1 for a, b in zip(below, waits.cumulative(EXPORT_BOUNDS_S), strict=False)
        )
        assert point.sum == pytest.approx(waits.sum_s, rel=1 / 32, abs=1e-5)
        assert attributes["omnilimit.part"] == part

    # A collection with no new wait adds nothing to the histogram (no wait counted twice).
    before = {k: p.count for k, (p, _) in points.items() if k[0] == "omnilimit.wait.duration"}
    points, _ = collected(reader)
    assert {k: p.count for k, (p, _) in points.items() if k[0] == "omnilimit.wait.duration"} == before

    instrumentation.close()
    points, _ = collected(reader)
    assert not [k for k in points if k[0] != "omnilimit.wait.duration"]  # observable ones observe nothing


def test_the_guide_documents_every_instrument_and_metric():
    """The guide's tables name exactly the instruments and metrics the exporters publish."""
    reader, provider = otel_sdk()
    need("prometheus_client", "prometheus")
    from prometheus_client.parser import text_string_to_metric_families

    from omnilimit.prometheus import collector
    from omnilimit.telemetry import instrument

    scene = Scene()
    instrument(scene.limiters, meter_provider=provider)
    scene.traffic()
    scene.let_go()
    points, _ = collected(reader)
    text = GUIDE.read_text()
    documented = set(re.findall(r"^\| `(omnilimit\.[a-z0-9.]+)`", text, re.M))
    assert documented == {name for name, _, _ in points}
    exposition = exposition_of(collector(scene.limiters))
    families = {family.name for family in text_string_to_metric_families(exposition)}
    documented = set(re.findall(r"^\| `(omnilimit_[a-z0-9_]+)`", text, re.M))
    exported = {f + "_total" if f + "_total" in exposition else f for f in families}
    assert documented == exported


def exposition_of(collector):
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


def test_the_prometheus_exposition_parses_and_holds_the_same_figures():
    need("prometheus_client", "prometheus")
    from prometheus_client.parser import text_string_to_metric_families

    from omnilimit.prometheus import collector

    scene = Scene()
    scene.traffic()
    mine = collector(scene.limiters)
    samples = {}
    for family in text_string_to_metric_families(exposition_of(mine)):
        for sample in family.samples:
            labels = dict(sample.labels)
            extra = labels.pop("result", labels.pop("state", labels.pop("le", None)))
            key = (sample.name, labels.pop("limiter"), extra)
            samples[key] = (sample.value, labels)
    assert samples[("omnilimit_requests_total", "slots", "admitted")][0] == 2
    assert samples[("omnilimit_requests_total", "slots", "denied")][0] == 1
    assert samples[("omnilimit_requests_total", "slots", "timed_out")][0] == 1
    assert samples[("omnilimit_requests_total", "openai", "denied")][0] == 1
    assert samples[("omnilimit_waiting", "slots", None)][0] == 1
    assert samples[("omnilimit_active", "slots", None)][0] == 2
    assert samples[("omnilimit_limit_requests_per_minute", "openai", None)][0] == 60
    assert samples[("omnilimit_limit_tokens_per_minute", "openai", None)][0] == 60_000
    assert samples[("omnilimit_tokens_total", "openai", "admitted")][0] == 200
    assert samples[("omnilimit_tokens_total", "openai", "settled")][0] == 80
    assert samples[("omnilimit_rate_tokens_per_minute", "openai", None)][0] == 80
    _, labels = samples[("omnilimit_waiting", "both", None)]
    assert labels == {"kind": "combined", "backend": "memory", "scope": "process"}
    scene.let_go()
    samples = {}
    for family in text_string_to_metric_families(exposition_of(mine)):
        for sample in family.samples:
            labels = dict(sample.labels)
            samples[(sample.name, labels["limiter"], labels.get("part"), labels.get("le"))] = sample.value
    for limiter, part, native in (("slots", "concurrency", scene.slots), ("openai", "rate", scene.rate)):
        waits = native.wait_histogram()
        assert samples[("omnilimit_wait_seconds_count", limiter, part, None)] == waits.count
        assert samples[("omnilimit_wait_seconds_sum", limiter, part, None)] == pytest.approx(waits.sum_s, abs=1e-6)
        assert samples[("omnilimit_wait_seconds_bucket", limiter, part, "+Inf")] == waits.count
        cumulative = [samples[("omnilimit_wait_seconds_bucket", limiter, part, repr(b))] for b in EXPORT_BOUNDS_S]
        assert cumulative == waits.cumulative(EXPORT_BOUNDS_S)
        assert cumulative == sorted(cumulative)
        assert samples[("omnilimit_wait_p99_seconds", limiter, None, None)] == native.wait_quantile(0.99)


def test_serve_answers_on_its_port_and_closes():
    need("prometheus_client", "prometheus")
    from omnilimit.prometheus import serve

    limiter = RateLimiter(600, provider_name="served")
    limiter.acquire()
    server = serve(limiter, port=0)
    try:
        assert server.url.startswith("http://127.0.0.1:")
        text = urllib.request.urlopen(server.url, timeout=5).read().decode()
        assert 'omnilimit_requests_total{backend="memory",kind="rate",limiter="served",result="admitted"' in text
        with pytest.raises(OSError):
            serve(limiter, port=server.port)  # the port is taken
    finally:
        server.close()
    with pytest.raises(OSError):
        urllib.request.urlopen(server.url, timeout=2)


def test_the_wait_counts_coarsen_exactly_away_from_the_bounds():
    histogram = _core.WaitHistogram()
    waits_s = [0.001, 0.003, 0.003, 0.040, 2.0, 700.0]
    for wait in waits_s:
        histogram.record(round(wait * 1e9))
    counts = WaitCounts.from_native(histogram.buckets())
    assert counts.count == len(waits_s)
    assert counts.sum_s == pytest.approx(sum(waits_s), abs=1e-6)
    assert counts.max_s == 700.0
    bounds = [0.0025, 0.01, 1.0, 120.0]
    assert counts.cumulative(bounds) == [1, 3, 4, 5]
    # A bound inside a bucket takes its share, never more than the waits at or below the bucket.
    inside = counts.cumulative([0.0030])
    assert 1 <= inside[0] <= 3
    for bad in ([1.0, 0.5], [float("nan")], [1.0, 1.0]):
        with pytest.raises(ValueError, match="ascending finite"):
            counts.cumulative(bad)
    empty = WaitCounts.from_native(_core.WaitHistogram().buckets())
    assert empty.count == 0 and empty.cumulative(EXPORT_BOUNDS_S) == [0] * len(EXPORT_BOUNDS_S)


def test_a_wrong_source_is_refused_at_once():
    otel_sdk()
    from omnilimit.telemetry import instrument

    for wrong in (42, "openai", [RateLimiter(60), object()], {"k": None}):
        with pytest.raises(TypeError, match=r"ConcurrencyLimiter, RateLimiter or CombinedLimiter|expected"):
            instrument(wrong)
    with pytest.raises(ValueError, match="two limiters are named 'same'"):
        instrument([RateLimiter(60, provider_name="same"), RateLimiter(60, provider_name="same")])


def test_without_the_packages_the_error_says_which_extra(monkeypatch):
    import omnilimit.prometheus
    import omnilimit.telemetry

    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    monkeypatch.setitem(sys.modules, "opentelemetry.metrics", None)
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.setitem(sys.modules, "prometheus_client.core", None)
    with pytest.raises(ModuleNotFoundError, match=r"omnilimit\[otel\]"):
        omnilimit.telemetry.instrument(RateLimiter(60))
    with pytest.raises(ModuleNotFoundError, match=r"omnilimit\[prometheus\]"):
        omnilimit.prometheus.collector(RateLimiter(60))


def test_a_manager_is_read_at_each_collection(tmp_path):
    reader, provider = otel_sdk()
    from omnilimit import ProviderRateLimitManager
    from omnilimit.telemetry import instrument

    manager = ProviderRateLimitManager.from_config(
        {"providers": {"openai": {"max_concurrent_calls": 3}, "anthropic": {"rate_limit_rpm": 120}}}
    )
    instrument(manager, meter_provider=provider)
    before = {key for (name, key, _) in collected(reader)[0] if name == "omnilimit.requests"}
    assert before == set(manager.limiters) == {"default_openai", "default_anthropic"}
    manager.limiter_for("anthropic").acquire()
    manager.get_limiter("built-later").acquire()  # a limiter the manager builds after instrument()
    points, _ = collected(reader)
    keys = {key for (name, key, _) in points if name == "omnilimit.requests"}
    assert keys == set(manager.limiters) == before | {"built-later"}
    assert value(points, "omnilimit.requests", "default_anthropic", "admitted") == 1
    assert value(points, "omnilimit.requests", "built-later", "admitted") == 1


def test_collection_adds_nothing_to_acquire_and_reads_under_load(tiny_switch_interval):
    """Collections running while 16 threads acquire and release: every admission counted once,
    the histogram never counting a wait twice (its count equals the limiter's at the end)."""
    reader, provider = otel_sdk()
    from omnilimit.telemetry import instrument

    limiter = ConcurrencyLimiter(3, name="busy")
    instrument(limiter, meter_provider=provider)
    stop = threading.Event()
    counts = []

    def work():
        while not stop.is_set():
            with limiter:
                time.sleep(0.0005)

    def collect():
        while not stop.is_set():
            counts.append(collected(reader)[0][("omnilimit.requests", "busy", "admitted")][0].value)

    threads = [start_thread(work) for _ in range(16)] + [start_thread(collect)]
    time.sleep(1.5)
    stop.set()
    for thread in threads:
        thread.join(10)
    points, _ = collected(reader)
    assert counts == sorted(counts) and len(counts) > 3
    assert value(points, "omnilimit.requests", "busy", "admitted") == limiter.total_requests
    assert points[("omnilimit.wait.duration", "busy", "concurrency")][0].count == limiter.wait_histogram().count


def prometheus_samples(limiters):
    need("prometheus_client", "prometheus")
    from prometheus_client.parser import text_string_to_metric_families

    from omnilimit.prometheus import collector

    samples = {}
    for family in text_string_to_metric_families(exposition_of(collector(limiters))):
        for sample in family.samples:
            labels = dict(sample.labels)
            extra = labels.get("result", labels.get("state", labels.get("part")))
            if sample.name.startswith("omnilimit_wait_seconds"):
                continue
            samples[(sample.name, labels["limiter"], extra)] = (sample.value, labels["scope"], labels["backend"])
    return samples


def test_a_shared_segment_exports_every_process_figures_as_the_fleet(unique_name):
    """Another process's admissions and 429 count in this process's export of the same segment
    (scope fleet); a rate limiter's waiting is this process's (scope process)."""
    from helpers import run_children

    name = unique_name[-60:].lstrip("-_.")
    try:
        here = RateLimiter(6000, burst_size=10, provider_name="shared", backend=f"shm://{name}")
        assert here.acquire() and here.acquire()
        run_children(
            1,
            """
            import json, omnilimit
            there = omnilimit.RateLimiter(6000, burst_size=10, provider_name="shared", backend="shm://{name}")
            for _ in range(5):
                there.acquire()
            there.on_rate_limited(retry_after=0.01)
            print(json.dumps(there.total_requests))
            """,
            name=name,
        )
        samples = prometheus_samples([here])
        assert samples[("omnilimit_requests_total", "shared", "admitted")] == (7, "fleet", "shm")
        assert samples[("omnilimit_requests_total", "shared", "rate_limited")] == (1, "fleet", "shm")
        assert samples[("omnilimit_pauses_total", "shared", None)][:2] == (1, "fleet")
        assert samples[("omnilimit_waiting", "shared", None)] == (0, "process", "shm")
    finally:
        _core.remove_shared(name)


def test_a_redis_limiter_exports_the_fleet_where_redis_holds_it(redis_url, unique_name):
    """Two limiters of one name on one server stand for two hosts: the admissions are both
    hosts' (scope fleet), the denials and the wait histogram this one's (scope process)."""
    host_a = RateLimiter(60, burst_size=3, provider_name=unique_name, backend=redis_url)
    host_b = RateLimiter(60, burst_size=3, provider_name=unique_name, backend=redis_url)
    try:
        assert host_a.acquire() and host_b.acquire() and host_b.acquire()
        assert not host_b.acquire(timeout=0)
        assert not host_b.acquire(timeout=0.01)
        samples = prometheus_samples({"a": host_a})
        assert samples[("omnilimit_requests_total", "a", "admitted")] == (3, "fleet", "redis")
        assert samples[("omnilimit_requests_total", "a", "denied")] == (0, "process", "redis")
        assert samples[("omnilimit_requests_total", "a", "timed_out")] == (0, "process", "redis")
        theirs = prometheus_samples({"b": host_b})
        assert theirs[("omnilimit_requests_total", "b", "denied")] == (1, "process", "redis")
        assert theirs[("omnilimit_requests_total", "b", "timed_out")] == (1, "process", "redis")
        assert host_a.get_stats()["blocked_count"] == 2  # Redis's count: every host's refusals
        assert samples[("omnilimit_limit_requests_per_minute", "a", None)][0] == 60
        assert host_a.wait_histogram().count == 1  # its one admission, round trip included
    finally:
        host_a.close()
        host_b.close()


def test_without_the_histogram_the_rest_is_still_observed():
    reader, provider = otel_sdk()
    from omnilimit.telemetry import instrument

    limiter = ConcurrencyLimiter(1, name="lone")
    instrument(limiter, meter_provider=provider, wait_histogram=False)
    limiter.acquire()
    waiter = start_thread(limiter.acquire, 10)
    wait_until(lambda: limiter.waiting == 1)
    limiter.release()
    waiter.join(10)
    points, _ = collected(reader)
    assert value(points, "omnilimit.requests", "lone", "admitted") == 2
    assert limiter.wait_histogram().count == 1
    assert not [k for k in points if k[0] == "omnilimit.wait.duration"]


def tracing():
    need("opentelemetry.sdk.trace")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter, provider


def test_a_wait_longer_than_the_threshold_is_a_span_in_the_caller_context():
    exporter, provider = tracing()
    from omnilimit.telemetry import trace

    slots = ConcurrencyLimiter(1, name="slots")
    rate = RateLimiter(60, burst_size=1, provider_name="paced")
    tracing_handle = trace({"slots": slots, "paced": rate}, tracer_provider=provider, threshold_s=0.05)
    app = provider.get_tracer("app")
    assert rate.acquire()  # the burst: no wait, no span
    slots.acquire()

    def request():
        with app.start_as_current_span("request"):
            assert slots.acquire(timeout=10)
            slots.release()
            assert rate.acquire(timeout=10)  # waits ~0.8 s for its instant (one a second)

    thread = start_thread(request)
    wait_until(lambda: slots.waiting == 1)
    time.sleep(0.2)
    slots.release()
    thread.join(10)
    spans = {
        span.name + ":" + span.attributes.get("omnilimit.limiter", ""): span for span in exporter.get_finished_spans()
    }
    assert set(spans) == {"request:", "omnilimit.wait:slots", "omnilimit.wait:paced"}
    parent = spans["request:"].context.span_id
    for key, limiter, kind, least in (
        ("omnilimit.wait:slots", "slots", "concurrency", 0.2),
        ("omnilimit.wait:paced", "paced", "rate", 0.5),
    ):
        span = spans[key]
        assert span.parent.span_id == parent
        assert dict(span.attributes) | {"omnilimit.wait.seconds": 0} == {
            "omnilimit.limiter": limiter,
            "omnilimit.kind": kind,
            "omnilimit.backend": "memory",
            "omnilimit.part": kind,
            "omnilimit.wait.seconds": 0,
        }
        seconds = span.attributes["omnilimit.wait.seconds"]
        assert least <= seconds < 5
        assert (span.end_time - span.start_time) / 1e9 == pytest.approx(seconds, abs=1e-6)
    tracing_handle.close()
    exporter.clear()
    slots.acquire()
    waiter = start_thread(slots.acquire, 10)
    wait_until(lambda: slots.waiting == 1)
    time.sleep(0.1)
    slots.release()
    waiter.join(10)
    assert exporter.get_finished_spans() == ()  # closed: no span


def test_a_coroutine_wait_is_a_span_of_its_task():
    exporter, provider = tracing()
    import asyncio

    from omnilimit.telemetry import trace

    both = CombinedLimiter(1, 6000, name="both")
    trace(both, tracer_provider=provider, threshold_s=0.01)
    app = provider.get_tracer("app")

    async def main():
        await both.acquire_async()

        async def second():
            with app.start_as_current_span("task"):
                await both.acquire_async(timeout=10)
                both.release()

        task = asyncio.ensure_future(second())
        await asyncio.sleep(0.1)
        both.release()
        await task

    asyncio.run(main())
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert spans["omnilimit.wait"].parent.span_id == spans["task"].context.span_id
    assert spans["omnilimit.wait"].attributes["omnilimit.kind"] == "combined"
    assert spans["omnilimit.wait"].attributes["omnilimit.part"] == "concurrency"


def test_a_wait_hook_that_raises_costs_the_caller_nothing(caplog):
    limiter = ConcurrencyLimiter(1, name="hooked")
    seen = []

    def hook(seconds):
        seen.append(seconds)
        raise RuntimeError("a broken exporter")

    limiter.watch_waits(hook, 0.0)
    limiter.acquire()
    waiter = start_thread(lambda: seen.append(limiter.acquire(timeout=10)))
    wait_until(lambda: limiter.waiting == 1)
    limiter.release()
    waiter.join(10)
    assert len(seen) == 2 and seen[0] > 0 and seen[1] is True  # admitted all the same
    assert limiter.active_calls == 1
    (record,) = [r for r in caplog.records if "wait hook" in r.getMessage()]
    assert "a broken exporter" in record.exc_text and "not logged again" in record.getMessage()
    limiter.release()
    limiter.acquire()
    waiter = start_thread(limiter.acquire, 10)
    wait_until(lambda: limiter.waiting == 1)
    limiter.release()
    waiter.join(10)
    assert len(seen) == 3 and len([r for r in caplog.records if "wait hook" in r.getMessage()]) == 1
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite number of seconds"):
            limiter.watch_waits(hook, bad)


def test_a_traced_limiter_is_still_freed():
    """The hook holds no reference to its limiter (the native core is invisible to the garbage
    collector: a cycle through it would never be freed)."""
    import gc
    import weakref

    _, provider = tracing()
    from omnilimit.telemetry import trace

    limiter = RateLimiter(60, provider_name="gone")
    trace(limiter, tracer_provider=provider)
    watched = weakref.ref(limiter)
    del limiter
    gc.collect()
    assert watched() is None


def test_a_redis_limiter_wait_is_a_span_too(redis_url, unique_name):
    exporter, provider = tracing()
    from omnilimit.telemetry import trace

    limiter = ConcurrencyLimiter(1, name=unique_name, backend=redis_url)
    try:
        trace({"fleet": limiter}, tracer_provider=provider, threshold_s=0.05)
        limiter.acquire()
        waiter = start_thread(limiter.acquire, 10)
        wait_until(lambda: limiter.waiting == 1)
        time.sleep(0.1)
        limiter.release()
        waiter.join(10)
        (span,) = exporter.get_finished_spans()
        assert span.attributes["omnilimit.backend"] == "redis"
        assert span.attributes["omnilimit.wait.seconds"] >= 0.1
    finally:
        limiter.close()
