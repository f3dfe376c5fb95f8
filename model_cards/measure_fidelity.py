"""Measure the converted models against the published SEN2NAIP pipeline; write ``fidelity.json``.

The same comparisons as ``tests/test_blur.py``, ``test_harmonization.py``, ``test_noise.py`` and
``test_degradation.py``, on the same data (the first three real NAIP images of ``../shared/sample``,
top-left 484 × 484 px), but recorded as numbers for the model cards instead of asserted::

    .venv/bin/python model_cards/measure_fidelity.py --models models --out model_cards/fidelity.json

Reference: PyPI ``opensr-degradation==1.0.1`` (the SEN2NAIP authors' package), imported as the tests
import it. ``sen2naip publish`` reads the JSON and fills the model cards with it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from sen2naip_hub import Degradation, __version__
from sen2naip_hub.constants import REFERENCE_PACKAGE, REFERENCE_VERSION
from sen2naip_hub.convert import reference_package_dir
from sen2naip_hub.io import read_raster
from sen2naip_hub.models.noise import published_noise_axes

COMMAND = "python model_cards/measure_fidelity.py --models models --out model_cards/fidelity.json"
TILE = 484
N_TILES = 3
NOISE_SAMPLES_PER_BIN = 20_000


def _reference():
    with warnings.catch_warnings():  # pkg_resources and torch.jit deprecation warnings
        warnings.simplefilter("ignore")
        import opensr_degradation
        import opensr_degradation.naipd.blur
        import opensr_degradation.naipd.harmonization
        import opensr_degradation.naipd.noise

        unet = torch.jit.load(str(reference_package_dir() / "naipd/models/model_unet.pt"), map_location="cpu")
    table = torch.load(str(reference_package_dir() / "naipd/models/model_noise.pt"), weights_only=True)
    return opensr_degradation, unet.eval(), table.numpy()


def _tiles(sample_dir: Path) -> tuple[torch.Tensor, list[str]]:
    files = sorted((sample_dir / "naip").glob("*.tif"))[:N_TILES]
    if len(files) < N_TILES:
        sys.exit(f"error: expected {N_TILES} NAIP GeoTIFFs in {sample_dir / 'naip'}")
    tiles = [torch.from_numpy(read_raster(f).data[:, :TILE, :TILE]) for f in files]
    return torch.stack(tiles), [f.name for f in files]


def _diff(ours: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    d = (ours.double() - ref.double()).abs()
    return {"max_abs_diff": float(d.max()), "mean_abs_diff": float(d.mean())}


def _merge(diffs: list[dict[str, float]]) -> dict[str, float]:
    return {
        "max_abs_diff": max(d["max_abs_diff"] for d in diffs),
        "mean_abs_diff": float(np.mean([d["mean_abs_diff"] for d in diffs])),
    }


def measure_blur(model: Degradation, ref, tiles: torch.Tensor) -> dict[str, float]:
    ours = model.blur(tiles)
    return _merge([_diff(o, ref.naipd.blur.blur(t, {})) for o, t in zip(ours, tiles, strict=True)])


def measure_unet(model: Degradation, unet, tiles: torch.Tensor) -> dict[str, float]:
    ours = model.harmonization.predict_target(tiles)
    pad = (-TILE) % 32 or 32
    expected = unet(torch.nn.functional.pad(tiles, (0, pad, 0, pad)))[..., :TILE, :TILE]
    return _diff(ours, expected)


def measure_harmonization(model: Degradation, ref, unet, tiles: torch.Tensor) -> dict[str, float]:
    ours = model.harmonization(tiles, mode="global")
    diffs = [
        _diff(o, ref.naipd.harmonization.harmonization_03(t, unet_reflectance_model=unet))
        for o, t in zip(ours, tiles, strict=True)
    ]
    return {**_merge(diffs), "one_naip_step": 1 / 255}


def measure_pipeline(model: Degradation, ref, tiles: torch.Tensor) -> dict[str, float]:
    pipe = ref.pipe("naip_d", add_noise=False, params={"reflectance_method": ["unet_histogram_matching"]})
    ours = model(tiles, noise=False).lr
    return _merge([_diff(o, pipe.forward(t)[0][0]) for o, t in zip(ours, tiles, strict=True)])


def measure_noise(model: Degradation, table: np.ndarray) -> dict[str, float]:
    """Per reflectance bin: sampled noise mean and std vs the table's, as a fraction of its std."""
    edges, values = (t.numpy() for t in published_noise_axes())
    inner = (edges[1:] + edges[:-1]) / 2
    centres = np.concatenate([[edges[0] - 1e-3], inner, [edges[-1] + 0.1]])
    x = torch.from_numpy(np.repeat(centres, NOISE_SAMPLES_PER_BIN).astype(np.float32)).reshape(1, 1, 101, -1)
    noise = model.noise.sample(x.expand(1, 4, -1, -1).contiguous(), torch.Generator().manual_seed(0))
    noise = noise[0].double().numpy()
    mean_err, std_err = [], []
    for row in range(len(centres)):
        p = table[row] / table[row].sum()
        mean = (p * values).sum()
        std = np.sqrt((p * (values - mean) ** 2).sum())
        draw = noise[:, row].ravel()
        mean_err.append(abs(draw.mean() - mean) / std)
        std_err.append(abs(draw.std() - std) / std)
    return {
        "bins": len(centres),
        "max_mean_error_in_std": float(max(mean_err)),
        "max_std_relative_error": float(max(std_err)),
        "samples_per_bin": NOISE_SAMPLES_PER_BIN,
    }


def measure(models_dir: Path, sample_dir: Path) -> dict:
    model = Degradation.from_pretrained(models_dir / "sen2naip-degradation")
    ref, unet, table = _reference()
    tiles, names = _tiles(sample_dir)
    with torch.no_grad():
        metrics = {
            "blur": measure_blur(model, ref, tiles),
            "unet": measure_unet(model, unet, tiles),
            "harmonization_global": measure_harmonization(model, ref, unet, tiles),
            "degradation_without_noise": measure_pipeline(model, ref, tiles),
            "noise": measure_noise(model, table),
        }
    return {
        "command": COMMAND,
        "measured_on": dt.date.today().isoformat(),
        "reference": f"{REFERENCE_PACKAGE}=={REFERENCE_VERSION}",
        "sen2naip_hub": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "data": f"real NAIP, top-left {TILE}×{TILE} px of {', '.join(names)} (../shared/sample/naip)",
        "units": "reflectance in [0, 1] unless named otherwise",
        "metrics": metrics,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--sample-dir", type=Path, default=Path("../shared/sample"))
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("fidelity.json"))
    args = parser.parse_args()
    torch.manual_seed(0)
    result = measure(args.models, args.sample_dir)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(result["metrics"], indent=2))


if __name__ == "__main__":
    main()
