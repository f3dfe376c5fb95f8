"""Release rows → the builder's parquet shards, plus the provenance columns of an import.

The columns are exactly :func:`dataset_builder.write.shards.pair_features` (same names, same dtypes, so
one training script reads imports and builds) plus :data:`PROVENANCE_COLUMNS` (strings). Rows are made
into arrow tables by the builder's own :func:`~dataset_builder.write.shards.records_to_table`; each
shard is written to a temporary name and renamed into place when complete.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Features, Value

from dataset_builder.core.records import PairRecord
from dataset_builder.write.shards import ShardLimits, pair_features, records_to_table, validate_record
from sen2naip_hub.files import atomic_file

__all__ = ["PROVENANCE_COLUMNS", "release_features", "write_split"]

#: Provenance of an imported row beside the builder's columns (whose ``naip_id`` and ``s2_id`` hold the
#: release's product ids, null when it does not give them): which release, and the footprint group
#: that decided its split.
PROVENANCE_COLUMNS: tuple[str, ...] = ("release", "split_group")
#: Rows per parquet row group of an import (ROIs of 484 px: ~2 MB each, so ~64 MB groups).
ROW_GROUP_ROWS: int = 32


def release_features(hr_shape: tuple[int, ...], lr_shape: tuple[int, ...]) -> Features:
    """The builder's pair features plus the provenance columns."""
    features = pair_features(hr_shape, lr_shape)
    for name in PROVENANCE_COLUMNS:
        features[name] = Value("string")
    return features


def _table(batch: list[tuple[PairRecord, dict[str, Any]]], features: Features) -> pa.Table:
    base = records_to_table([record for record, _ in batch], pair_features(*_shapes(batch[0][0])))
    for name in PROVENANCE_COLUMNS:
        base = base.append_column(name, pa.array([extra.get(name) for _, extra in batch], pa.string()))
    return base.cast(features.arrow_schema)


def _shapes(record: PairRecord) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return tuple(record.hr.shape), tuple(record.lr.shape)


def _batches(
    rows: Iterable[tuple[PairRecord, dict[str, Any]]], size: int
) -> Iterator[list[tuple[PairRecord, dict[str, Any]]]]:
    batch: list[tuple[PairRecord, dict[str, Any]]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def write_split(
    rows: Iterable[tuple[PairRecord, dict[str, Any]]], folder: Path, split: str, limits: ShardLimits
) -> int:
    """Write one split as ``<folder>/<split>-NNNNN.parquet`` (at most ``limits.max_rows`` rows each);
    return the rows written. Every HR must share one shape."""
    folder.mkdir(parents=True, exist_ok=True)
    written, index, in_shard = 0, 0, 0
    features: Features | None = None
    with contextlib.ExitStack() as shard:
        writer = None
        for batch in _batches(rows, min(ROW_GROUP_ROWS, limits.max_rows)):
            for record, _ in batch:
                validate_record(record, None if features is None else tuple(features["hr"].shape))
            features = features or release_features(*_shapes(batch[0][0]))
            for part in _cut(batch, limits.max_rows - in_shard, limits.max_rows):
                if writer is None:
                    tmp = shard.enter_context(atomic_file(folder / f"{split}-{index:05d}.parquet"))
                    writer = shard.enter_context(
                        pq.ParquetWriter(tmp, features.arrow_schema, compression=limits.compression)
                    )
                writer.write_table(_table(part, features), row_group_size=len(part))
                in_shard += len(part)
                written += len(part)
                if in_shard >= limits.max_rows:
                    shard.close()
                    writer, in_shard, index = None, 0, index + 1
    return written


def _cut(batch: list, room: int, size: int) -> Iterator[list]:
    """``batch`` in parts: the first fills the current shard's ``room``, the rest ``size`` each."""
    first, rest = batch[:room], batch[room:]
    if first:
        yield first
    for start in range(0, len(rest), size):
        yield rest[start : start + size]
