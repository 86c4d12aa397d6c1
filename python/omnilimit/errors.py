"""Exceptions raised by omnilimit.

``LimiterTimeout`` and ``LimiterClosed`` are created by the native core (which raises them from its
fast paths) and re-exported here.
"""

from omnilimit._core import LimiterClosed, LimiterTimeout

__all__ = ["LimiterClosed", "LimiterTimeout"]
