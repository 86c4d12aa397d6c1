"""OpenTelemetry metrics of omnilimit's limiters: ``instrument(manager_or_limiters)``.

Every instrument but one is observable: the SDK calls back at collection time and the callback
reads the counters the limiters keep anyway (``omnilimit.readings``), so ``acquire()`` does no more
work with telemetry than without. The wait histogram is the exception OpenTelemetry's API imposes
(it has no observable histogram): at each collection the waits counted since the last one are
recorded into a ``Histogram`` instrument, one record per wait, at the middle of the native bucket
that holds it (buckets 1/32 of their value wide: the sum is within 1.6 % of the true one).

Install ``omnilimit[otel]`` (``opentelemetry-api``); the application configures the SDK and its
exporters as usual. The instruments, their units and attributes: docs/guide/observability.md.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from omnilimit.combined import CombinedLimiter
from omnilimit.concurrency import ConcurrencyLimiter
from omnilimit.rate import RateLimiter
from omnilimit.readings import (
    FIGURES,
    REQUESTS_DESCRIPTION,
    RESULTS,
    TOKENS_DESCRIPTION,
    WAITS_DESCRIPTION,
    Reading,
    backend_of,
    limiters_of,
    optional_module,
    read,
)
from omnilimit.waits import EXPORT_BOUNDS_S, WaitCounts

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Histogram, MeterProvider, Observation
    from opentelemetry.trace import Tracer, TracerProvider

METER_NAME = "omnilimit"


def _otel() -> Any:
    return optional_module("opentelemetry.metrics", "otel", "omnilimit.telemetry")


@dataclass
class _Fed:
    """What was already recorded into the histogram for one (limiter, part)."""

    limiter_id: int
    counts: dict[float, int] = field(default_factory=dict)  # by the bucket's lower edge (fixed; the upper
    # edge of the bucket holding the maximum moves with it)


class Instrumentation:
    """The instruments ``instrument()`` registered. ``close()`` stops them reporting (the
    OpenTelemetry API cannot unregister an instrument: its callbacks then observe nothing)."""

    def __init__(self, source: object, meter_provider: MeterProvider | None, wait_histogram: bool = True) -> None:
        metrics = _otel()
        limiters_of(source)  # checks it now: a wrong argument fails here, not at the first collection
        from importlib.metadata import version

        self._source = source
        self._lock = threading.Lock()
        self._readings: list[Reading] = []
        self._fed: dict[tuple[str, str], _Fed] = {}
        self._closed = False
        self._feeds_histogram = wait_histogram
        provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
        meter = provider.get_meter(METER_NAME, version("omnilimit"))
        self._histogram: Histogram = meter.create_histogram(
            "omnilimit.wait.duration",
            unit="s",
            description=WAITS_DESCRIPTION,
            explicit_bucket_boundaries_advisory=list(EXPORT_BOUNDS_S),
        )
        # The first callback of a collection reads every limiter (and feeds the histogram); the
        # others, called next by the SDK in registration order, report from that reading.
        meter.create_observable_counter(
            "omnilimit.requests", [self._collect_requests], unit="{request}", description=REQUESTS_DESCRIPTION
        )
        makers = {
            "counter": meter.create_observable_counter,
            "up_down_counter": meter.create_observable_up_down_counter,
            "gauge": meter.create_observable_gauge,
        }
        for figure in FIGURES:
            if figure.otel is not None:
                makers[figure.instrument](
                    figure.otel, [self._observe(figure.field)], unit=figure.unit, description=figure.description
                )
        meter.create_observable_counter(
            "omnilimit.tokens", [self._observe_tokens], unit="{token}", description=TOKENS_DESCRIPTION
        )

    def close(self) -> None:
        """Stops reporting: the callbacks observe nothing from now on."""
        with self._lock:
            self._closed = True
            self._readings = []

    # --- the callbacks ---------------------------------------------------------------------------

    def _collect_requests(self, options: CallbackOptions) -> Iterable[Observation]:
        metrics = _otel()
        with self._lock:
            if self._closed:
                return []
            limiters = limiters_of(self._source)
            self._readings = [read(key, limiter) for key, limiter in limiters.items()]
            for reading in self._readings if self._feeds_histogram else ():
                limiter_id = id(limiters[reading.key])
                for part, waits in reading.waits.items():
                    self._feed(reading, part, waits, limiter_id)
            readings = self._readings
        return [
            metrics.Observation(count, {**_attributes(reading, result), "omnilimit.result": result})
            for reading in readings
            for result, count in reading.requests.items()
        ]

    def _observe(self, name: str) -> Any:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            metrics = _otel()
            with self._lock:
                readings = self._readings
            observations = []
            for reading in readings:
                value = getattr(reading, name)
                if value is not None:
                    observations.append(metrics.Observation(value, _attributes(reading, name)))
            return observations

        return callback

    def _observe_tokens(self, options: CallbackOptions) -> Iterable[Observation]:
        metrics = _otel()
        with self._lock:
            readings = self._readings
        observations = []
        for reading in readings:
            for state, value in (("admitted", reading.tokens_admitted), ("settled", reading.tokens_settled)):
                if value is not None:
                    attributes = {**_attributes(reading, "tokens"), "omnilimit.tokens.state": state}
                    observations.append(metrics.Observation(value, attributes))
        return observations

    def _feed(self, reading: Reading, part: str, waits: WaitCounts, limiter_id: int) -> None:
        """Records into the histogram the waits counted since the last collection."""
        fed = self._fed.get((reading.key, part))
        if fed is None or fed.limiter_id != limiter_id:  # new, or another limiter under this key now
            fed = self._fed[(reading.key, part)] = _Fed(limiter_id)
        attributes = {**_attributes(reading, "waits"), "omnilimit.part": part}
        for lower, upper, count in waits.buckets:
            new = count - fed.counts.get(lower, 0)
            if new <= 0:
                continue
            fed.counts[lower] = count
            middle = (lower + upper) / 2
            for _ in range(new):
                self._histogram.record(middle, attributes)


def _attributes(reading: Reading, figure: str) -> dict[str, str]:
    return {
        "omnilimit.limiter": reading.key,
        "omnilimit.kind": reading.kind,
        "omnilimit.backend": reading.backend,
        "omnilimit.scope": reading.scope(figure),
    }


class Tracing:
    """The wait hooks ``trace()`` set; ``close()`` removes them."""

    def __init__(self, source: object, tracer_provider: TracerProvider | None, threshold_s: float) -> None:
        from importlib.metadata import version

        otel_trace = optional_module("opentelemetry.trace", "otel", "omnilimit.telemetry")
        if not (isinstance(threshold_s, (int, float)) and math.isfinite(threshold_s) and threshold_s >= 0):
            raise ValueError(f"threshold_s must be a finite number of seconds >= 0, got {threshold_s!r}")
        tracer = otel_trace.get_tracer(METER_NAME, version("omnilimit"), tracer_provider=tracer_provider)
        self._parts: list[Any] = []
        for key, limiter in limiters_of(source).items():
            reading_kind = "combined" if isinstance(limiter, CombinedLimiter) else None
            parts: list[tuple[str, ConcurrencyLimiter | RateLimiter]] = (
                [("concurrency", limiter.concurrency), ("rate", limiter.rate)]
                if isinstance(limiter, CombinedLimiter)
                else [("rate" if isinstance(limiter, RateLimiter) else "concurrency", limiter)]
            )
            for part, native in parts:
                attributes = {
                    "omnilimit.limiter": key,
                    "omnilimit.kind": reading_kind or part,
                    "omnilimit.backend": backend_of(native),
                    "omnilimit.part": part,
                }
                native.watch_waits(_span_maker(tracer, attributes), threshold_s)
                self._parts.append(native)

    def close(self) -> None:
        """Removes the hooks: no span from now on."""
        for native in self._parts:
            native.watch_waits(None)
        self._parts = []


def _span_maker(tracer: Tracer, attributes: dict[str, str]) -> Callable[[float], None]:
    """The hook of one limiter part: a span ``omnilimit.wait`` that ends now and began ``seconds``
    ago, in the caller's context (a child of the span the caller is in). It holds no reference to
    the limiter."""

    def made(seconds: float) -> None:
        end = time.time_ns()
        span = tracer.start_span(
            "omnilimit.wait",
            start_time=end - round(seconds * 1e9),
            attributes={**attributes, "omnilimit.wait.seconds": seconds},
        )
        span.end(end_time=end)

    return made


def trace(
    manager_or_limiters: object, tracer_provider: TracerProvider | None = None, *, threshold_s: float = 0.1
) -> Tracing:
    """A span ``omnilimit.wait`` for each admitted caller that waited at least ``threshold_s``
    seconds, made when it is admitted, in its thread (or task) and context: a child of the span it
    is in, with the limiter's attributes and the wait (``omnilimit.wait.seconds``). For the
    limiters of ``manager_or_limiters`` now (a manager's limiters built later are not traced: call
    ``trace()`` again). Callers that did not wait cost nothing. Raises ModuleNotFoundError without
    ``opentelemetry-api``, ValueError for a bad threshold, TypeError / ValueError for a wrong
    source."""
    return Tracing(manager_or_limiters, tracer_provider, threshold_s)


def instrument(
    manager_or_limiters: object, meter_provider: MeterProvider | None = None, *, wait_histogram: bool = True
) -> Instrumentation:
    """Registers omnilimit's instruments on ``meter_provider`` (default: the global one) for the
    limiters of ``manager_or_limiters``: a ``ProviderRateLimitManager`` (every limiter it has at
    each collection, those it builds later included), a limiter, an iterable of limiters (keyed by
    their names) or a mapping ``{key: limiter}``. Returns the ``Instrumentation`` (``close()``
    stops it). ``wait_histogram=False`` leaves ``omnilimit.wait.duration`` empty: feeding it costs
    the collecting thread about 9 µs per wait since the last collection (the API records one value
    at a time). Raises ModuleNotFoundError without ``opentelemetry-api``, TypeError / ValueError for
    a wrong source."""
    return Instrumentation(manager_or_limiters, meter_provider, wait_histogram)


__all__ = ["RESULTS", "Instrumentation", "Tracing", "instrument", "trace"]
