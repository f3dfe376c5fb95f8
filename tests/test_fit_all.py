"""``sen2naip fit all``: blur search + harmonization + noise on pairs from the real sample, assembled into
a Degradation repo with a report. A tiny budget: this checks the assembly and the report, not quality
(the three parts' quality is checked in test_fit_blur/harmonization/noise)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from conftest import NAIP_FILES, SAMPLE_DIR

from dataset_builder.fit.pairs import write_roi_folders
from sen2naip_hub import BlurModel, Degradation
from sen2naip_hub.cli import main

TILE = 96
TRUE_SIGMAS = (2.2, 3.6, 2.7, 4.1)


def _pair_folder(root: Path) -> Path:
    """12 ROI folders: real NAIP tiles, LR = a known blur + a gain, simulated (and labelled so)."""
    from sen2naip_hub.io import read_raster

    tiles, ids = [], []
    for path in NAIP_FILES[:6]:
        data = read_raster(path).data
        for y, x in ((0, 0), (TILE, 2 * TILE)):
            tiles.append(data[:, y : y + TILE, x : x + TILE])
            ids.append(f"{path.stem}_{y}_{x}")
    hr = torch.from_numpy(np.stack(tiles))
    with torch.no_grad():
        lr = (BlurModel(sigmas=TRUE_SIGMAS)(hr) * 0.8).clamp(0, 1)
    folder = root / "pairs"
    write_roi_folders(folder, hr, lr, ids, {"simulated": True, "note": "real NAIP, known blur and gain"})
    return folder


def test_fit_all_assembles_a_loadable_degradation_and_a_report(tmp_path, sample_dir):
    pairs, out = _pair_folder(tmp_path), tmp_path / "fit"
    argv = ["fit", "all", str(pairs), "--out", str(out), "--harmonization-steps", "2", "--noise-steps", "5"]
    argv += ["--batch-size", "2", "--crop", "64", "--sample-dir", str(SAMPLE_DIR)]
    assert main(argv) == 0
    for part in ("blur", "harmonization", "noise", "degradation"):
        assert (out / part / "config.json").is_file(), part
    model = Degradation.from_pretrained(out / "degradation")
    blur = BlurModel.from_pretrained(out / "blur")
    assert model.blur.sigmas == blur.sigmas
    with torch.no_grad():
        lr = model(torch.rand(1, 4, 64, 64), generator=torch.Generator().manual_seed(0)).lr
    assert lr.shape == (1, 4, 16, 16) and torch.isfinite(lr).all()
    report = (out / "report.md").read_text()
    for baseline in ("identity", "bicubic"):
        assert baseline in report
    assert "MAE" in report and "angle" in report.lower()
    assert list(out.glob("*.png")), "the report's figures"
