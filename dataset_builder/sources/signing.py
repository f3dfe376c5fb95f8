"""Signing STAC asset hrefs: a pluggable modifier (pystac-client's ``modifier``), off by default.

``planetary_computer`` signs through the optional ``planetary-computer`` package (its ``sign_inplace``
appends a short-lived SAS token to ``*.blob.core.windows.net`` hrefs). Tokens must never reach a log
or the manifest: every message that may hold an href goes through :func:`redact`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from dataset_builder.core.errors import ConfigError

__all__ = ["SIGNING_NAMES", "Modifier", "make_modifier", "redact"]

#: A pystac-client modifier: changes the searched items (their asset hrefs) in place.
Modifier = Callable[[Any], None]
#: The values ``sources.signing`` takes.
SIGNING_NAMES: tuple[str, ...] = ("none", "planetary_computer")
#: The query string of a URL (where SAS tokens and other signatures live).
_QUERY = re.compile(r"(https?://[^\s?'\"]+)\?[^\s'\"]*")


def redact(text: str) -> str:
    """``text`` with the query string of every URL replaced by ``?<redacted>``.

    >>> redact("read failed: https://a.blob.core.windows.net/x/B04.tif?st=2026&sig=SECRET (timeout)")
    'read failed: https://a.blob.core.windows.net/x/B04.tif?<redacted> (timeout)'
    """
    return _QUERY.sub(r"\1?<redacted>", text)


def make_modifier(name: str) -> Modifier | None:
    """The modifier of ``sources.signing`` ``name``; ``None`` for ``"none"``.

    Raises:
        ConfigError: an unknown name, or ``planetary_computer`` without the package installed.
    """
    if name == "none":
        return None
    if name != "planetary_computer":
        raise ConfigError(f"sources.signing: found {name!r}; expected one of {', '.join(SIGNING_NAMES)}")
    try:
        import planetary_computer
    except ImportError:
        raise ConfigError(
            "sources.signing is planetary_computer but the planetary-computer package is not installed "
            "(pip install planetary-computer==1.0.0)"
        ) from None
    return planetary_computer.sign_inplace
