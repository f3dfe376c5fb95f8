"""δ alone with nodata (NaN): it spreads only as far as the PSF reaches, on every path of BlurModel."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sen2naip_hub.models import blur as blur_module
from sen2naip_hub.models.blur import DOWNSAMPLE_MODES, BlurModel, blur_downsample


def reach_mask(invalid: torch.Tensor, kernel_size: int, scale: int) -> torch.Tensor:
    """``(B, h, w)`` True where an LR pixel's footprint lies within ``kernel_size // 2`` HR px of an
    invalid HR pixel (as ``Degradation.lr_valid`` defines the reach)."""
    spread = F.max_pool2d(invalid[:, None].float(), kernel_size, stride=1, padding=kernel_size // 2)
    return F.max_pool2d(spread, scale, stride=scale)[:, 0] > 0


def _one_nan(size: tuple[int, int], at: tuple[int, int]) -> torch.Tensor:
    x = torch.rand(1, 4, *size, generator=torch.Generator().manual_seed(0))
    x[0, :, at[0], at[1]] = torch.nan
    return x


PATHS = {
    "operator": lambda model, x: model(x),
    "convolution": None,  # BlurModel with OPERATOR_MAX_SIDE below the image size
    "function": lambda model, x: blur_downsample(x, model.kernels, model.downsample, model.scale),
}


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("mode", DOWNSAMPLE_MODES)
@pytest.mark.parametrize(("size", "at"), [((64, 64), (30, 33)), ((40, 56), (0, 55)), ((9, 12), (4, 5))])
def test_one_nan_pixel_spreads_no_further_than_the_psf(path, mode, size, at, monkeypatch):
    model = BlurModel(downsample=mode)
    if path == "convolution":
        monkeypatch.setattr(blur_module, "OPERATOR_MAX_SIDE", 4)
        run = PATHS["operator"]
    else:
        run = PATHS[path]
    x = _one_nan(size, at)
    out = run(model, x)
    nan = torch.isnan(out).any(dim=1)
    allowed = reach_mask(torch.isnan(x).any(dim=1), model.kernel_size, model.scale)
    assert nan.any(), "the nodata pixel vanished"
    assert not (nan & ~allowed).any(), f"{int((nan & ~allowed).sum())} LR pixels beyond the PSF are NaN"
    assert torch.isfinite(out[:, :, ~nan[0]]).all()


def test_operator_and_convolution_paths_agree_on_nodata(monkeypatch):
    model = BlurModel()
    x = _one_nan((48, 48), (20, 21))
    x[0, 2, 5:9, 40:44] = torch.nan
    dense = model(x)
    monkeypatch.setattr(blur_module, "OPERATOR_MAX_SIDE", 4)
    conv = model(x)
    assert torch.equal(torch.isnan(dense), torch.isnan(conv))
    finite = torch.isfinite(dense)
    assert torch.allclose(dense[finite], conv[finite], atol=1e-5, rtol=0)


def test_valid_input_is_unchanged_by_the_nodata_handling():
    model = BlurModel()
    x = torch.rand(2, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(model(x), blur_downsample(x, model.kernels, model.downsample), atol=1e-6, rtol=0)
