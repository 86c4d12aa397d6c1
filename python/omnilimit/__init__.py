"""omnilimit: rate and concurrency limiters with a lock-free C++ core, for Python thread pools
that call LLM APIs. A drop-in for the limiters of OmniGen (``omnigen.utils.rate_limiter``)."""

from importlib.metadata import version

from omnilimit._core import remove_shared
from omnilimit.combined import CombinedLimiter
from omnilimit.concurrency import ConcurrencyLimiter
from omnilimit.defaults import DEFAULT_RATE_LIMITS, get_default_rate_limit
from omnilimit.errors import ConfigError, LimiterClosed, LimiterTimeout, SharedStateError
from omnilimit.headers import RateLimitInfo, parse_rate_limit_headers
from omnilimit.manager import ProviderRateLimitManager
from omnilimit.rate import RateLimiter, TokenReservation
from omnilimit.spec import DEFAULT_BURST

__version__ = version("omnilimit")  # written once, in pyproject.toml

__all__ = [
    "DEFAULT_BURST",
    "DEFAULT_RATE_LIMITS",
    "CombinedLimiter",
    "ConcurrencyLimiter",
    "ConfigError",
    "LimiterClosed",
    "LimiterTimeout",
    "ProviderRateLimitManager",
    "RateLimitInfo",
    "RateLimiter",
    "SharedStateError",
    "TokenReservation",
    "get_default_rate_limit",
    "parse_rate_limit_headers",
    "remove_shared",
]
