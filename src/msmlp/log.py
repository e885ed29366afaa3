"""The package logger. Library code logs; only the CLI prints."""

from __future__ import annotations

import logging

logger = logging.getLogger("msmlp")
logger.addHandler(logging.NullHandler())
