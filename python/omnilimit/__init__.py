"""omnilimit: rate and concurrency limiters with a lock-free C++ core, for Python thread pools
that call LLM APIs. A drop-in for the limiters of OmniGen (``omnigen.utils.rate_limiter``)."""

from omnilimit.concurrency import ConcurrencyLimiter
from omnilimit.errors import LimiterClosed, LimiterTimeout
from omnilimit.rate import RateLimiter, default_burst

__version__ = "0.1.0"

__all__ = [
    "ConcurrencyLimiter",
    "LimiterClosed",
    "LimiterTimeout",
    "RateLimiter",
    "default_burst",
]
