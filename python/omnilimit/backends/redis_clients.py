"""The redis-py clients of one limiter: a synchronous one for threads, and a ``redis.asyncio``
one for coroutines when the user gave one.

A limiter's backend is a URL, a synchronous client (``redis.Redis``, ``RedisCluster``) or a
``redis.asyncio`` client (``redis.asyncio.Redis``, ``redis.asyncio.cluster.RedisCluster``):

- a URL or a synchronous client: every round trip is made on the synchronous client; a coroutine's
  runs in its loop's default executor;
- a ``redis.asyncio`` client: a coroutine awaits each of its round trips on that client, on its
  own loop (no executor thread); threads, and the limiter's own threads (the subscriber to its
  channel, the heartbeats and lease renewals), use a synchronous *twin*: a client of its own with
  the same connection settings (host and port or socket path, database, credentials, TLS, client
  name, timeouts, decoding). A client whose connections cannot be reproduced so (a Sentinel pool,
  a custom connection class) is refused with a TypeError that says what to pass instead.

A ``redis.asyncio`` client belongs to the event loop it connects on, as redis-py has it: the
coroutines that use the limiter must run on that loop.
"""

from __future__ import annotations

from typing import Any

from omnilimit._shown import redact, shown
from omnilimit.spec import _is_client, check_url

# For clients made from a URL. A round trip on loopback or a LAN takes well under a millisecond; a
# server that takes longer than this is hung (stopped, swapping, a long script): the call counts as
# an outage, and the policy answers the callers until a probe gets through.
CONNECT_TIMEOUT_S = 0.25
SOCKET_TIMEOUT_S = 0.25

# What a twin takes from its client's connection settings: where, who, how (never a pool's or a
# connection's own objects: retries, event handlers and the like are of one library side).
_WHERE_AND_WHO = (
    "host",
    "port",
    "path",
    "db",
    "username",
    "password",
    "credential_provider",
    "client_name",
    "socket_timeout",
    "socket_connect_timeout",
    "socket_keepalive",
    "encoding",
    "encoding_errors",
    "decode_responses",
    "protocol",
)
_TLS = (
    "ssl_keyfile",
    "ssl_certfile",
    "ssl_cert_reqs",
    "ssl_ca_certs",
    "ssl_ca_data",
    "ssl_check_hostname",
    "ssl_min_version",
    "ssl_ciphers",
)
_CONNECTIONS = ("Connection", "SSLConnection", "UnixDomainSocketConnection")
_POOLS = ("ConnectionPool", "BlockingConnectionPool")


def import_redis() -> Any:
    try:
        import redis
    except ImportError:
        raise ImportError(
            "a Redis backend needs redis-py: pip install 'omnilimit[redis]' (or pip install redis)"
        ) from None
    return redis


def is_asyncio(client: object) -> bool:
    return type(client).__module__.startswith("redis.asyncio")


def clients_for(backend: object) -> tuple[Any, Any, str]:
    """(the synchronous client, the ``redis.asyncio`` client or None, a description without
    secrets) for a URL or a client object. TypeError for anything else, or for a ``redis.asyncio``
    client whose connections cannot be reproduced."""
    if not isinstance(backend, str):
        if not _is_client(backend):
            raise TypeError(
                "backend must be a URL or a redis-py client (redis.Redis, RedisCluster, or their redis.asyncio "
                f"forms), got {shown(backend)}"
            )
        if is_asyncio(backend):
            return synchronous_twin(backend), backend, f"a redis.asyncio {type(backend).__name__} client"
        return backend, None, f"a {type(backend).__name__} client"
    redis = import_redis()
    url = check_url(backend)
    options: dict[str, Any] = {
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "socket_timeout": SOCKET_TIMEOUT_S,
        # One immediate retry on a fresh connection (a pooled connection the server closed, as on a
        # restart), not after a timeout (a hung server would cost a caller twice): an outage then
        # fails fast and the limiter's policy takes over.
        "retry": redis.retry.Retry(redis.backoff.NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,)),
    }
    if "+cluster://" in url:
        from redis.cluster import RedisCluster

        plain = url.replace("+cluster://", "://", 1)
        return RedisCluster.from_url(plain, **options), None, redact(url)
    return redis.Redis.from_url(url, **options), None, redact(url)


def synchronous_twin(client: Any) -> Any:
    """A ``redis.Redis`` (or ``RedisCluster``) with the connection settings of the
    ``redis.asyncio`` ``client``. TypeError when they cannot be reproduced."""
    redis = import_redis()
    if type(client).__name__ == "RedisCluster":
        from redis import cluster

        node: Any = cluster.ClusterNode  # untyped in redis-py
        known = client.get_nodes() or list(client.nodes_manager.startup_nodes.values())
        nodes = [node(known_node.host, known_node.port) for known_node in known]
        settings = _settings(client.connection_kwargs, tls=bool(client.connection_kwargs.get("ssl")))
        if client.connection_kwargs.get("ssl"):
            settings["ssl"] = True
        settings.pop("db", None)  # a cluster has database 0 only
        return cluster.RedisCluster(startup_nodes=nodes, **settings)
    pool = client.connection_pool
    connection = pool.connection_class.__name__
    if type(pool).__name__ not in _POOLS or connection not in _CONNECTIONS or not _from_redis(pool.connection_class):
        raise TypeError(
            f"omnilimit cannot open synchronous connections like those of this redis.asyncio client (a "
            f"{type(pool).__name__} of {connection}): pass a URL or a redis.Redis client instead (coroutines then "
            "make their round trips in the loop's default executor)"
        )
    settings = _settings(pool.connection_kwargs, tls=connection == "SSLConnection")
    made = redis.ConnectionPool(connection_class=getattr(redis.connection, connection), **settings)
    return redis.Redis(connection_pool=made)


def _from_redis(connection_class: type) -> bool:
    return connection_class.__module__ in ("redis.asyncio.connection", "redis.connection")


def _settings(kwargs: dict[str, Any], tls: bool) -> dict[str, Any]:
    names = _WHERE_AND_WHO + (_TLS if tls else ())
    return {name: kwargs[name] for name in names if name in kwargs}
