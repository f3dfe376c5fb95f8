"""Parquet encodings of the shards' pixel columns, on the builder's rows: the builder's writer (pyarrow's
defaults: a dictionary for every column, zstd; :class:`dataset_builder.write.shards.ShardLimits`)
against the pixel values (``hr``, ``lr``) written without a dictionary, byte-stream split or plain,
zstd or uncompressed; same rows, same run. Why: writing the nested ``Array3D`` uint16 columns is the
synthetic stage's largest CPU cost on the GPU machine (``benchmarks/SCALING.md``), so any encoding
that wrote much faster at a similar size would be worth a format change. None does (the result is in
SCALING.md), and the builder keeps the defaults.

Rows are real NAIP tiles of the sample (its images' corners, :func:`mosaic.tiles_from_sample`; HR in
Sentinel-2 digital numbers, as the builder stores NAIP; LR the 4×4 block mean, a stand-in for the
degradation: the writer's cost does not depend on how the LR was made). Each way writes the same
arrow table (built once, outside the clock) as one shard; then the shard is read back whole with
``pyarrow.parquet.read_table``. It prints ms per row for writing and reading (medians of
``--repeats``, the ways interleaved), the ratio against the builder's writer, bytes per row, and
whether every file reads back to the builder's table (NaN equal to NaN).

    python benchmarks/bench_parquet_encoding.py [--rows 64] [--tile-size 484] [--repeats 5]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from functools import partial
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _timing import interleaved
from mosaic import tiles_from_sample

from dataset_builder.core.records import PairRecord
from dataset_builder.write.shards import ShardLimits, pair_features, records_to_table
from sen2naip_hub.sensors import SCALE_FACTOR, naip_to_reflectance, reflectance_to_s2

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "sample"
#: The sample's NAIP grid (EPSG:26914), at SEN2NAIP's 2.5 m: the geotransform of every bench row.
TRANSFORM = (500000.0, 2.5, 0.0, 5200000.0, 0.0, -2.5)


def sample_records(sample: Path, size: int, rows: int) -> list[PairRecord]:
    """``rows`` pairs from the 4 corner tiles of each real NAIP image of ``sample`` (cycled)."""
    tiles = tiles_from_sample(sample, min(rows, 40), size)
    records = []
    for index in range(rows):
        hr = naip_to_reflectance(tiles[index % len(tiles)])
        bands, height, width = hr.shape
        blocks = (bands, height // SCALE_FACTOR, SCALE_FACTOR, width // SCALE_FACTOR, SCALE_FACTOR)
        records.append(
            PairRecord(
                roi_id=f"roi-{index}",
                hr=reflectance_to_s2(hr),
                lr=reflectance_to_s2(hr.reshape(blocks).mean(axis=(2, 4))),
                crs="EPSG:26914",
                hr_transform=TRANSFORM,
                lr_transform=TRANSFORM,
                hr_date=None,
                lr_date=None,
                qa1=float("nan"),
                qa2=float("nan"),
                shift_x=0.0,
                shift_y=0.0,
                degradation_model="bench/block-mean-x4",
                source="simulated",
            )
        )
    return records


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--tile-size", type=int, default=484)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--sample", type=Path, default=SAMPLE)
    args = p.parse_args()
    records = sample_records(args.sample, args.tile_size, args.rows)
    features = pair_features(records[0].hr.shape, records[0].lr.shape)
    table = records_to_table(records, features)
    limits = ShardLimits()
    folder = Path(tempfile.mkdtemp(prefix="bench-parquet-"))
    n = len(records)
    sizes, same = {}, {}
    variants = encodings(table, limits.compression)
    writers = {
        name: partial(_write, table, folder / f"{i}.parquet", kw)
        for i, (name, kw) in enumerate(variants.items())
    }
    writes = interleaved(writers, args.repeats)
    paths = {name: folder / f"{i}.parquet" for i, name in enumerate(variants)}
    reads = interleaved({name: partial(pq.read_table, path) for name, path in paths.items()}, args.repeats)
    builder = next(iter(variants))
    reference = pq.read_table(paths[builder])
    print(f"{n} rows of {args.tile_size} px, medians of {args.repeats}")
    print(
        f"{'pixel columns':44s} {'write ms/row':>12s} {'vs builder':>10s} {'read ms/row':>12s} "
        f"{'MB/row':>7s}  same rows"
    )
    for name, path in paths.items():
        sizes[name] = path.stat().st_size / n / 1e6
        same[name] = same_table(pq.read_table(path), reference)
        print(
            f"{name:44s} {writes[name] * 1e3 / n:12.2f} {writes[builder] / writes[name]:9.2f}x "
            f"{reads[name] * 1e3 / n:12.2f} {sizes[name]:7.3f}  {same[name]}"
        )
    shutil.rmtree(folder)
    if not all(same.values()):
        raise SystemExit(1)


def encodings(table: pa.Table, compression: str) -> dict[str, dict]:
    """Writer settings by name, the builder's first (pyarrow's defaults with the builder's compression)."""
    pixels = [name for name in table.column_names if name in ("hr", "lr")]
    others = [name for name in table.column_names if name not in pixels]
    leaves = [f"{name}{'.list.element' * 3}" for name in pixels]  # an encoding must name the leaf
    split = {leaf: "BYTE_STREAM_SPLIT" for leaf in leaves}
    return {
        f"builder: dictionary, {compression}": {"compression": compression},
        f"byte-stream split, {compression}": {
            "compression": compression,
            "use_dictionary": others,
            "column_encoding": split,
        },
        f"plain, {compression}": {"compression": compression, "use_dictionary": others},
        "byte-stream split, lz4": {"compression": "lz4", "use_dictionary": others, "column_encoding": split},
        "plain, uncompressed": {"compression": "none", "use_dictionary": others},
    }


def _write(table: pa.Table, path: Path, settings: dict) -> None:
    with pq.ParquetWriter(path, table.schema, **settings) as writer:
        writer.write_table(table, row_group_size=table.num_rows)


def same_table(got: pa.Table, want: pa.Table) -> bool:
    """Equal column by column, a NaN equal to a NaN (``Table.equals`` says NaN ≠ NaN)."""
    if got.schema != want.schema:
        return False
    for name in want.column_names:
        a, b = got[name].combine_chunks(), want[name].combine_chunks()
        if pa.types.is_floating(b.type):
            if not pc.all(pc.or_kleene(pc.equal(a, b), pc.and_(pc.is_nan(a), pc.is_nan(b)))).as_py():
                return False
        elif not a.equals(b):
            return False
    return True


if __name__ == "__main__":
    main()
