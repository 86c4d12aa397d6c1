"""pytest-benchmark view of the single-thread sections of ``omnilimit bench`` (1, 2 and 7):

    pip install ".[bench]"
    pytest benchmarks --benchmark-group-by=group --benchmark-columns=min,median,ops

Each group holds omnilimit and every peer for one call form, measured in the same run. The
multi-thread sections (contention, accuracy, GIL, wake-up) are not per-call timings and live in
``omnilimit bench`` only. Nothing here asserts a timing.
"""

from __future__ import annotations

import _thread
from collections.abc import Callable
from typing import Any

import pytest

import omnilimit
from omnilimit_bench import peers
from omnilimit_bench.reference import load_reference
from omnilimit_bench.suite import HUGE, Impls

REFERENCE, ORIGIN = load_reference()
IMPLS = Impls(REFERENCE, ORIGIN, [])
NO_REFERENCE = pytest.mark.skipif(REFERENCE is None, reason=ORIGIN)


def _impl_params(names: list[str]) -> list[Any]:
    return [pytest.param(name, marks=NO_REFERENCE) if name == "reference" else name for name in names]


CONCURRENCY: dict[str, Callable[[int], Any]] = {
    "_thread.lock": lambda n: _thread.allocate_lock(),
    **IMPLS.concurrency(),
}
if REFERENCE is None:
    CONCURRENCY["reference"] = lambda n: None  # listed, and skipped by the mark


@pytest.mark.parametrize("impl", _impl_params(list(CONCURRENCY)))
def test_pair(benchmark: Any, impl: str) -> None:
    benchmark.group = "acquire(); release()"
    lim = CONCURRENCY[impl](4)
    acquire, release = lim.acquire, lim.release

    def pair() -> None:
        acquire()
        release()

    benchmark(pair)


@pytest.mark.parametrize("impl", _impl_params(list(CONCURRENCY)))
def test_pair_with_timeout(benchmark: Any, impl: str) -> None:
    benchmark.group = "acquire(timeout=120); release()"
    lim = CONCURRENCY[impl](4)
    acquire, release = lim.acquire, lim.release

    def pair() -> None:
        acquire(timeout=120)
        release()

    benchmark(pair)


@pytest.mark.parametrize("impl", _impl_params(["omnilimit", "reference"]))
def test_rate_decision(benchmark: Any, impl: str) -> None:
    benchmark.group = "rate decision"
    lim = IMPLS.rate()[impl](HUGE, HUGE)
    acquire = lim.acquire
    benchmark(lambda: acquire(timeout=120))
    if impl == "reference":
        assert lim.blocked_count == 0


DECIDERS, SKIPPED = peers.rate_deciders(HUGE, HUGE)


@pytest.mark.parametrize(
    "index",
    [pytest.param(i, id=d.name) for i, d in enumerate(DECIDERS)]
    + [pytest.param(-1, id=s.name, marks=pytest.mark.skip(reason=s.reason)) for s in SKIPPED],
)
def test_peer_rate_decision(benchmark: Any, index: int) -> None:
    benchmark.group = "rate decision"
    benchmark(DECIDERS[index].decide)


@pytest.mark.parametrize("impl", _impl_params(["omnilimit", "reference"]))
def test_manager_path(benchmark: Any, impl: str) -> None:
    benchmark.group = "get_limiter + acquire + release"
    module: Any = omnilimit if impl == "omnilimit" else REFERENCE
    get_limiter = module.ProviderRateLimitManager().get_limiter
    config = {"name": "openai", "model": "gpt-4o-mini", "max_concurrent_calls": 16}

    def call() -> None:
        limiter = get_limiter(provider_name="openai", provider_config=config, role="text_enhancement")
        limiter.acquire(timeout=120)
        limiter.release()

    benchmark(call)


def teardown_module() -> None:
    for decider in DECIDERS:
        decider.close()
