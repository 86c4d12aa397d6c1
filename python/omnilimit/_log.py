"""The ``omnilimit`` logger, shared by every module of the package."""

import logging

logger = logging.getLogger("omnilimit")
