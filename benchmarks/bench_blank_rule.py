"""The blank rule on 8-bit tiles: exact integer sums (:func:`dataset_builder.core.tiling.band_std`)
against numpy's float ``std`` (the code before), inside the synthetic stage's tile reader
(:func:`dataset_builder.synthetic.reads.embed_row`, what a worker process runs per grid row), on the real
sample NAIP images (deflate, 512-px blocks).

It prints, measured in this run: the reader's ms per tile with each way (best of ``--repeats``, the two
interleaved), their ratio, the blank rule alone per tile, and whether every tile's decision and stated
standard deviation agree (the reason strings are compared).

    python benchmarks/bench_blank_rule.py [--tile-size 128] [--repeats 5]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rasterio.windows import Window

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataset_builder.core import tiling
from dataset_builder.synthetic import reads
from sen2naip_hub.io import read_stored_windows
from sen2naip_hub.sensors import NAIP

SAMPLE_NAIP = Path(__file__).resolve().parents[2] / "shared" / "sample" / "naip"


def numpy_std(values: np.ndarray) -> np.ndarray:
    """The blank rule's spread before: numpy's float standard deviation of each row."""
    return values.std(axis=1)


def read_all(jobs: list[tuple[Path, list]], size: int, spool: str) -> float:
    """Seconds to run the reader over every job (an image's grid row)."""
    start = time.perf_counter()
    for path, row in jobs:
        reads.embed_row(str(path), row, size, spool)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tile-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--naip", type=Path, default=SAMPLE_NAIP)
    args = p.parse_args()
    paths = sorted(args.naip.glob("*.tif"))
    if not paths:
        raise SystemExit(f"{args.naip}: no NAIP GeoTIFFs")
    size = args.tile_size
    jobs = [(path, row) for path in paths for row in tiling.grid_rows(tiling.grid_origins(path, size))]
    tiles = sum(len(row) for _, row in jobs)
    spool = tempfile.mkdtemp(prefix="bench-blank-")
    exact = tiling.band_std
    best = {"integer sums": np.inf, "numpy std": np.inf}
    try:
        for _ in range(args.repeats):
            for name, function in (("integer sums", exact), ("numpy std", numpy_std)):
                tiling.band_std = function
                best[name] = min(best[name], read_all(jobs, args.tile_size, spool))
    finally:
        tiling.band_std = exact
        shutil.rmtree(spool)
    print(f"{len(paths)} real NAIP images, {tiles} tiles of {args.tile_size} px, best of {args.repeats}:")
    for name, seconds in best.items():
        print(f"  tile reader with the blank rule by {name}: {seconds / tiles * 1e3:.3f} ms per tile")
    print(f"  ratio numpy std / integer sums: {best['numpy std'] / best['integer sums']:.2f}×")
    compare(paths, args.tile_size, args.repeats)


def compare(paths: list[Path], size: int, repeats: int) -> None:
    """The rule alone per tile, both ways, and whether their decisions and reasons agree."""
    stored = [
        w
        for path in paths
        for w in read_stored_windows(
            path, [Window(col, row, size, size) for row, col in tiling.grid_origins(path, size)], NAIP
        )
        if w.valid is None or w.valid.any()
    ]
    timings, reasons = {}, {}
    for name, function in (("integer sums", tiling.band_std), ("numpy std", numpy_std)):
        saved, tiling.band_std = tiling.band_std, function
        try:
            start = time.perf_counter()
            for _ in range(repeats):
                found = [tiling.blank_reason(w.counts, valid=w.valid, scale=1 / 255) for w in stored]
            timings[name] = (time.perf_counter() - start) / repeats / len(stored)
            reasons[name] = found
        finally:
            tiling.band_std = saved
    same = sum(a == b for a, b in zip(reasons["integer sums"], reasons["numpy std"], strict=True))
    print(
        f"  the rule alone: {timings['integer sums'] * 1e3:.3f} vs {timings['numpy std'] * 1e3:.3f} ms per "
        f"tile ({timings['numpy std'] / timings['integer sums']:.2f}×); same reason for {same} of "
        f"{len(stored)} tiles ({sum(r is not None for r in reasons['numpy std'])} blank)"
    )


if __name__ == "__main__":
    main()
