"""A ``redis.asyncio`` client as the backend: coroutines await their round trips on their own loop
(no executor thread), threads use a synchronous twin with the same connection settings, and both
share one limit. Against a real redis-server (and Valkey: ``OMNILIMIT_TEST_SERVER=valkey``)."""

import asyncio
import concurrent.futures
import time

import pytest
from helpers import need, start_thread

from omnilimit import CombinedLimiter, ConcurrencyLimiter, RateLimiter

need("redis")
aioredis = need("redis.asyncio")


class NoExecutor(concurrent.futures.ThreadPoolExecutor):
    """A loop's default executor that counts what is submitted to it and runs nothing."""

    def __init__(self):
        super().__init__(1)
        self.submitted = []

    def submit(self, fn, /, *args, **kwargs):
        self.submitted.append(getattr(fn, "__qualname__", repr(fn)))
        raise RuntimeError("a coroutine used the loop's default executor")


def run(url, body):
    """Runs ``body(client)`` on a new loop with a redis.asyncio client of the test server, the
    loop's default executor refusing everything: (its result, what was submitted to the executor)."""

    async def main():
        refusing = NoExecutor()
        asyncio.get_running_loop().set_default_executor(refusing)
        client = aioredis.Redis.from_url(url, socket_timeout=0.25, socket_connect_timeout=0.25)
        try:
            return await body(client), refusing.submitted
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_coroutines_wait_in_line_on_the_loop_and_share_the_slots_with_threads(redis_url, unique_name):
    """ConcurrencyLimiter(1): a thread (on the twin) holds the slot; 20 coroutines queue through
    the asyncio client and each gets it in turn, none in the executor; at most one holder ever."""
    held = []

    async def body(client):
        limiter = ConcurrencyLimiter(1, unique_name, backend=client)
        assert limiter.acquire(timeout=0)  # a thread of this process: the synchronous twin
        release_later = start_thread(lambda: (time.sleep(0.3), limiter.release()))

        async def one():
            async with limiter:
                held.append(limiter.get_stats()["active_calls"])
                await asyncio.sleep(0.01)

        await asyncio.gather(*(one() for _ in range(20)))
        release_later.join()
        return limiter.get_stats()

    stats, submitted = run(redis_url, body)
    assert submitted == []
    assert held == [1] * 20 and stats["active_calls"] == 0 and stats["total_requests"] == 21


def test_coroutines_book_their_instants_on_the_loop(redis_url, unique_name):
    """A 600-RPM RateLimiter (burst 1): 10 coroutines get 10 instants 100 ms apart, none in the
    executor, and a thread of the same process shares the bucket."""
    went = []

    async def body(client):
        limiter = RateLimiter(600, provider_name=unique_name, backend=client)
        assert limiter.acquire(timeout=0)  # the twin took the first instant

        async def one():
            assert await limiter.acquire_async(timeout=5)
            went.append(time.monotonic())

        await asyncio.gather(*(one() for _ in range(10)))
        return limiter.get_stats()

    stats, submitted = run(redis_url, body)
    assert submitted == []
    assert stats["total_requests"] == 11
    went.sort()
    assert 0.8 <= went[-1] - went[0] <= 1.5  # nine intervals of 0.1 s, not a burst


def test_coroutines_take_tokens_in_one_line_on_the_loop(redis_url, unique_name):
    """A token budget of 6,000 TPM (100 a second) with a burst of 100: 4 coroutines of 100 tokens
    each wait in the line (through the loop) and go about 1 s apart."""
    went = []

    async def body(client):
        limiter = RateLimiter(6000, provider_name=unique_name, backend=client, tokens_per_minute=6000, token_burst=100)

        async def one():
            assert await limiter.acquire_async(tokens=100, timeout=10)
            went.append(time.monotonic())

        await asyncio.gather(*(one() for _ in range(4)))
        return limiter.get_stats()

    stats, submitted = run(redis_url, body)
    assert submitted == []
    assert stats["current_tpm"] == 400 and stats["total_requests"] == 4
    went.sort()
    assert 2.7 <= went[-1] - went[0] <= 4.0  # 100 tokens a second: three more seconds after the first


def test_a_coroutine_cancelled_in_line_leaves_it(redis_url, unique_name):
    async def body(client):
        limiter = ConcurrencyLimiter(1, unique_name, backend=client)
        assert await limiter.acquire_async(timeout=0)
        waiting = asyncio.ensure_future(limiter.acquire_async(timeout=30))
        for _ in range(500):
            await asyncio.sleep(0.01)
            if limiter.metrics()["waiting_everywhere"] == 1:
                break
        assert limiter.metrics()["waiting_everywhere"] == 1
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        left = limiter.metrics()["waiting_everywhere"]
        limiter.release()
        return left, limiter.get_stats()

    (left, stats), submitted = run(redis_url, body)
    assert submitted == []
    assert left == 0 and stats["active_calls"] == 0


def test_the_outage_policy_answers_coroutines_on_the_asyncio_client(redis_server, unique_name):
    """Redis stopped: a coroutine waits for it until its timeout, then is denied (closed); Redis
    back: the next coroutine goes."""

    async def body(client):
        limiter = RateLimiter(6000, provider_name=unique_name, backend=client)
        assert await limiter.acquire_async(timeout=0)
        redis_server.stop()
        started = time.monotonic()
        denied = await limiter.acquire_async(timeout=0.3)
        waited = time.monotonic() - started
        redis_server.start()
        back = await limiter.acquire_async(timeout=5)
        return denied, waited, back, limiter.metrics()["outage_denied"]

    (denied, waited, back, outage_denied), submitted = run(redis_server.url, body)
    assert submitted == []
    assert denied is False and 0.25 <= waited < 2.0 and back and outage_denied == 1


def test_a_combined_limiter_takes_an_asyncio_client(redis_url, unique_name):
    """CombinedLimiter(2 slots, 600 RPM) on one redis.asyncio client: coroutines never hold more
    than two slots."""
    peak = []

    async def body(client):
        limiter = CombinedLimiter(2, 6000, name=unique_name, backend=client)
        inside = 0

        async def one():
            nonlocal inside
            async with limiter:
                inside += 1
                peak.append(inside)
                await asyncio.sleep(0.02)
                inside -= 1

        await asyncio.gather(*(one() for _ in range(10)))
        return limiter.get_stats()

    loop_stats = asyncio.run(_with_client(redis_url, body))
    assert max(peak) == 2 and len(peak) == 10
    assert loop_stats["active_calls"] == 0 and loop_stats["total_requests"] == 10


async def _with_client(url, body):
    client = aioredis.Redis.from_url(url)
    try:
        return await body(client)
    finally:
        await client.aclose()


def test_the_twin_has_the_clients_connection_settings(redis_url, unique_name):
    """The synchronous twin of an asyncio client reaches the same database with the same
    credentials and decoding: a thread's and a coroutine's figures are one."""
    from omnilimit.backends.redis_clients import synchronous_twin

    async def body():
        client = aioredis.Redis.from_url(redis_url, decode_responses=True, client_name="omnilimit-test")
        twin = synchronous_twin(client)
        kwargs = twin.connection_pool.connection_kwargs
        limiter = RateLimiter(60, provider_name=unique_name, backend=client)
        assert await limiter.acquire_async(timeout=0)
        seen_by_threads = limiter.get_stats()["total_requests"]  # read on the twin
        await client.aclose()
        return kwargs, seen_by_threads, client.connection_pool.connection_kwargs

    kwargs, seen, original = asyncio.run(body())
    for name in ("host", "port", "db", "decode_responses", "client_name"):
        assert kwargs.get(name) == original.get(name)
    assert seen == 1


def test_an_asyncio_client_whose_connections_cannot_be_reproduced_is_refused():
    class OwnConnection(aioredis.Connection):
        pass

    async def body():
        pool = aioredis.ConnectionPool(connection_class=OwnConnection, host="127.0.0.1", port=1)
        client = aioredis.Redis(connection_pool=pool)
        with pytest.raises(TypeError, match=r"cannot open synchronous connections.*pass a URL or a redis\.Redis"):
            RateLimiter(60, backend=client)
        await client.aclose()

    asyncio.run(body())


def test_an_asyncio_cluster_client(unique_name):
    """A redis.asyncio RedisCluster: coroutines book on it (no executor), threads on its
    synchronous twin (a RedisCluster of the same nodes): one bucket."""
    from redis_server import RedisClusterOfThree

    cluster = RedisClusterOfThree()
    try:
        cluster.start()
        url = cluster.url.replace("+cluster", "")

        async def main():
            refusing = NoExecutor()
            asyncio.get_running_loop().set_default_executor(refusing)
            client = aioredis.RedisCluster.from_url(url)
            try:
                limiter = RateLimiter(60, provider_name=unique_name, backend=client)
                assert type(limiter.store._link.client).__name__ == "RedisCluster"
                took = await limiter.acquire_async(timeout=0)
                again = limiter.acquire(timeout=0)  # a thread's look, on the twin: the same bucket
                return took, again, limiter.get_stats()["total_requests"], refusing.submitted
            finally:
                await client.aclose()

        took, again, total, submitted = asyncio.run(main())
        assert took and again is False and total == 1 and submitted == []
    finally:
        cluster.close()


def test_hundreds_of_coroutines_share_a_few_connections(redis_url, unique_name):
    """200 coroutines take a turn at once through a client whose pool holds IN_FLIGHT + 1
    connections (redis-py raises MaxConnectionsError beyond): every one goes, with no outage."""
    from omnilimit.backends.redis_link import IN_FLIGHT

    async def body(client):
        limiter = RateLimiter(10_000_000, provider_name=unique_name, backend=client, burst_size=1000)
        took = await asyncio.gather(*(limiter.acquire_async(timeout=10) for _ in range(200)))
        return took, limiter.metrics()

    async def main():
        pool = aioredis.BlockingConnectionPool.from_url(redis_url, max_connections=IN_FLIGHT + 1, timeout=0.001)
        client = aioredis.Redis(connection_pool=pool)
        try:
            return await body(client)
        finally:
            await client.aclose()
            await pool.disconnect()  # a pool given to the client is not the client's to close

    took, metrics = asyncio.run(main())
    assert all(took) and len(took) == 200
    assert metrics["backend_outages"] == 0


def test_the_gate_serves_in_order_and_passes_on_a_place_handed_to_a_cancelled_waiter():
    from omnilimit.backends.redis_link import Gate

    async def main():
        gate = Gate(1)
        order = []

        async def holder(i, hold=None):
            async with gate:
                order.append(i)
                if hold is not None:
                    await hold

        first_done = asyncio.get_running_loop().create_future()
        first = asyncio.ensure_future(holder(0, first_done))
        await asyncio.sleep(0)
        waiters = [asyncio.ensure_future(holder(i)) for i in (1, 2, 3)]
        await asyncio.sleep(0)
        first_done.set_result(None)  # the place is handed to waiter 1 ...
        waiters[0].cancel()  # ... which is cancelled before it runs: it passes the place on
        await first
        await asyncio.gather(*waiters, return_exceptions=True)
        return order, waiters[0].cancelled()

    order, cancelled = asyncio.run(main())
    assert order == [0, 2, 3] and cancelled
