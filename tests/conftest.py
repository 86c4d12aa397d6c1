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
