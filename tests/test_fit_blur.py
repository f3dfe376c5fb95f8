"""`sen2naip fit blur`: the batched grid search equals the library's δ and recovers a known δ from
pairs made from the real NAIP sample (5 m, used as the HR grid)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SAMPLE_DIR

from dataset_builder.cross_sensor.align import apply_shift
from dataset_builder.fit.blur_outputs import save_blur_search
from dataset_builder.fit.blur_search import (
    BlurSearchError,
    downsample_taps,
    estimate_shifts,
    predict_grid,
    search_blur,
)
from dataset_builder.fit.pairs import load_pairs, split_by_roi, write_roi_folders
from sen2naip_hub.models.blur import DOWNSAMPLE_MODES, KERNEL_FAMILIES, BlurModel, blur_downsample, kernel1d

SAMPLE = SAMPLE_DIR
#: The hidden degradation: σ differ from the published 3.0 / 2.9 / 2.9 / 3.4 (the issue's example).
TRUE_SIGMAS = (2.2, 3.6, 2.7, 4.1)
TRUE_MODE = "bilinear"
#: Additive Gaussian noise (reflectance) and sub-pixel shifts (LR px, uniform per axis) of the pairs.
NOISE_STD = 0.005
MAX_SHIFT_LR = 0.5
TILE, TILES_PER_DATE, SEED = 200, 2, 0
SIGMA_TOLERANCE = 0.15


def _simulated_pairs() -> tuple[torch.Tensor, torch.Tensor, np.ndarray, list[str]]:
    from sen2naip_hub.io import read_raster

    files = sorted((SAMPLE / "naip").glob("*.tif"))
    assert files, f"real NAIP sample missing under {SAMPLE}"
    rng = np.random.default_rng(SEED)
    hrs, ids = [], []
    for path in files:
        data = read_raster(path).data
        for _ in range(TILES_PER_DATE):
            y, x = rng.integers(0, data.shape[1] - TILE), rng.integers(0, data.shape[2] - TILE)
            hrs.append(data[:, y : y + TILE, x : x + TILE])
            ids.append(f"{path.stem}_{y}_{x}")
    hr = np.stack(hrs)
    assert np.isfinite(hr).all()
    shifts = rng.uniform(-MAX_SHIFT_LR, MAX_SHIFT_LR, size=(len(hr), 2))
    shifted = np.stack([apply_shift(h, (4 * s[0], 4 * s[1])) for h, s in zip(hr, shifts, strict=True)])
    with torch.no_grad():
        lr = BlurModel(sigmas=TRUE_SIGMAS, downsample=TRUE_MODE)(torch.from_numpy(shifted))
    lr = lr + NOISE_STD * torch.randn(lr.shape, generator=torch.Generator().manual_seed(SEED))
    return torch.from_numpy(hr), lr.clamp(0, 1), shifts, ids


@pytest.fixture(scope="module")
def pair_folder(tmp_path_factory) -> tuple[Path, np.ndarray]:
    hr, lr, shifts, ids = _simulated_pairs()
    folder = tmp_path_factory.mktemp("pairs")
    meta = {"simulated": True, "note": "real NAIP (5 m) degraded with a known δ, shift and noise"}
    write_roi_folders(folder, hr, lr, ids, meta)
    return folder, shifts


@pytest.mark.parametrize("mode", DOWNSAMPLE_MODES)
def test_grid_prediction_equals_blur_downsample(mode):
    x = torch.rand(2, 4, 96, 88, generator=torch.Generator().manual_seed(1))
    sigmas = torch.tensor([1.3, 3.1], dtype=torch.float64)
    psf = torch.cat([kernel1d(f, sigmas, 13, dtype=torch.float64) for f in KERNEL_FAMILIES])
    pred, (i0, ni, j0, nj) = predict_grid(x, psf, downsample_taps(mode), torch.zeros(2, 3, 2), 4, 3)
    assert pred.shape == (2, 4, 6, ni, nj) and ni > 0 and nj > 0
    for f, family in enumerate(KERNEL_FAMILIES):
        for s in range(2):
            kernels = kernel1d(family, sigmas[s], 13).expand(4, 13)
            expected = blur_downsample(x, kernels, mode)[..., i0 : i0 + ni, j0 : j0 + nj]
            assert torch.allclose(pred[:, :, 2 * f + s], expected, atol=1e-6)


def test_downsample_taps_are_the_library_modes():
    assert downsample_taps("bilinear").tolist() == [0.0, 0.5, 0.5, 0.0]
    assert downsample_taps("area").tolist() == [0.25] * 4
    assert downsample_taps("nearest").tolist() == [1.0, 0.0, 0.0, 0.0]
    assert torch.allclose(downsample_taps("bicubic").sum(), torch.tensor(1.0, dtype=torch.float64))


def test_batched_shift_estimate():
    gen = torch.Generator().manual_seed(3)
    base = torch.nn.functional.avg_pool2d(torch.rand(3, 4, 200, 200, generator=gen), 5, 1, 2)
    true = np.array([[0.3, -0.45], [-0.7, 0.2], [0.0, 0.9]])
    moved = torch.stack(
        [torch.from_numpy(apply_shift(b.numpy(), tuple(4 * t))) for b, t in zip(base, true, strict=True)]
    )
    kernels = kernel1d("gaussian", torch.tensor([3.0] * 4), 13)
    est = estimate_shifts(
        blur_downsample(base, kernels, "bilinear"), blur_downsample(moved, kernels, "bilinear")
    )
    assert np.abs(est.numpy() - true).max() < 0.05


def test_recovers_known_sigmas_and_mode_from_real_naip(pair_folder, tmp_path):
    folder, true_shifts = pair_folder
    pairs = load_pairs(folder)
    assert len(pairs) == 10 * TILES_PER_DATE and pairs.lr.shape[-1] == TILE // 4
    result = search_blur(pairs.hr, pairs.lr)
    assert result.kernel == "gaussian"
    assert result.downsample == TRUE_MODE
    errors = np.abs(np.array(result.sigmas) - np.array(TRUE_SIGMAS))
    assert errors.max() <= SIGMA_TOLERANCE, (result.sigmas, TRUE_SIGMAS)
    f, m = result.families.index("gaussian"), result.modes.index(TRUE_MODE)
    assert np.abs(result.shifts[:, f, m].numpy() - true_shifts).max() < 0.1  # LR px

    repo = save_blur_search(result, tmp_path / "blur")
    loaded = BlurModel.from_pretrained(repo)
    assert loaded.downsample == TRUE_MODE and np.allclose(loaded.sigmas, result.sigmas)
    assert (repo / "error_curves.png").stat().st_size > 10_000
    summary = json.loads((repo / "blur_search.json").read_text())
    assert summary["kernel"] == "gaussian" and len(summary["curves"]["B04"]) == 40


def test_bad_pairs_fail_early():
    with pytest.raises(BlurSearchError, match="must be 4"):
        search_blur(torch.rand(1, 4, 64, 64), torch.rand(1, 4, 15, 16))
    with pytest.raises(BlurSearchError, match="NaN"):
        search_blur(torch.full((1, 4, 64, 64), float("nan")), torch.rand(1, 4, 16, 16))


def test_split_by_roi_keeps_rois_together():
    ids = [f"roi{i % 7}" for i in range(40)]
    train, val = split_by_roi(ids, 0.3)
    assert train and val and not {ids[i] for i in train} & {ids[i] for i in val}
    assert split_by_roi(ids, 0.3) == (train, val)
