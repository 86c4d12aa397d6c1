"""How the manager turns a configured limiter into a live one: the kind (concurrency, rate,
combined), the ``backend`` argument (a Redis URL as given, or ``shm://NAME`` with NAME from the
limiter key), the Redis-only options, and the one log line that says what was made."""

from __future__ import annotations

from omnilimit._log import logger
from omnilimit._shown import redact
from omnilimit.combined import CombinedLimiter
from omnilimit.concurrency import ConcurrencyLimiter
from omnilimit.config import COMBINED, CONCURRENCY, RoleSettings
from omnilimit.rate import RateLimiter
from omnilimit.spec import DEFAULT_BURST, is_redis, name_for_key

Limiter = ConcurrencyLimiter | RateLimiter | CombinedLimiter


def build_limiter(
    key: str,
    kind: str,
    limit: int | float,
    settings: RoleSettings,
    tpm: int | float | None = None,
    rpm: int | float | None = None,
    bursts: tuple[int | None, int | None] = (None, None),
) -> Limiter:
    """The limiter for ``key``: ``limit`` is the concurrency cap or the RPM, as ``kind`` says
    (``rpm`` is a combined limiter's RPM); ``settings`` are the first role's, for the backend and
    the log line."""
    where = f"provider={settings.provider}, " + (
        f"model={settings.model}" if settings.model is not None else "no model specified"
    )
    budget = f" and {tpm} TPM" if tpm is not None else ""
    budget += bursts_text(bursts)
    burst, token_burst = bursts
    backend = backend_of(key, settings)
    if backend is not None and is_redis(backend):
        where += f", shared through Redis at {redact(backend)}"
    elif backend is not None:
        where += f", shared through /dev/shm/omnilimit.{backend[len('shm://') :]}"
    options = settings.backend_options
    limiter: Limiter
    if kind == COMBINED:
        assert rpm is not None
        limiter = CombinedLimiter(
            int(limit),
            rpm,
            name=key,
            burst_size=burst,
            tokens_per_minute=tpm,
            token_burst=token_burst,
            backend=backend,
            **options,
        )
        logger.info(
            "Created combined limiter: '%s' with max %s concurrent calls and %s RPM%s (%s)",
            key,
            limit,
            rpm,
            budget,
            where,
        )
    elif kind == CONCURRENCY:
        options.pop("coordination", None)  # how a rate limiter decides: a concurrency limiter has none
        limiter = ConcurrencyLimiter(max_concurrent=int(limit), name=key, backend=backend, **options)
        logger.info("Created concurrency limiter: '%s' with max %s concurrent calls (%s)", key, limit, where)
    else:
        options.pop("lease_seconds", None)  # leases are the concurrency limiter's
        limiter = RateLimiter(
            requests_per_minute=limit,
            burst_size=burst,
            provider_name=key,
            tokens_per_minute=tpm,
            token_burst=token_burst,
            backend=backend,
            **options,
        )
        logger.info("Created rate limiter: '%s' with %s RPM%s (%s)", key, limit, budget, where)
    return limiter


def backend_of(key: str, settings: RoleSettings) -> str | None:
    """The limiters' ``backend`` argument for a role's rate_limit_backend: None, a Redis URL as
    given, or ``shm://NAME``."""
    if settings.backend is None or is_redis(settings.backend):
        return settings.backend
    return "shm://" + segment_name(key, settings.backend)


def segment_name(key: str, backend: str) -> str:
    """The segment of a shared limiter: shm://NAME's NAME, or one made from the limiter key."""
    return backend[len("shm://") :] if backend.startswith("shm://") else name_for_key(key)


def bursts_text(bursts: tuple[int | None, int | None]) -> str:
    """``, burst 5, token burst 4000``: the bursts that are not strict pacing's 1."""
    burst, token_burst = bursts
    text = f", burst {burst}" if burst not in (None, DEFAULT_BURST) else ""
    return text + (f", token burst {token_burst}" if token_burst not in (None, DEFAULT_BURST) else "")
