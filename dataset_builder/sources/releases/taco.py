"""A small reader of the legacy TACO / tortilla format (``taco_version`` 0.4.0) that SEN2NAIPv2 ships in.

The format, as ``pytortilla`` 0.5.1 / ``tacotoolbox`` 0.5.2 write it (all integers little-endian):

====== ========================================================================================
bytes  meaning
====== ========================================================================================
0-2    magic: ``WX`` (a TACO) or ``#y`` (a bare tortilla, e.g. a nested sample)
2-10   FO, offset of the Parquet footer
10-18  FL, length of the footer
18-26  DP, number of data partitions (``.NNNN.part.taco`` pieces)
26-34  CO, offset of the collection JSON (TACO only; 0 in a tortilla)
34-42  CL, length of the collection JSON
42-200 zero
====== ========================================================================================

Then the members back to back, the footer (one row per sample: ``tortilla:id``, ``tortilla:file_format``,
``tortilla:data_split``, ``tortilla:offset``, ``tortilla:length``, ``stac:*``, …; offsets count from the
start of the file the footer belongs to) and, in a TACO, the collection JSON. A sample of format
``TORTILLA`` is itself a tortilla: its members' offsets count from the sample's own first byte.

``tacoreader`` ≥ 1.0 refuses these files; this reader needs only ``pyarrow`` and reads through any
seekable file (local or :class:`~dataset_builder.sources.releases.archive.HttpRangeFile`), fetching the
header, the footer and the samples asked for.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any, BinaryIO

import pyarrow.parquet as pq

from dataset_builder.sources.releases.archive import ReleaseSourceError

__all__ = ["HEADER_BYTES", "TACO_MAGIC", "TORTILLA_MAGIC", "TacoError", "Tortilla", "parse_header"]

#: The header of every tortilla / TACO file (pytortilla 0.5.1 ``create_a_tortilla``).
HEADER_BYTES: int = 200
TACO_MAGIC: bytes = b"WX"
TORTILLA_MAGIC: bytes = b"#y"
#: Columns every footer must have for a sample to be located.
REQUIRED_COLUMNS: tuple[str, ...] = (
    "tortilla:id",
    "tortilla:file_format",
    "tortilla:offset",
    "tortilla:length",
)


class TacoError(ReleaseSourceError):
    """A TACO / tortilla file (or a sample inside one) does not follow the format."""


@dataclass(frozen=True)
class Header:
    """The 200-byte header's fields."""

    magic: bytes
    footer_offset: int
    footer_length: int
    partitions: int
    collection_offset: int
    collection_length: int


def parse_header(data: bytes, name: str) -> Header:
    """The header of ``data`` (its first 200 bytes); :class:`TacoError` when it is not one."""
    if len(data) < HEADER_BYTES:
        raise TacoError(f"{name}: {len(data)} bytes, shorter than the {HEADER_BYTES}-byte TACO header")
    magic = data[:2]
    if magic not in (TACO_MAGIC, TORTILLA_MAGIC):
        raise TacoError(f"{name}: magic {magic!r}, expected {TACO_MAGIC!r} (TACO) or {TORTILLA_MAGIC!r}")
    fields = [int.from_bytes(data[i : i + 8], "little") for i in range(2, 42, 8)]
    return Header(magic, *fields)


@dataclass
class Tortilla:
    """A tortilla or TACO file inside ``handle`` starting at byte ``base``: its header and footer rows."""

    name: str
    handle: BinaryIO
    base: int
    size: int
    header: Header
    rows: list[dict[str, Any]]

    @classmethod
    def open(cls, handle: BinaryIO, name: str, base: int = 0, size: int | None = None) -> Tortilla:
        """Read the header and the footer (nothing else) of the file at ``base`` in ``handle``."""
        if size is None:
            size = handle.seek(0, io.SEEK_END) - base
        header = parse_header(_read(handle, base, HEADER_BYTES, name), name)
        end = header.footer_offset + header.footer_length
        if header.footer_offset < HEADER_BYTES or end > size:
            raise TacoError(
                f"{name}: footer at {header.footer_offset}+{header.footer_length} outside its {size} bytes"
            )
        footer = _read(handle, base + header.footer_offset, header.footer_length, name)
        try:
            table = pq.read_table(io.BytesIO(footer))
        except Exception as err:  # pyarrow raises ArrowInvalid and friends
            raise TacoError(f"{name}: footer is not a Parquet table ({err})") from err
        missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
        if missing:
            raise TacoError(f"{name}: footer lacks column(s) {', '.join(missing)}")
        tortilla = cls(name, handle, base, size, header, table.to_pylist())
        for row in tortilla.rows:
            tortilla._check_row(row)
        return tortilla

    def _check_row(self, row: dict[str, Any]) -> None:
        offset, length = int(row["tortilla:offset"]), int(row["tortilla:length"])
        if offset < HEADER_BYTES or offset + length > self.header.footer_offset:
            raise TacoError(
                f"{self.name}: sample {row['tortilla:id']!r} at {offset}+{length} is outside the data "
                f"{HEADER_BYTES}-{self.header.footer_offset}"
            )

    def collection(self) -> dict[str, Any] | None:
        """The collection JSON of a TACO (None for a bare tortilla)."""
        if self.header.magic != TACO_MAGIC or not self.header.collection_length:
            return None
        data = _read(
            self.handle, self.base + self.header.collection_offset, self.header.collection_length, self.name
        )
        return json.loads(data.decode("utf-8"))

    def read(self, index: int) -> bytes:
        """The bytes of sample ``index`` (a member file, e.g. a GeoTIFF)."""
        row = self.rows[index]
        return _read(
            self.handle, self.base + int(row["tortilla:offset"]), int(row["tortilla:length"]), self.name
        )

    def nested(self, index: int) -> Tortilla:
        """Sample ``index`` opened as the tortilla it is (format ``TORTILLA``); its members read in place."""
        row = self.rows[index]
        if row["tortilla:file_format"] != "TORTILLA":
            raise TacoError(
                f"{self.name}: sample {row['tortilla:id']!r} is {row['tortilla:file_format']}, not a TORTILLA"
            )
        name = f"{self.name}[{row['tortilla:id']}]"
        return Tortilla.open(
            self.handle, name, self.base + int(row["tortilla:offset"]), int(row["tortilla:length"])
        )

    def member(self, sample_id: str) -> bytes:
        """The bytes of the sample whose ``tortilla:id`` is ``sample_id``."""
        for index, row in enumerate(self.rows):
            if row["tortilla:id"] == sample_id:
                return self.read(index)
        raise TacoError(
            f"{self.name}: no member {sample_id!r} (found {[r['tortilla:id'] for r in self.rows]})"
        )


def _read(handle: BinaryIO, offset: int, length: int, name: str) -> bytes:
    handle.seek(offset)
    data = handle.read(length)
    if len(data) != length:
        raise TacoError(f"{name}: truncated: {len(data)} of {length} bytes at offset {offset}")
    return data
