"""Backends that keep a limiter's state outside the process: Redis (``redis_link``, ``redis_rate``,
``redis_concurrency``). The shared-memory backend lives in the native core."""
