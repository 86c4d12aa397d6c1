"""The ``backend`` argument of the limiters: in-process, or shared between processes through a
named shared-memory segment (``/dev/shm/omnilimit.NAME``)."""

from __future__ import annotations

import hashlib
import re

from omnilimit._shown import shown
from omnilimit.backends.redis_link import SCHEMES, check_url

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
