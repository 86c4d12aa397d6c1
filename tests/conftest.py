"""The fixtures the tests share; the helper functions are in helpers.py."""

import os
import sys
import time

import pytest


@pytest.fixture
def tiny_switch_interval():
    """Makes the interpreter switch threads as often as it can, to shake out races."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(previous)


@pytest.fixture(scope="session")
def redis_url():
    """A running Redis for the whole session: OMNILIMIT_TEST_REDIS_URL if set, else a server
    started here. Tests use names of their own, so they need no flush."""
    url = os.environ.get("OMNILIMIT_TEST_REDIS_URL")
    if url:
        yield url
        return
    from redis_server import RedisServer

    server = RedisServer()
    server.start()
    yield server.url
    server.close()


@pytest.fixture
def redis_server():
    """A Redis server of this test's own, which it may stop and restart (``.stop()``, ``.start()``)."""
    from redis_server import RedisServer

    server = RedisServer()
    server.start()
    yield server
    server.close()


@pytest.fixture
def unique_name(request):
    """A limiter name no other test (or earlier run on the same server) uses."""
    return f"{request.node.name[:60]}-{os.getpid()}-{time.monotonic_ns()}".replace("[", "_").replace("]", "_")


@pytest.fixture
def provider_factory():
    """Starts ``llm_standin.LLMStandIn`` providers (``provider_factory(rpm=..., ...)``: fixed 1-s
    windows and calls of 50-100 ms unless told otherwise); stops them at teardown and checks that
    no thread outlived them."""
    import threading

    from llm_standin import LLMStandIn

    before = set(threading.enumerate())
    started = []

    def start(**settings):
        settings.setdefault("latency_s", (0.05, 0.10))
        settings.setdefault("window", "fixed")
        provider = LLMStandIn(**settings).start()
        started.append(provider)
        return provider

    yield start
    for provider in started:
        provider.stop()
    leaked = [t for t in set(threading.enumerate()) - before if t.is_alive()]
    assert not leaked, f"threads left running after the stand-in stopped: {leaked}"
