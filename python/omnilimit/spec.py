"""What a limiter's settings may be, checked without any limiter, store or client library.

The limits' bounds (``MAX_CONCURRENT``, ``DEFAULT_BURST``), the forms of the ``backend`` argument
(``memory``, ``shm``, ``shm://NAME``, a Redis URL or client), the names of shared segments and
the values of the Redis-only options (``on_backend_error``, ``local_fraction``,
``lease_seconds``). The configuration reads them to check a file, the limiters to check their
arguments, the stores to name what they share: each rule is written here once.
"""

from __future__ import annotations

import hashlib
import math
import re
import urllib.parse
from typing import Any

from omnilimit._shown import shown

MAX_CONCURRENT = 2**31 - 1
"""The largest ``max_concurrent`` (the semaphore counts in a signed 32-bit word)."""

DEFAULT_BURST = 1
"""The default ``burst_size`` and ``token_burst``: strict pacing.

Providers enforce per-minute limits over short slices (OpenAI: a 600-RPM limit may be enforced as
10 requests per second). A bucket of burst b that refills at the limit lets ``b - 1`` calls more
than the slice's share through within one slice: a fresh limiter, or one back from idle, would
meet 429s at once. With a burst of 1 no second holds more than the rate's share (plus the last
call's tokens, for a token budget); the long-run throughput is the same. Pass ``burst_size`` /
``token_burst`` for a provider that accepts bursts."""

SCHEMES = ("redis://", "rediss://", "redis+cluster://", "rediss+cluster://")
"""The URL schemes of a Redis backend."""
POLICIES = ("closed", "open", "local")
"""The values of ``on_backend_error``: what a Redis limiter does while Redis is unreachable."""

_VALID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}")


def shared_name(backend: object, default: str) -> str | None:
    """The shared-memory name a ``backend`` asks for: None for in-process (``None`` or
    ``"memory"``), ``default`` for ``"shm"``, NAME for ``"shm://NAME"``. Raises ValueError for
    anything else."""
    if backend is None or backend == "memory":
        return None
    if not isinstance(backend, str):
        raise ValueError(
            f"backend must be 'memory', 'shm', 'shm://NAME' or a Redis URL or client, got {shown(backend)}"
        )
    if backend == "shm":
        if not default:  # an empty name would mean "in-process": each process alone, silently
            raise ValueError(
                "backend 'shm' names the segment after the limiter, whose name is empty: give it a name, or use "
                "backend='shm://NAME'"
            )
        return default
    if backend.startswith("shm://") and len(backend) > len("shm://"):
        return backend[len("shm://") :]
    raise ValueError(f"backend must be 'memory', 'shm', 'shm://NAME' or a Redis URL or client, got {shown(backend)}")


def valid_name(name: str) -> bool:
    """A segment name: 1-200 characters from ``A-Z a-z 0-9 . _ -``, not starting with a dot."""
    return _VALID.fullmatch(name) is not None


def name_for_key(key: str) -> str:
    """The segment name of a manager's limiter key: the key itself when it is a valid name, else
    the key with other characters replaced by ``_`` and a short hash of it appended (a model name
    such as ``anthropic/claude-3.5-sonnet`` holds a slash), the same in every process."""
    if valid_name(key):
        return key
    digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:8]
    return re.sub(r"[^A-Za-z0-9._-]", "_", key).lstrip(".")[:190] + "-" + digest


def check_backend(value: object) -> str:
    """A ``rate_limit_backend`` value: ``memory``, ``shm``, ``shm://NAME`` (NAME valid) or a Redis
    URL (``redis://``, ``rediss://``, ``redis+cluster://``, ``rediss+cluster://``). Returns it;
    raises ValueError with what is allowed."""
    if value in ("memory", "shm"):
        return str(value)
    if isinstance(value, str) and value.startswith("shm://") and valid_name(value[len("shm://") :]):
        return value
    if isinstance(value, str) and value.startswith(SCHEMES):
        return check_url(value)
    raise ValueError(
        "must be 'memory', 'shm', 'shm://NAME' (NAME: 1-200 of A-Z a-z 0-9 . _ -, no leading dot) or a Redis URL "
        "(redis://host:port/db, rediss://, redis+cluster://)"
    )


def is_redis(backend: object) -> bool:
    """Whether a ``backend`` argument asks for Redis: a URL with a Redis scheme, or a client."""
    if isinstance(backend, str):
        return backend.startswith(SCHEMES)
    return _is_client(backend)


def _is_client(value: object) -> bool:
    module = type(value).__module__
    return module.startswith("redis.") and hasattr(value, "register_script") and hasattr(value, "pubsub")


def check_url(url: str) -> str:
    """A Redis URL as the config accepts it; ValueError naming what is wrong."""
    if not url.startswith(SCHEMES):
        raise ValueError(f"a Redis backend URL starts with one of {', '.join(SCHEMES)}, got {shown(url)}")
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        raise ValueError(f"the Redis URL {shown(url)} is malformed") from None
    if not parts.hostname:
        raise ValueError(f"the Redis URL {shown(url)} names no host")
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ValueError(f"the Redis URL {shown(url)} has a bad port") from None
    db = parts.path.lstrip("/")
    if db and not db.isdigit():
        raise ValueError(f"the Redis URL {shown(url)} names database {shown(db)}: it must be a number")
    if db and "cluster" in parts.scheme and db != "0":
        raise ValueError(f"a Redis Cluster has only database 0, got {shown(url)}")
    return url


def check_lease(value: object) -> float:
    """A lease in seconds: finite, >= 0.1. ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0.1:
        raise ValueError(f"lease_seconds must be a finite number of seconds >= 0.1, got {shown(value)}")
    return float(value)


def check_policy(policy: object, local_fraction: object, leased: bool = False) -> tuple[str, float | None]:
    """(policy, local fraction) checked: ValueError for an unknown policy, a fraction outside
    (0, 1], a ``local`` policy without a fraction (but in lease mode, ``leased``, where the last
    lease is the fraction), or a fraction without the ``local`` policy."""
    if policy not in POLICIES:
        raise ValueError(f"on_backend_error must be one of {', '.join(POLICIES)}, got {shown(policy)}")
    if local_fraction is None:
        if policy == "local" and not leased:
            raise ValueError(
                "on_backend_error 'local' needs local_fraction: the share of the limit this process may use "
                "alone while Redis is unreachable (e.g. 1/number of hosts)"
            )
        return str(policy), None
    if policy != "local":
        raise ValueError(f"local_fraction applies only to on_backend_error 'local', not {shown(policy)}")
    if isinstance(local_fraction, bool) or not isinstance(local_fraction, (int, float)):
        raise ValueError(f"local_fraction must be a number in (0, 1], got {shown(local_fraction)}")
    fraction = float(local_fraction)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"local_fraction must be in (0, 1], got {shown(local_fraction)}")
    return "local", fraction


COORDINATIONS = ("strict", "lease")
"""The values of ``coordination``: a Redis rate limiter decides each acquire in Redis (``strict``)
or in its process on a leased share of the budget (``lease``)."""


def check_coordination(coordination: object, backend: object) -> str:
    """``strict`` (None) or ``lease``; ValueError for anything else, or ``lease`` without Redis."""
    if coordination is None:
        return "strict"
    if coordination not in COORDINATIONS:
        raise ValueError(f"coordination must be one of {', '.join(COORDINATIONS)}, got {shown(coordination)}")
    if coordination == "lease" and not is_redis(backend):
        raise ValueError("coordination 'lease' leases shares of a Redis budget: it needs a Redis backend")
    return str(coordination)


def store_options(backend: object, **options: Any) -> dict[str, Any]:
    """The options given (not None) for a Redis store: ValueError when there are some and
    ``backend`` is not Redis (they would mean nothing there)."""
    given = {name: value for name, value in options.items() if value is not None}
    if given and not is_redis(backend):
        names = ", ".join(given)
        raise ValueError(f"{names} appl{'ies' if len(given) == 1 else 'y'} only to a Redis backend")
    return given
