"""omnilimit under the names of ``omnigen.utils.rate_limiter`` (omnigen-usf 0.1.18):
``from omnilimit.compat.omnigen import ProviderRateLimitManager`` where omnigen's code said
``from omnigen.utils.rate_limiter import ProviderRateLimitManager``."""

from omnilimit.concurrency import ConcurrencyLimiter
from omnilimit.defaults import DEFAULT_RATE_LIMITS, get_default_rate_limit
from omnilimit.manager import ProviderRateLimitManager
from omnilimit.rate import RateLimiter

__all__ = [
    "DEFAULT_RATE_LIMITS",
    "ConcurrencyLimiter",
    "ProviderRateLimitManager",
    "RateLimiter",
    "get_default_rate_limit",
]
