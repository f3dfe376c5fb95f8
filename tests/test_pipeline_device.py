"""The pipeline's histogram matching runs on the model's device, not on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch

from sen2naip_hub.io import Raster
from sen2naip_hub.models import BlurModel, Degradation, HarmonizationModel, NoiseModel
from sen2naip_hub.pipeline import degrade_raster


class ReachedError(Exception):
    """Raised by the spy once it has seen what the matcher received."""


def _raster(nodata: bool) -> Raster:
    data = np.random.default_rng(0).random((4, 40, 48), dtype=np.float32)
    if nodata:
        data[:, :5, :5] = np.nan
    return Raster(data, None, rasterio.Affine.identity(), ("R", "G", "B", "NIR"))


def _spy_on_match(model: Degradation, seen: list, stop: bool) -> None:
    original = model.harmonization.match

    def spy(x, target, valid=None, mode="global"):
        seen.extend(t.device for t in (x, target, valid) if t is not None)
        if stop:
            raise ReachedError
        return original(x, target, valid, mode)

    model.harmonization.match = spy


@pytest.mark.parametrize("nodata", [False, True])
def test_matcher_receives_tensors_on_the_requested_device(nodata):
    """``meta`` stands in for a GPU on a CPU-only machine: nothing is computed, devices are kept."""
    model = Degradation(HarmonizationModel(encoder="resnet18"), BlurModel(), NoiseModel(mode="none"))
    model.harmonization.predict_target = lambda x, dtype=torch.float32: x.clone()  # autocast has no meta
    seen: list[torch.device] = []
    _spy_on_match(model, seen, stop=True)
    with pytest.raises(ReachedError):
        degrade_raster(model, _raster(nodata), device="meta", progress=False)
    assert seen and all(d.type == "meta" for d in seen), seen


def test_cpu_run_is_unchanged_and_returns_cpu_arrays():
    model = Degradation(HarmonizationModel(encoder="resnet18"), BlurModel(), NoiseModel(mode="none"))
    seen: list[torch.device] = []
    _spy_on_match(model, seen, stop=False)
    lr, hr = degrade_raster(model, _raster(True), progress=False)
    assert all(d.type == "cpu" for d in seen) and len(seen) == 3
    assert isinstance(lr.data, np.ndarray) and isinstance(hr.data, np.ndarray)
    assert lr.data.shape == (4, 10, 12) and np.isnan(hr.data[:, :5, :5]).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_matcher_runs_on_cuda():
    model = Degradation(HarmonizationModel(encoder="resnet18"), BlurModel(), NoiseModel(mode="none"))
    seen: list[torch.device] = []
    _spy_on_match(model, seen, stop=False)
    lr, _ = degrade_raster(model, _raster(True), device="cuda", progress=False)
    assert seen and all(d.type == "cuda" for d in seen), seen
    assert np.isfinite(lr.data[:, 3:, 3:]).all()
