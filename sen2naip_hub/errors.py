"""Typed exceptions. Each message names the file or value, what was found and what was expected.

The CLI turns any :class:`Sen2NaipError` into one line on stderr and a non-zero exit.
"""

from __future__ import annotations


class Sen2NaipError(Exception):
    """Base class of every error this package raises on purpose."""


class InvalidImageError(Sen2NaipError, ValueError):
    """An image has the wrong band count, dtype, value range, size or content."""


class AllNodataError(InvalidImageError):
    """An image (or the window of it that was read) has no valid pixel."""


class UnreadableFileError(Sen2NaipError, OSError):
    """A file is missing, is not a raster, or is corrupt or truncated."""


class InvalidOutputError(Sen2NaipError, OSError):
    """An output path cannot be written: it is a folder, lies under a file, or would overwrite an input."""


class DeviceUnavailableError(Sen2NaipError, RuntimeError):
    """A device was asked for that this machine does not have (``cuda`` without CUDA)."""


class ModelNotFoundError(Sen2NaipError, FileNotFoundError):
    """A model path or Hub repo id could not be resolved to a model."""


class InvalidModelError(Sen2NaipError, ValueError):
    """A model folder or repo was found, but its config or weights do not make a valid model."""


class SampleNotFoundError(Sen2NaipError, FileNotFoundError):
    """The sample imagery the demo needs is not where it was looked for."""
