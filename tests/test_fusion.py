"""The fused inference copy of the U-Net (BatchNorms folded, symmetric padding moved into the
convolutions): the same function as the published module, and the published module is untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sen2naip_hub.models.fusion import (
    FusionError,
    fold_batchnorms,
    fold_symmetric_padding,
    fuse_for_inference,
)
from sen2naip_hub.models.harmonization import HarmonizationModel


def _with_random_statistics(model: HarmonizationModel, seed: int = 0) -> HarmonizationModel:
    """BatchNorm statistics and affine terms far from identity, so folding them matters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in model.unet.modules():
            if isinstance(bn, nn.BatchNorm2d):
                n = bn.num_features
                bn.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
                bn.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                bn.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                bn.bias.copy_(torch.rand(n, generator=generator) - 0.5)
    return model


@pytest.fixture(scope="module")
def model() -> HarmonizationModel:
    torch.manual_seed(0)
    return _with_random_statistics(HarmonizationModel())


def test_fused_unet_computes_the_same_function(model):
    x = torch.rand(2, 4, 100, 92, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = model.predict_target(x)
        model.fuse()
        try:
            ours = model.predict_target(x)
        finally:
            model.unfuse()
    assert (ours - reference).abs().max() <= 1e-5 * reference.abs().max()


def test_fusion_removes_every_batchnorm_and_the_symmetric_pads(model):
    fused = fuse_for_inference(model.unet)
    assert not [m for m in fused.modules() if isinstance(m, nn.BatchNorm2d)]
    pads = [m for m in fused.modules() if isinstance(m, nn.ZeroPad2d)]
    before = [m for m in model.unet.modules() if isinstance(m, nn.ZeroPad2d)]
    assert 0 < len(pads) < len(before)
    assert all(p.padding[0] != p.padding[1] for p in pads)  # only asymmetric (stride-2) pads stay
    assert [m for m in model.unet.modules() if isinstance(m, nn.BatchNorm2d)]  # the original keeps its own


def test_fusing_leaves_the_state_dict_and_follows_the_model(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.fuse()
    try:
        after = model.state_dict()
        assert after.keys() == before.keys()
        assert all(torch.equal(after[k], before[k]) for k in before)
        model.to(torch.float64)
        assert model._fused_unet.encoder._conv_stem.weight.dtype == torch.float64
        model.to(torch.float32)
        model.load_state_dict(model.state_dict())
        assert not model.fused  # new weights: the copy is stale, so it is gone
        model.fuse()
        model.train()
        assert not model.fused
    finally:
        model.unfuse()
        model.eval()


def test_fold_refuses_training_mode_and_unknown_layouts():
    with pytest.raises(FusionError, match="eval mode"):
        fold_batchnorms(nn.Sequential(nn.Conv2d(2, 2, 3), nn.BatchNorm2d(2)))
    with pytest.raises(FusionError, match="could not be folded"):
        fold_batchnorms(nn.Sequential(nn.BatchNorm2d(2), nn.Conv2d(2, 2, 3)).eval())


def test_symmetric_padding_moves_into_the_convolution_and_asymmetric_stays():
    class SameConv(nn.Conv2d):
        def __init__(self, padding: tuple[int, int, int, int], stride: int) -> None:
            super().__init__(3, 3, 3, stride=stride)
            self.static_padding = nn.ZeroPad2d(padding)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return nn.functional.conv2d(
                self.static_padding(x), self.weight, self.bias, self.stride, self.padding
            )

    symmetric, asymmetric = SameConv((1, 1, 1, 1), 1), SameConv((0, 1, 0, 1), 2)
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    expected = symmetric(x), asymmetric(x)
    assert fold_symmetric_padding(nn.Sequential(symmetric, asymmetric)) == 1
    assert symmetric.padding == (1, 1) and isinstance(symmetric.static_padding, nn.Identity)
    assert isinstance(asymmetric.static_padding, nn.ZeroPad2d)
    assert torch.allclose(symmetric(x), expected[0], atol=1e-6)
    assert torch.equal(asymmetric(x), expected[1])


def test_fp16_is_a_precision():
    model = HarmonizationModel(precision="fp16")
    assert model.precision == "fp16"
    with pytest.raises(ValueError, match="precision must be one of"):
        HarmonizationModel(precision="fp8")
