"""The builder's typed errors. Each message is one line naming the file, key or value and what was expected.

The ``sen2naip`` CLI prints any :class:`~sen2naip_hub.errors.Sen2NaipError` as one line and exits 1.
"""

from __future__ import annotations

from sen2naip_hub.errors import Sen2NaipError

__all__ = ["BuildError", "ConfigError"]


class BuildError(Sen2NaipError, RuntimeError):
    """The build cannot go on: missing inputs, an unusable output, no rows at all, every item failing."""


class ConfigError(Sen2NaipError, ValueError):
    """A build config is missing, unreadable, has an unknown key or a value of the wrong kind."""
