"""Prometheus metrics of omnilimit's limiters: ``collector(manager_or_limiters)`` and ``serve()``.

The collector reads the limiters when Prometheus scrapes (``omnilimit.readings``): nothing is
added to ``acquire()``. The wait histogram comes from the native buckets (1/32 of their value
wide), coarsened to ``omnilimit.waits.EXPORT_BOUNDS_S``; its ``_count`` and ``_sum`` are exact
(the sum to the microsecond of each wait). Install ``omnilimit[prometheus]``
(``prometheus-client``). The metrics and their labels: docs/guide/observability.md.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from omnilimit.readings import (
    FIGURES,
    REQUESTS_DESCRIPTION,
    TOKENS_DESCRIPTION,
    WAITS_DESCRIPTION,
    Reading,
    limiters_of,
    optional_module,
    read,
)
from omnilimit.waits import EXPORT_BOUNDS_S

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from prometheus_client.registry import CollectorRegistry

LABELS = ("limiter", "kind", "backend", "scope")


def _client() -> Any:
    return optional_module("prometheus_client.core", "prometheus", "omnilimit.prometheus")


class Collector:
    """A ``prometheus_client`` collector of the limiters' figures: register it
    (``REGISTRY.register(collector(manager))``) or let ``serve()`` do it."""

    def __init__(self, source: object) -> None:
        _client()
        limiters_of(source)  # checks it now
        self._source = source

    def describe(self) -> list[Any]:
        """Nothing up front: the registry then calls ``collect()`` once at registration to check
        the names, and the limiters are read at every scrape."""
        return []

    def collect(self) -> Iterator[Any]:
        core = _client()
        readings = [read(key, limiter) for key, limiter in limiters_of(self._source).items()]

        def family(kind: Any, name: str, documentation: str, extra: tuple[str, ...] = (), **unit: str) -> Any:
            return kind(name, documentation, labels=(*LABELS, *extra), **unit)

        requests = family(core.CounterMetricFamily, "omnilimit_requests", REQUESTS_DESCRIPTION, ("result",))
        tokens = family(core.CounterMetricFamily, "omnilimit_tokens", TOKENS_DESCRIPTION, ("state",))
        kinds = {
            "counter": core.CounterMetricFamily,
            "up_down_counter": core.GaugeMetricFamily,
            "gauge": core.GaugeMetricFamily,
        }
        singles = {
            figure.field: family(kinds[figure.instrument], figure.prometheus, figure.description) for figure in FIGURES
        }
        waits = family(core.HistogramMetricFamily, "omnilimit_wait_seconds", WAITS_DESCRIPTION, ("part",))
        for reading in readings:
            for result, count in reading.requests.items():
                requests.add_metric([*_labels(reading, result), result], count)
            for state, value in (("admitted", reading.tokens_admitted), ("settled", reading.tokens_settled)):
                if value is not None:
                    tokens.add_metric([*_labels(reading, "tokens"), state], value)
            for name, single in singles.items():
                value = getattr(reading, name)
                if value is not None:
                    single.add_metric(_labels(reading, name), value)
            for part, counts in reading.waits.items():
                cumulative = counts.cumulative(EXPORT_BOUNDS_S)
                buckets = [(_bound(bound), float(n)) for bound, n in zip(EXPORT_BOUNDS_S, cumulative, strict=False)]
                buckets.append(("+Inf", float(counts.count)))
                waits.add_metric([*_labels(reading, "waits"), part], buckets, counts.sum_s)
        yield requests
        yield tokens
        yield from singles.values()
        yield waits


def _labels(reading: Reading, figure: str) -> list[str]:
    return [reading.key, reading.kind, reading.backend, reading.scope(figure)]


def _bound(seconds: float) -> str:
    return repr(float(seconds))


def collector(manager_or_limiters: object) -> Collector:
    """A collector of the limiters of ``manager_or_limiters``: a ``ProviderRateLimitManager``
    (every limiter it has at each scrape), a limiter, an iterable of limiters (keyed by their
    names) or a mapping ``{key: limiter}``. Not registered: ``REGISTRY.register(...)`` it. Raises
    ModuleNotFoundError without ``prometheus-client``, TypeError / ValueError for a wrong source."""
    return Collector(manager_or_limiters)


class Server:
    """What ``serve()`` started: ``url`` (the metrics' address), ``registry``, ``close()``."""

    def __init__(self, server: WSGIServer, thread: threading.Thread, registry: CollectorRegistry) -> None:
        self._server = server
        self._thread = thread
        self.registry = registry
        host, port = server.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else str(host)
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}/metrics"
        self.port = int(port)

    def close(self) -> None:
        """Stops serving and closes the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def serve(manager_or_limiters: object, port: int = 9464, addr: str = "127.0.0.1") -> Server:
    """Serves the limiters' metrics at ``http://addr:port/metrics`` from a daemon thread, for a
    program without an HTTP server of its own (0: a free port, in ``Server.port``). ``addr``
    defaults to loopback: pass ``"0.0.0.0"`` for a Prometheus on another host. Raises OSError when
    the port is taken."""
    _client()
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    registry.register(collector(manager_or_limiters))
    server, thread = start_http_server(port, addr=addr, registry=registry)
    return Server(server, thread, registry)


__all__ = ["Collector", "Server", "collector", "serve"]
