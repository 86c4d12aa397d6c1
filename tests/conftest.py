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


def server_under_test():
    """The server the Redis backend's tests run against: OMNILIMIT_TEST_SERVER, "redis" (the
    default) or "valkey" (`.ci/run` runs those tests a second time with "valkey")."""
    server = os.environ.get("OMNILIMIT_TEST_SERVER", "redis")
    if server not in ("redis", "valkey"):
        raise pytest.UsageError(f"OMNILIMIT_TEST_SERVER must be 'redis' or 'valkey', got {server!r}")
    return server


@pytest.fixture(scope="session")
def redis_url():
    """A running server for the whole session: OMNILIMIT_TEST_REDIS_URL if set, else a server
    (``server_under_test()``) started here. Tests use names of their own, so they need no flush."""
    url = os.environ.get("OMNILIMIT_TEST_REDIS_URL")
    if url:
        yield url
        return
    from redis_server import RedisServer

    server = RedisServer(server=server_under_test())
    server.start()
    yield server.url
    server.close()


@pytest.fixture
def redis_server():
    """A server of this test's own (``server_under_test()``), which it may stop and restart
    (``.stop()``, ``.start()``)."""
    from redis_server import RedisServer

    server = RedisServer(server=server_under_test())
    server.start()
    yield server
    server.close()


def pytest_collection_modifyitems(config, items):
    """Marks ``redis`` every test that needs a Redis-protocol server (it takes one of the fixtures
    above, or names Redis in its id): ``pytest -m redis`` runs them alone."""
    for item in items:
        uses = {"redis_url", "redis_server"} & set(getattr(item, "fixturenames", ()))
        if uses or "redis" in item.nodeid.lower():
            item.add_marker(pytest.mark.redis)


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
