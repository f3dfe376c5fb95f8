"""δ: fidelity to the published blur, kernel families, batching, gradients, Hub round trip."""

from __future__ import annotations

import pytest
import torch
from conftest import import_reference

from sen2naip_hub.errors import InvalidImageError
from sen2naip_hub.models.blur import (
    DOWNSAMPLE_MODES,
    KERNEL_FAMILIES,
    BlurModel,
    blur,
    blur_downsample,
    downsample,
    kernel1d,
)


def test_matches_published_blur_on_real_naip(naip_tiles):
    ref = import_reference()
    model = BlurModel()
    with torch.no_grad():
        ours = model(naip_tiles)
    for image, lr in zip(naip_tiles, ours, strict=True):
        expected = ref.naipd.blur.blur(image, {})
        assert lr.shape == expected.shape == (4, 121, 121)
        assert torch.allclose(lr, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", KERNEL_FAMILIES)
def test_kernel_families_are_normalised_with_requested_spread(family):
    sigmas = torch.tensor([1.0, 2.0, 3.0])
    kernels = kernel1d(family, sigmas, 61, dtype=torch.float64)
    assert kernels.shape == (3, 61)
    assert torch.allclose(kernels.sum(-1), torch.ones(3, dtype=torch.float64))
    x = torch.arange(61, dtype=torch.float64) - 30
    mean = (kernels * x).sum(-1)
    std = torch.sqrt((kernels * (x - mean[:, None]) ** 2).sum(-1))
    assert torch.allclose(std, sigmas.double(), rtol=0.02)
    assert torch.allclose(mean, torch.zeros(3, dtype=torch.float64), atol=0.05)


def test_gaussian_kernel_equals_torchvision():
    from torchvision.transforms._functional_tensor import _get_gaussian_kernel1d

    assert torch.allclose(
        kernel1d("gaussian", 2.9, 13),
        _get_gaussian_kernel1d(13, 2.9, torch.float32, torch.device("cpu")),
        atol=1e-7,
    )


@pytest.mark.parametrize("mode", DOWNSAMPLE_MODES)
def test_batch_equals_one_by_one_and_module_equals_function(mode):
    x = torch.rand(5, 4, 48, 64, generator=torch.Generator().manual_seed(1))
    model = BlurModel(sigmas=(1.5, 2.0, 2.5, 3.0), downsample=mode)
    batch = model(x)
    assert batch.shape == (5, 4, 12, 16)
    singles = torch.cat([model(x[i : i + 1]) for i in range(5)])
    assert torch.equal(batch, singles)
    # the module multiplies by operator matrices, the function convolves: equal up to float rounding
    assert torch.allclose(batch, blur_downsample(x, model.kernels, mode), atol=1e-6, rtol=0)


def test_gradcheck():
    model = BlurModel(kernel="gumbel").double()
    x = torch.rand(1, 4, 16, 16, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(model, (x,))


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((4, 32, 32), "expected a \\(B, C, H, W\\)"),
        ((1, 3, 32, 32), "expected 4 bands"),
        ((1, 4, 3, 3), "smaller"),
    ],
)
def test_bad_shapes_fail_early(shape, message):
    with pytest.raises(InvalidImageError, match=message):
        BlurModel()(torch.rand(shape))


def test_bad_parameters_name_the_value():
    with pytest.raises(ValueError, match="'lanczos'"):
        BlurModel(downsample="lanczos")
    with pytest.raises(ValueError, match="4 sigmas"):
        BlurModel(sigmas=(1.0, 2.0))
    with pytest.raises(ValueError, match="odd"):
        kernel1d("gaussian", 1.0, 12)


@pytest.mark.parametrize("mode", DOWNSAMPLE_MODES)
@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("size", [(64, 64), (61, 70), (15, 18), (5, 9)])
def test_operator_matrices_equal_blur_then_downsample(mode, scale, size):
    """BlurModel applies δ as two matrix products; they must equal the convolutions that define δ,
    borders (reflect, or replicate for tiny images) included."""
    x = torch.rand(2, 4, *size, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    model = BlurModel(sigmas=(1.0, 2.0, 3.0, 3.4), kernel="gumbel", downsample=mode, scale=scale).double()
    fast = model(x)
    slow = downsample(blur(x, model.kernels), mode, scale)
    assert fast.shape == slow.shape
    assert torch.allclose(fast, slow, atol=1e-12, rtol=0)
    assert not torch.allclose(fast, downsample(x, mode, scale), atol=1e-3)  # the blur did act


@pytest.mark.parametrize("inference", [False, True])
def test_operator_cache_follows_the_kernels_also_for_inference_tensors(inference):
    """The cached matrices are rebuilt when the kernels change in place, also for a model built under
    ``torch.inference_mode`` (whose tensors have no version counter)."""
    x = torch.rand(1, 4, 40, 40, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode(inference):
        model = BlurModel(sigmas=(1.0, 2.0, 3.0, 3.4))
    with torch.inference_mode():
        first = model(x)
        assert torch.equal(model(x), first)  # cached
        model.kernels.copy_(kernel1d("gaussian", torch.tensor([0.5, 0.5, 0.5, 0.5]), model.kernel_size))
        assert torch.allclose(model(x), blur_downsample(x, model.kernels, model.downsample, model.scale))
        assert not torch.allclose(model(x), first, atol=1e-3)
