"""Read members of a release without extracting it: a folder, a zip, or a file over HTTP range requests.

:class:`HttpRangeFile` is a seekable, read-only file over an ``http(s)`` URL that fetches only the byte
ranges asked for (``Range: bytes=a-b``, answered 206), in blocks of :data:`RANGE_BLOCK_BYTES`, and counts
the bytes it fetched. :func:`open_archive` gives an :class:`Archive` (``names()``, ``read(name)``) over a
folder or a zip, local or remote: Python's ``zipfile`` reads the central directory at the end of the zip
and then each member's own bytes, so taking 100 ROIs from a 10 GB zip fetches those ROIs and the
directory, never the whole file. Nothing is written to disk; memory holds one member at a time.
"""

from __future__ import annotations

import io
import os
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from dataset_builder.core.errors import BuildError
from sen2naip_hub.errors import Sen2NaipError

__all__ = [
    "RANGE_BLOCK_BYTES",
    "Archive",
    "HttpRangeFile",
    "NetworkError",
    "ReleaseSourceError",
    "fetched_bytes",
    "is_url",
    "open_binary",
]

#: Bytes fetched per range request (the read-ahead of the buffered reader over an URL). 256 KiB: one
#: request holds a 121 × 121 × 4 int32 LR (234 KB) and a metadata.json, few enough requests per ROI.
RANGE_BLOCK_BYTES: int = 256 * 1024
#: Seconds before an HTTP request is abandoned.
HTTP_TIMEOUT_S: float = 60.0


class ReleaseSourceError(Sen2NaipError, OSError):
    """A release source (zip, folder, TACO file, URL) cannot be opened or read."""


class NetworkError(BuildError):
    """A range request failed mid-import: the network's fault, not the item's, so the import stops
    (one line) instead of rejecting the item, and a resumed import fetches it again."""


def is_url(src: str | os.PathLike) -> bool:
    """True for ``http://`` and ``https://`` sources."""
    return str(src).startswith(("http://", "https://"))


class HttpRangeFile(io.RawIOBase):
    """A read-only, seekable file over ``url`` that fetches only the ranges read; ``fetched`` counts bytes."""

    def __init__(self, url: str, timeout: float = HTTP_TIMEOUT_S) -> None:
        super().__init__()
        self.url, self.timeout = url, timeout
        self.position = 0
        self.fetched = 0
        self.requests = 0
        self.size = self._content_length()

    def _content_length(self) -> int:
        request = urllib.request.Request(self.url, method="HEAD")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                length = response.headers.get("Content-Length")
                ranges = response.headers.get("Accept-Ranges", "")
        except OSError as err:
            raise ReleaseSourceError(f"{self.url}: cannot be opened ({err})") from err
        if length is None or "bytes" not in ranges:
            raise ReleaseSourceError(
                f"{self.url}: the server must answer HEAD with Content-Length and Accept-Ranges: bytes "
                f"(found {length!r}, {ranges!r}); download the file and import it from disk"
            )
        return int(length)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer) -> int:
        end = min(self.position + len(buffer), self.size)
        if end <= self.position:
            return 0
        data = self._get(self.position, end - 1)
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)

    def _get(self, first: int, last: int) -> bytes:
        request = urllib.request.Request(self.url, headers={"Range": f"bytes={first}-{last}"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                if response.status != 206:
                    raise ReleaseSourceError(
                        f"{self.url}: a range request was answered {response.status}, expected 206"
                    )
                data = response.read()
        except ReleaseSourceError:
            raise
        except OSError as err:
            raise NetworkError(
                f"{self.url}: bytes {first}-{last} cannot be read ({err}); run again to resume"
            ) from err
        self.requests += 1
        self.fetched += len(data)
        return data


def open_binary(src: str | os.PathLike) -> BinaryIO:
    """A seekable binary file over a local path or an URL (buffered in :data:`RANGE_BLOCK_BYTES` blocks)."""
    if is_url(src):
        return io.BufferedReader(HttpRangeFile(str(src)), buffer_size=RANGE_BLOCK_BYTES)
    path = Path(src)
    if not path.is_file():
        raise ReleaseSourceError(f"{path}: no such file")
    return path.open("rb")


def fetched_bytes(handle: BinaryIO) -> int:
    """Bytes fetched over HTTP by a file from :func:`open_binary` (0 for a local file)."""
    raw = getattr(handle, "raw", None)
    return raw.fetched if isinstance(raw, HttpRangeFile) else 0


@dataclass
class Archive:
    """Members of a release, by ``/``-separated name, from a folder or a zip (local or remote)."""

    src: str
    _zip: zipfile.ZipFile | None = None
    _handle: BinaryIO | None = None
    _names: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, src: str | os.PathLike) -> Archive:
        """Open a folder, a local zip or a zip URL; :class:`ReleaseSourceError` names what is wrong."""
        text = str(src)
        if not is_url(text) and Path(text).is_dir():
            root = Path(text)
            names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
            return cls(text, _names=names)
        handle = open_binary(text)
        try:
            archive = zipfile.ZipFile(handle)
        except (zipfile.BadZipFile, OSError) as err:
            handle.close()
            raise ReleaseSourceError(f"{text}: not a readable zip or folder ({err})") from err
        names = sorted(info.filename for info in archive.infolist() if not info.is_dir())
        return cls(text, _zip=archive, _handle=handle, _names=names)

    def names(self) -> list[str]:
        """Every member's name (files only), sorted."""
        return list(self._names)

    def read(self, name: str) -> bytes:
        """The bytes of one member (a truncated or corrupt member raises, naming it)."""
        try:
            if self._zip is None:
                return (Path(self.src) / name).read_bytes()
            return self._zip.read(name)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, KeyError) as err:
            raise ReleaseSourceError(f"{self.src}: member {name} cannot be read ({err})") from err

    @property
    def fetched(self) -> int:
        """Bytes fetched over HTTP so far (0 for local sources)."""
        return 0 if self._handle is None else fetched_bytes(self._handle)

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
        if self._handle is not None:
            self._handle.close()

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)
