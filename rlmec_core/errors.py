"""Exception types with messages that name the file, row or key at fault."""

from __future__ import annotations


class RLMECError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigError(RLMECError, ValueError):
    """A configuration value is missing, unknown or of the wrong type (the message names the key)."""


class DataError(RLMECError, ValueError):
    """An input data file is malformed (the message names the file and the line or row)."""
