"""The Space's request on one 484 × 484 ROI, end to end on CPU, against the published pipeline.

Times the function behind the Space's Run button (``make_runner`` of ``spaces/sen2naip-degradation/
app.py``: degradation with global harmonization and noise, quick-looks, per-band histograms, MAE and
spectral angle, GeoTIFF written) on a real NAIP ROI of ``../shared/sample``, and in the same run the
published ``opensr_degradation.pipe("naip_d")`` (PyPI 1.0.1) degrading the same ROI (U-Net histogram
matching, blur, noise) as the baseline. Prints medians and the ratio; the target is < 2 s on 2 cores.

    .venv/bin/python benchmarks/bench_space.py [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from _timing import interleaved
from rasterio.windows import Window

from sen2naip_hub import Degradation
from sen2naip_hub.convert import convert_reference, reference_is_converted
from sen2naip_hub.io import read_raster
from sen2naip_hub.sensors import SCALE_FACTOR

ROOT = Path(__file__).resolve().parents[1]
ROI = 484
#: Sentinel-2-like band gains for the stand-in "real" LR
#: (as dataset_builder.cross_sensor.simulate.S2_LIKE_GAIN).
S2_LIKE_GAIN = np.array([0.15, 0.16, 0.22, 0.45], np.float32)[:, None, None]


def load_app():
    spec = importlib.util.spec_from_file_location("space_app", ROOT / "spaces/sen2naip-degradation/app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def make_roi(app, sample_dir: Path):
    path = sorted((sample_dir / "naip").glob("*.tif"))[0]
    hr = read_raster(path, window=Window(0, 0, ROI, ROI))
    c, h, w = hr.data.shape
    blocks = hr.data.reshape(c, h // SCALE_FACTOR, SCALE_FACTOR, w // SCALE_FACTOR, SCALE_FACTOR)
    real = blocks.mean(axis=(2, 4)) * S2_LIKE_GAIN  # a simulated stand-in: no real pair exists offline
    return app.Roi(label="bench", name=path.stem, hr=hr, real_lr=real.astype(np.float32)), hr


def published_pipe():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import opensr_degradation

        return opensr_degradation.pipe(
            "naip_d", add_noise=True, params={"reflectance_method": ["unet_histogram_matching"]}
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--sample-dir", type=Path, default=ROOT.parent / "shared" / "sample")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not reference_is_converted(args.models):
        convert_reference(args.models)
    app = load_app()
    model = Degradation.from_pretrained(args.models / "sen2naip-degradation")
    roi, hr = make_roi(app, args.sample_dir)
    run = app.make_runner(model, [roi])
    pipe, image = published_pipe(), torch.from_numpy(hr.data)

    def reference() -> None:
        with torch.inference_mode():
            pipe.forward(image)

    med = interleaved(
        {
            "ours": lambda: run(app.SOURCE_ROI, roi.label, None, "global", True, 0),
            "model": lambda: app.degrade_input(model, hr, "global", True, 0),
            "ref": reference,
        },
        args.repeats,
        warmup=True,
    )
    print(f"CPU, {args.threads} threads, one {ROI}×{ROI} ROI, median of {args.repeats} interleaved runs")
    print(f"  Space request end to end (degrade + plots + metrics + GeoTIFF): {med['ours']:.3f} s")
    print(f"    of which the degradation (sen2naip_hub.pipeline.degrade_raster): {med['model']:.3f} s")
    print(f"  published opensr_degradation.pipe('naip_d') on the same ROI:   {med['ref']:.3f} s")
    print(f"  ratio Space request / published pipeline: {med['ours'] / med['ref']:.2f}×")
    print(f"  target < 2 s: {'met' if med['ours'] < 2.0 else 'NOT met'}")


if __name__ == "__main__":
    main()
