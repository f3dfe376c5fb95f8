"""Importing a v1 cross-sensor zip: pairs/s of `sen2naip import-release` against extracting the zip and
reading each ROI with rasterio, measured in the same run on the same zip.

The zip is written here in the release's layout (``cross-sensor/ROI_XXXX/{hr.tif, lr.tif,
metadata.json}``, 484 × 484 HR / 121 × 121 int32 LR, stored uncompressed like the release's GeoTIFFs
inside it) from crops of the real sample NAIP, by the test fixture's helpers (LR simulated). The process
is pinned to 2 cores (``os.sched_setaffinity``) where the OS allows it.

* baseline: ``zipfile.extractall`` to a temporary folder, then ``rasterio`` reads of every ``hr.tif`` /
  ``lr.tif`` and ``json.load`` of every ``metadata.json`` into numpy arrays (what a user does today);
  nothing is written besides the extraction.
* import: :func:`dataset_builder.sources.releases.run.import_release` from the zip (no extraction),
  including everything it writes: checkpoints, parquet shards, card and manifest.

    python benchmarks/bench_import_release.py --rois 64
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "data" / "releases")]

import data as fixtures  # noqa: E402

ROI_PX = 484
CORES = 2


def write_zip(path: Path, rois: int, seed: int) -> Path:
    """``rois`` ROIs of ROI_PX px cut from the sample NAIP (offsets cycle over images and positions)."""
    rng = np.random.default_rng(seed)
    files = fixtures.naip_files()
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for i in range(rois):
            naip = files[i % len(files)]
            row, col = (i // len(files)) % 4 * 60, (i // len(files)) // 4 % 4 * 60
            hr, crs, transform = fixtures.crop(naip, row, col, ROI_PX)
            folder = f"cross-sensor/ROI_{i:04d}"
            zf.writestr(f"{folder}/hr.tif", fixtures.geotiff(hr, crs, transform))
            lr = fixtures.simulate_lr(hr, rng)
            zf.writestr(f"{folder}/lr.tif", fixtures.geotiff(lr, crs, fixtures.lr_transform(transform)))
            meta = {"roi_id": f"ROI_{i:04d}", "s2_id": "S2A_MSIL2A_20190810T170901", "QA1": 0.5, "QA2": 1.0}
            zf.writestr(f"{folder}/metadata.json", json.dumps(meta))
    return path


def baseline(zip_path: Path, work: Path) -> int:
    """Extract, then read every ROI with rasterio; return the pairs read."""
    import rasterio

    target = work / "extracted"
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(target)
    pairs = 0
    for folder in sorted((target / "cross-sensor").iterdir()):
        with rasterio.open(folder / "hr.tif") as src:
            hr = src.read()
        with rasterio.open(folder / "lr.tif") as src:
            lr = src.read()
        json.loads((folder / "metadata.json").read_text())
        pairs += int(hr.size > 0 and lr.size > 0)
    return pairs


def imported(zip_path: Path, work: Path) -> int:
    from dataset_builder.sources.releases.importer import ImportSettings
    from dataset_builder.sources.releases.run import import_release

    out = work / "dataset"
    settings = ImportSettings("v1-cross-sensor", (str(zip_path),), out, work / "import-work")
    return import_release(settings, progress=False, echo=lambda _: None).kept


def timed(function, zip_path: Path) -> tuple[int, float]:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        pairs = function(zip_path, Path(tmp))
        return pairs, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rois", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > CORES:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:CORES])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    work = Path(tempfile.mkdtemp())
    try:
        zip_path = write_zip(work / "cross-sensor.zip", args.rois, args.seed)
        size_mb = zip_path.stat().st_size / 1e6
        imported(zip_path, work / "warm")  # imports (datasets, rasterio) and file cache warm for both
        results = {}
        for name, function in (("extract + rasterio", baseline), ("import-release", imported)):
            runs = [timed(function, zip_path) for _ in range(args.repeats)]
            pairs = runs[0][0]
            best = min(seconds for _, seconds in runs)
            results[name] = pairs / best
            print(
                f"{name:>20}: {pairs} pairs in {best:.2f} s (best of {args.repeats}) "
                f"= {pairs / best:.1f} pairs/s"
            )
        ratio = results["import-release"] / results["extract + rasterio"]
        print(f"{args.rois} ROIs of {ROI_PX} px, zip {size_mb:.1f} MB, {cores} cores")
        print(f"import-release / (extract + rasterio read) = {ratio:.2f}x pairs/s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
