"""Write :class:`PairRecord` rows as the parquet shards of a Hugging Face dataset repo.

Layout (what ``load_dataset(folder_or_repo, config, split=...)`` reads, declared in the card's YAML)::

    <out>/README.md                                  dataset card, YAML ``configs:`` front matter
    <out>/<config>/<split>-NNNNN.parquet             e.g. cross_sensor/train-00000.parquet

Columns and types are :func:`pair_features`; each shard's arrow schema carries the ``datasets``
features as its ``huggingface`` metadata, so ``load_dataset`` returns exactly those features.
Dates are ISO 8601 strings, not ``date32``: the ``torch`` formatter of ``datasets`` fails on
``date32`` columns.

Splits come from :class:`dataset_builder.core.splits.RoiSplitter` on the (spatial) ``roi_id``. Shards are
cut at ``max_rows`` rows or ``max_bytes`` bytes of uncompressed array data, whichever comes first,
and written row group by row group to a hidden temporary name, renamed into place only when
complete. After a config is written, shards left from an earlier, larger write of it are removed,
so a rewrite of the same records gives byte-identical files. :func:`shard_ranges` cuts a split into
shards by the same rule before any row exists (rows of a known size), and :func:`write_shard` writes one
of them alone, byte-identical to the shard :func:`write_config` writes for the same rows, so shards can
be written in parallel as their rows become ready. A split or config without rows gets no
shard and no entry in the card's YAML (``datasets`` cannot declare an empty split from files).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import re
from collections.abc import Iterable
from collections.abc import Sequence as SequenceOf
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Array3D, Features, Sequence, Value

from dataset_builder.core.checkpoints import commit_point
from dataset_builder.core.records import CONFIG_NAMES, SPLIT_NAMES, PairRecord
from dataset_builder.core.splits import RoiSplitter
from sen2naip_hub.errors import InvalidImageError, Sen2NaipError
from sen2naip_hub.files import atomic_file
from sen2naip_hub.sensors import N_BANDS, SCALE_FACTOR

__all__ = [
    "ShardLimits",
    "WriterError",
    "pair_features",
    "records_to_table",
    "scan_shards",
    "shard_name",
    "shard_ranges",
    "write_config",
    "write_shard",
]

log = logging.getLogger(__name__)

#: Hub guidance: parquet files of at most ~500 MB each.
DEFAULT_MAX_SHARD_BYTES: int = 500 * 1024**2
DEFAULT_MAX_SHARD_ROWS: int = 100_000
#: Row groups of ~64 MB keep streaming and the dataset viewer responsive.
DEFAULT_ROW_GROUP_BYTES: int = 64 * 1024**2
DEFAULT_COMPRESSION: str = "zstd"
_SHARD_NAME = re.compile(r"^(?P<split>[a-z_]+)-(?P<index>\d{5})\.parquet$")
_SOURCES: tuple[str, ...] = ("real", "simulated")


class WriterError(Sen2NaipError, ValueError):
    """Records, config names or writer limits are invalid."""


@dataclass(frozen=True)
class ShardLimits:
    """When to start a new shard or row group (bytes are uncompressed ``hr`` + ``lr`` array bytes)."""

    max_rows: int = DEFAULT_MAX_SHARD_ROWS
    max_bytes: int = DEFAULT_MAX_SHARD_BYTES
    row_group_bytes: int = DEFAULT_ROW_GROUP_BYTES
    compression: str = DEFAULT_COMPRESSION

    def __post_init__(self) -> None:
        if min(self.max_rows, self.max_bytes, self.row_group_bytes) <= 0:
            raise WriterError(f"shard limits must be positive, found {self}")

    def starts_new_shard(self, rows: int, size: int, row_bytes: int) -> bool:
        """Whether a row of ``row_bytes`` goes to a new shard after ``rows`` rows of ``size`` bytes."""
        return rows >= self.max_rows or (rows > 0 and size + row_bytes > self.max_bytes)


def shard_ranges(row_bytes: SequenceOf[int], limits: ShardLimits) -> list[tuple[int, int]]:
    """``[(start, stop), ...]``: the rows of each shard of a split whose rows have ``row_bytes`` bytes."""
    ranges, start, size = [], 0, 0
    for index, nbytes in enumerate(row_bytes):
        if limits.starts_new_shard(index - start, size, nbytes):
            ranges.append((start, index))
            start, size = index, 0
        size += nbytes
    if len(row_bytes) > start:
        ranges.append((start, len(row_bytes)))
    return ranges


def shard_name(split: str, index: int) -> str:
    """``<split>-NNNNN.parquet``, the file name of shard ``index`` of ``split``."""
    return f"{split}-{index:05d}.parquet"


def pair_features(hr_shape: tuple[int, int, int], lr_shape: tuple[int, int, int]) -> Features:
    """The dataset's features for HR arrays of ``hr_shape`` and LR arrays of ``lr_shape`` (C, H, W)."""
    transform = Sequence(Value("float64"), length=6)
    return Features(
        {
            "hr": Array3D(shape=tuple(hr_shape), dtype="uint16"),
            "lr": Array3D(shape=tuple(lr_shape), dtype="uint16"),
            "roi_id": Value("string"),
            "crs": Value("string"),
            "hr_transform": transform,
            "lr_transform": transform,
            "hr_date": Value("string"),
            "lr_date": Value("string"),
            "qa1": Value("float32"),
            "qa2": Value("float32"),
            "shift_x": Value("float32"),
            "shift_y": Value("float32"),
            "degradation_model": Value("string"),
            "source": Value("string"),
            "naip_id": Value("string"),
            "s2_id": Value("string"),
        }
    )


def validate_record(record: PairRecord, hr_shape: tuple[int, ...] | None = None) -> None:
    """Raise :class:`InvalidImageError` / :class:`WriterError` unless ``record`` can be written."""
    name = f"record {record.roi_id!r}"
    for key, array in (("hr", record.hr), ("lr", record.lr)):
        if not isinstance(array, np.ndarray) or array.dtype != np.uint16 or array.ndim != 3:
            found = f"{getattr(array, 'dtype', type(array).__name__)} {getattr(array, 'shape', '')}"
            raise InvalidImageError(f"{name}: {key} must be a uint16 array (4, H, W), found {found}")
        if array.shape[0] != N_BANDS:
            raise InvalidImageError(f"{name}: {key} must have {N_BANDS} bands, found {array.shape[0]}")
    expected_lr = (N_BANDS, record.hr.shape[1] // SCALE_FACTOR, record.hr.shape[2] // SCALE_FACTOR)
    if (
        record.hr.shape[1] % SCALE_FACTOR
        or record.hr.shape[2] % SCALE_FACTOR
        or record.lr.shape != expected_lr
    ):
        raise InvalidImageError(
            f"{name}: lr must be hr / {SCALE_FACTOR} per axis; hr {record.hr.shape}, lr {record.lr.shape}"
        )
    if hr_shape is not None and record.hr.shape != hr_shape:
        raise InvalidImageError(
            f"{name}: every hr of a config must share one shape {hr_shape}, found {record.hr.shape}"
        )
    if len(record.hr_transform) != 6 or len(record.lr_transform) != 6:
        raise WriterError(f"{name}: geotransforms must have 6 numbers (GDAL order)")
    if record.source not in _SOURCES:
        raise WriterError(f"{name}: source must be one of {_SOURCES}, found {record.source!r}")


def _iso(date: dt.date | None) -> str | None:
    return None if date is None else date.isoformat()


def records_to_table(records: list[PairRecord], features: Features) -> pa.Table:
    """Rows → an arrow table of ``features``' schema and ``huggingface`` metadata (pixels never as lists)."""
    schema = features.arrow_schema
    columns: dict[str, pa.Array] = {}
    for key in ("hr", "lr"):
        stacked = np.stack([getattr(r, key) for r in records])
        columns[key] = pa.ExtensionArray.from_storage(schema.field(key).type, _nested_list_array(stacked))
    for key in ("hr_transform", "lr_transform"):
        flat = np.asarray([getattr(r, key) for r in records], dtype=np.float64).ravel()
        columns[key] = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float64()), 6)
    for key in ("qa1", "qa2", "shift_x", "shift_y"):
        columns[key] = pa.array(np.asarray([getattr(r, key) for r in records], dtype=np.float32))
    for key in ("roi_id", "crs", "degradation_model", "source", "naip_id", "s2_id"):
        columns[key] = pa.array([getattr(r, key) for r in records], pa.string())
    for key in ("hr_date", "lr_date"):
        columns[key] = pa.array([_iso(getattr(r, key)) for r in records], pa.string())
    return pa.Table.from_arrays([columns[name] for name in schema.names], schema=schema)


def _nested_list_array(array: np.ndarray) -> pa.Array:
    """``(N, d1, ..., dk)`` → list<…list<values>> of depth k, built from offsets (no loop over pixels)."""
    values: pa.Array = pa.array(np.ascontiguousarray(array).ravel())
    for depth in range(array.ndim - 1, 0, -1):
        n_lists = int(np.prod(array.shape[:depth]))
        offsets = pa.array(np.arange(n_lists + 1, dtype=np.int32) * array.shape[depth])
        values = pa.ListArray.from_arrays(offsets, values)
    return values


@dataclass
class _ShardWriter:
    """Writes one split of one config as numbered shards, each renamed into place when complete."""

    folder: Path
    split: str
    features: Features
    limits: ShardLimits
    written: list[Path] = field(default_factory=list)
    rows: int = 0
    first_index: int = 0
    _buffer: list[PairRecord] = field(default_factory=list)
    _buffer_bytes: int = 0
    _writer: pq.ParquetWriter | None = None
    _file: contextlib.ExitStack | None = None
    _shard_rows: int = 0
    _shard_bytes: int = 0

    def add(self, record: PairRecord) -> None:
        size = record.hr.nbytes + record.lr.nbytes
        if self.limits.starts_new_shard(self._shard_rows, self._shard_bytes, size):
            self._close_shard()
        self._buffer.append(record)
        self._buffer_bytes += size
        self._shard_rows += 1
        self._shard_bytes += size
        self.rows += 1
        if self._buffer_bytes >= self.limits.row_group_bytes:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        if self._writer is None:
            self._file = contextlib.ExitStack()  # the shard's temporary file, renamed when complete
            tmp = self._file.enter_context(atomic_file(self._final()))
            schema = self.features.arrow_schema
            self._writer = pq.ParquetWriter(tmp, schema, compression=self.limits.compression)
        self._writer.write_table(
            records_to_table(self._buffer, self.features), row_group_size=len(self._buffer)
        )
        self._buffer, self._buffer_bytes = [], 0

    def _close_shard(self) -> None:
        self._flush()
        if self._writer is None:
            return
        self._writer.close()
        final = self._final()
        commit_point(f"write/shard-complete:{final.parent.name}/{final.name}")  # written, not yet renamed
        self._file.close()  # renames the complete shard into place
        self.written.append(final)
        self._writer, self._file, self._shard_rows, self._shard_bytes = None, None, 0, 0

    def _final(self) -> Path:
        return self.folder / shard_name(self.split, self.first_index + len(self.written))

    def close(self) -> list[Path]:
        """Finish the last shard; return every shard written."""
        self._close_shard()
        return self.written

    def abort(self) -> None:
        """Drop the shard being written (its temporary file), keeping completed ones."""
        if self._writer is not None:
            self._writer.close()
        if self._file is not None:
            self._file.__exit__(RuntimeError, RuntimeError("aborted"), None)  # removes the temporary file
        self._writer, self._file, self._buffer = None, None, []


def write_config(
    records: Iterable[PairRecord],
    out_dir: str | os.PathLike,
    config: str,
    splitter: RoiSplitter | None = None,
    limits: ShardLimits | None = None,
) -> dict[str, int]:
    """Write one config's rows to ``<out_dir>/<config>/<split>-NNNNN.parquet``; return rows per split.

    Rows are routed by ``splitter`` (default :class:`RoiSplitter`) on their ``roi_id`` and written in
    the order given. Every ``hr`` of a config must share one shape (the features declare it).
    """
    if config not in CONFIG_NAMES:
        raise WriterError(f"config must be one of {CONFIG_NAMES}, found {config!r}")
    splitter = splitter or RoiSplitter()
    limits = limits or ShardLimits()
    folder = Path(out_dir) / config
    writers: dict[str, _ShardWriter] = {}
    features: Features | None = None
    try:
        for record in records:
            validate_record(record, None if features is None else tuple(features["hr"].shape))
            if features is None:
                features = pair_features(record.hr.shape, record.lr.shape)
            split = splitter.split_of(record.roi_id)
            if split not in writers:
                writers[split] = _ShardWriter(folder, split, features, limits)
            writers[split].add(record)
        written = {split: writer.close() for split, writer in writers.items()}
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    _remove_stale_shards(folder, {p for paths in written.values() for p in paths})
    counts = {split: writers[split].rows if split in writers else 0 for split in splitter.names}
    log.info("%s: wrote %s", config, counts)
    return counts


def write_shard(
    records: SequenceOf[PairRecord], folder: Path, split: str, index: int, limits: ShardLimits
) -> Path:
    """Write ``records`` as the one shard ``<folder>/<split>-<index>.parquet`` (atomically); its path.

    Raises :class:`WriterError` if they do not fit one shard under ``limits`` (see :func:`shard_ranges`),
    and what :func:`validate_record` raises for a bad record.
    """
    path = folder / shard_name(split, index)
    if not records:
        raise WriterError(f"{path}: a shard needs at least one row")
    if len(shard_ranges([r.hr.nbytes + r.lr.nbytes for r in records], limits)) != 1:
        raise WriterError(f"{path}: {len(records)} rows do not fit one shard under {limits}")
    features = pair_features(records[0].hr.shape, records[0].lr.shape)
    writer = _ShardWriter(folder, split, features, limits, first_index=index)
    try:
        for record in records:
            validate_record(record, tuple(features["hr"].shape))
            writer.add(record)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return path


def _remove_stale_shards(folder: Path, keep: set[Path]) -> None:
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if _SHARD_NAME.match(path.name) and path not in keep:
            path.unlink()


def scan_shards(out_dir: str | os.PathLike) -> dict[str, dict[str, int]]:
    """``{config: {split: rows}}`` for every config and split with at least one shard on disk.

    Rows come from the parquet footers, so this is cheap on any size.
    """
    counts: dict[str, dict[str, int]] = {}
    for config in CONFIG_NAMES:
        folder = Path(out_dir) / config
        for split in SPLIT_NAMES:
            shards = sorted(folder.glob(f"{split}-*.parquet"))
            rows = sum(pq.read_metadata(p).num_rows for p in shards if _SHARD_NAME.match(p.name))
            if rows:
                counts.setdefault(config, {})[split] = rows
    return counts
