"""Peak memory of ``sen2naip degrade`` as the image grows: streamed (the CLI) against the in-memory
``degrade_raster`` path (read the whole image, degrade, write), both measured in the same run.

Inputs are 4-band uint8 NAIP GeoTIFFs at 2.5 m (tiled, deflate) of N × N px, assembled window by
window from the real sample (``../shared/sample/naip``) mirrored in both directions, so making them
is bounded too. Each degradation runs in a child process; its peak RSS is the child's own
``ru_maxrss`` (``os.wait4``).

    python benchmarks/bench_degrade_memory.py                                   # 2000, 8000, 16000; none
    python benchmarks/bench_degrade_memory.py --sizes 2000,8000 --harmonization global
    python benchmarks/bench_degrade_memory.py --in-memory-max 8000 --workdir /tmp/bench_mem

The model is ``--model``, else ``models/sen2naip-degradation`` (``sen2naip convert-reference``), else
a Degradation with the published architecture and random U-Net weights and no noise (peak memory does
not depend on the weights).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "sample" / "naip"
#: Side (px) of the windows the input maker writes.
MAKER_WINDOW: int = 1024
#: Pixel size (m) of the inputs: SEN2NAIP's HR, so no resampling is timed.
INPUT_RESOLUTION_M: float = 2.5

IN_MEMORY_CHILD = """
import sys
from sen2naip_hub.io import read_raster, write_raster
from sen2naip_hub.models import Degradation
from sen2naip_hub.pipeline import degrade_raster
from sen2naip_hub.resample import conform_resolution
from sen2naip_hub.sensors import SENTINEL2
source, output, model, mode = sys.argv[1:5]
raster, _ = conform_resolution(read_raster(source), source)
lr, _ = degrade_raster(Degradation.from_pretrained(model), raster, harmonization=mode, progress=False)
write_raster(output, lr, SENTINEL2)
"""


LOAD_ONLY_CHILD = """
import sys
from sen2naip_hub.models import Degradation
Degradation.from_pretrained(sys.argv[1])
"""


def make_input(path: Path, size: int) -> Path:
    """An N × N 4-band uint8 GeoTIFF from the real sample, mirrored, written window by window."""
    with rasterio.open(sorted(SAMPLE.glob("*.tif"))[0]) as src:
        sample, crs, origin = src.read(), src.crs, src.transform * (0, 0)
    profile = dict(
        driver="GTiff", count=4, height=size, width=size, dtype="uint8", crs=crs, nodata=0,
        transform=Affine(INPUT_RESOLUTION_M, 0, origin[0], 0, -INPUT_RESOLUTION_M, origin[1]),
        tiled=True, blockxsize=256, blockysize=256, compress="deflate",
    )  # fmt: skip
    _, h, w = sample.shape
    with rasterio.open(path, "w", **profile) as dst:
        for r in range(0, size, MAKER_WINDOW):
            for c in range(0, size, MAKER_WINDOW):
                rows = _mirrored(np.arange(r, min(r + MAKER_WINDOW, size)), h)
                cols = _mirrored(np.arange(c, min(c + MAKER_WINDOW, size)), w)
                block = sample[:, rows][:, :, cols]
                dst.write(np.maximum(block, 1), window=Window(c, r, len(cols), len(rows)))  # no nodata
    return path


def _mirrored(index: np.ndarray, n: int) -> np.ndarray:
    """Indexes into an axis of ``n`` px, mirrored back and forth beyond it."""
    period = index % (2 * n)
    return np.where(period < n, period, 2 * n - 1 - period)


def run_child(argv: list[str]) -> tuple[float, float]:
    """Run a child process; its peak RSS (MB) and wall time (s)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with tempfile.TemporaryFile() as log:  # a file, not a pipe: a full pipe would stall the child
        start = time.perf_counter()
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            log.seek(0)
            last = log.read().decode(errors="replace").strip().splitlines()[-1:]
            raise RuntimeError(f"{argv[:4]} failed ({process.returncode}): {last}")
    return usage.ru_maxrss / 1024, seconds


def default_model(workdir: Path) -> tuple[str, str]:
    """The published model if converted, else a random-weight one: ``(path, what)``."""
    published = REPO / "models" / "sen2naip-degradation"
    if published.is_dir():
        return str(published), "published weights"
    sys.path.insert(0, str(REPO))
    from sen2naip_hub.models import Degradation, NoiseModel

    folder = workdir / "random-model"
    if not folder.is_dir():
        Degradation(noise=NoiseModel(mode="none")).save_pretrained(folder)
    return str(folder), "random U-Net weights, no noise"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="2000,8000,16000", help="image sides in px")
    parser.add_argument("--harmonization", default="none", choices=["none", "global"])
    parser.add_argument("--in-memory-max", type=int, default=8000, help="largest side the baseline runs")
    parser.add_argument("--model", default=None)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_mem_"))
    workdir.mkdir(parents=True, exist_ok=True)
    model, what = (args.model, "given") if args.model else default_model(workdir)
    print(f"model: {model} ({what}); harmonization {args.harmonization}; {os.cpu_count()} CPU cores")
    loaded, _ = run_child([sys.executable, "-c", LOAD_ONLY_CHILD, model])
    print(f"a child that only imports the library and loads the model: {loaded:.0f} MB")
    print(f"{'size':>7} {'input MB':>9} {'streamed MB':>12} {'in-memory MB':>13} {'ratio':>6} "
          f"{'streamed s':>11} {'in-memory s':>12}")  # fmt: skip
    for size in (int(s) for s in args.sizes.split(",")):
        source = workdir / f"naip_{size}.tif"
        if not source.exists():
            make_input(source, size)
        mb = source.stat().st_size / 1e6
        cli = [
            sys.executable,
            "-m",
            "sen2naip_hub.cli",
            "degrade",
            str(source),
            str(workdir / "lr_stream.tif"),
        ]
        streamed, t_streamed = run_child([*cli, "--model", model, "--harmonization", args.harmonization])
        memory = seconds = float("nan")
        if size <= args.in_memory_max:
            child = [sys.executable, "-c", IN_MEMORY_CHILD, str(source), str(workdir / "lr_mem.tif")]
            memory, seconds = run_child([*child, model, args.harmonization])
        print(
            f"{size:>7} {mb:>9.1f} {streamed:>12.0f} {memory:>13.0f} {memory / streamed:>6.1f} "
            f"{t_streamed:>11.1f} {seconds:>12.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
