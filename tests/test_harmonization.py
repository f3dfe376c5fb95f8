"""λ: the converted U-Net equals the published TorchScript one; histogram matching equals skimage's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import import_reference
from skimage.exposure import match_histograms as skimage_match

from sen2naip_hub.models import HarmonizationModel
from sen2naip_hub.models.histogram import match_histograms, match_histograms_local, sorted_rows

ONE_NAIP_STEP = 1 / 255


@pytest.fixture(scope="module")
def harmonization(reference_dir):
    return HarmonizationModel.from_pretrained(reference_dir / "sen2naip-harmonization")


def test_unet_equals_published_torchscript(harmonization, reference_unet, naip_tiles):
    with torch.no_grad():
        ours = harmonization.predict_target(naip_tiles[:2])
        padded = torch.nn.functional.pad(naip_tiles[:2], (0, 28, 0, 28))  # as the reference: 484 -> 512
        expected = reference_unet(padded)[..., :484, :484]
    assert torch.allclose(ours, expected, atol=1e-5, rtol=0)


def test_global_harmonization_matches_published_within_one_naip_step(
    harmonization, reference_unet, naip_tiles
):
    ref = import_reference()
    with torch.no_grad():
        ours = harmonization(naip_tiles[:2])
    for image, result in zip(naip_tiles[:2], ours, strict=True):
        expected = ref.naipd.harmonization.harmonization_03(image, unet_reflectance_model=reference_unet)
        assert float((result - expected.float()).abs().max()) <= ONE_NAIP_STEP


def test_histogram_matching_equals_skimage_on_real_naip(naip_tiles):
    reference = naip_tiles.flip(0) ** 1.7  # other dates, other radiometry
    ours = match_histograms(naip_tiles, reference)
    for image, ref_image, result in zip(naip_tiles, reference, ours, strict=True):
        expected = skimage_match(image.numpy(), ref_image.numpy(), channel_axis=0)
        assert np.abs(result.numpy() - expected).max() <= ONE_NAIP_STEP
        assert np.abs(result.numpy() - expected).max() < 1e-5  # in fact equal up to float rounding


def test_histogram_matching_float_source_and_other_reference_size():
    g = torch.Generator().manual_seed(3)
    source, reference = torch.rand(2, 4, 40, 50, generator=g), torch.rand(2, 4, 23, 31, generator=g) ** 3
    ours = match_histograms(source, reference)
    for i in range(2):
        expected = skimage_match(source[i].numpy(), reference[i].numpy(), channel_axis=0)
        assert np.abs(ours[i].numpy() - expected).max() < 1e-5


def test_masked_pixels_stay_out_of_both_histograms():
    g = torch.Generator().manual_seed(4)
    source, reference = torch.rand(1, 4, 30, 30, generator=g), torch.rand(1, 4, 30, 30, generator=g) * 0.3
    valid = torch.ones(1, 30, 30, dtype=torch.bool)
    valid[:, :10] = False
    masked = match_histograms(source, reference, valid, valid)
    expected = skimage_match(source[0, :, 10:].numpy(), reference[0, :, 10:].numpy(), channel_axis=0)
    assert np.abs(masked[0, :, 10:].numpy() - expected).max() < 1e-5
    assert torch.equal(masked[..., :10, :], source[..., :10, :])


def test_local_matching_recovers_a_monotone_transform_without_seams(naip_tiles):
    source = naip_tiles[:1]
    reference = 0.2 * source + 0.01  # the same monotone map in every window
    local = match_histograms_local(source, reference, window=64)
    assert torch.allclose(local, reference, atol=1e-6)


def test_local_matching_follows_spatially_varying_radiometry(naip_tiles):
    source = naip_tiles[:1]
    gain = torch.linspace(0.2, 0.6, source.shape[-1]).reshape(1, 1, 1, -1)
    reference = source * gain  # radiometry changes from left to right
    local = match_histograms_local(source, reference, window=64)
    global_ = match_histograms(source, reference)
    local_error = (local - reference).abs().mean()
    global_error = (global_ - reference).abs().mean()
    assert local_error < 0.5 * global_error
    # no seams: neighbouring columns differ no more than in the reference itself
    assert (local.diff(dim=-1).abs().mean()) < 1.2 * reference.diff(dim=-1).abs().mean()


def test_modes_and_identity(harmonization, naip_tiles):
    x = naip_tiles[:1, :, :64, :64]
    assert torch.equal(harmonization(x, mode="none"), x)
    with pytest.raises(ValueError, match="'median'"):
        harmonization(x, mode="median")
    with torch.no_grad():
        assert harmonization(x, mode="local").shape == x.shape


def test_bf16_target_histogram_equals_skimage_on_real_naip(harmonization, naip_tiles):
    """A bf16 U-Net output is counted over all 65,536 bf16 values instead of sorted: still exact."""
    harmonization.precision = "bf16"
    try:
        with torch.no_grad():
            target = harmonization.predict_target(naip_tiles[:2], dtype=None)
    finally:
        harmonization.precision = "fp32"
    assert target.dtype == torch.bfloat16
    ours = match_histograms(naip_tiles[:2], target)
    for image, ref_image, result in zip(naip_tiles[:2], target.float(), ours, strict=True):
        expected = skimage_match(image.numpy(), ref_image.numpy(), channel_axis=0)
        assert np.abs(result.numpy() - expected).max() < 1e-6


@pytest.mark.parametrize("threads", [1, 2, 64])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sorted_rows_equals_torch_sort(dtype, threads, monkeypatch):
    """numpy's sort on the CPU, rows split over threads: the same values as ``torch.sort`` (ties,
    signed zeros, infinities and NaN last included), for inference and autograd tensors."""
    g = torch.Generator().manual_seed(9)
    x = (torch.rand(5, 4001, generator=g, dtype=dtype) - 0.5).round(decimals=2)  # many ties
    x[0, :7] = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, 0.0, float("nan"), 1.0])
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    expected = torch.sort(x, dim=1).values
    assert torch.equal(sorted_rows(x).nan_to_num(7.0), expected.nan_to_num(7.0))
    assert torch.equal(sorted_rows(x).isnan(), expected.isnan())
    with torch.inference_mode():
        inference = x.clone()
        assert torch.equal(sorted_rows(inference[1:]), expected[1:])
    leaf = x[1:].clone().requires_grad_()
    sorted_rows(leaf).sum().backward()  # through torch.sort: autograd keeps the graph
    assert torch.equal(leaf.grad, torch.ones_like(leaf))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_reference_equals_sort_with_masks_signs_and_float_source(dtype):
    g = torch.Generator().manual_seed(5)
    source = torch.rand(2, 4, 30, 30, generator=g)
    reference = ((torch.rand(2, 4, 30, 30, generator=g) - 0.3) * 0.5).to(dtype)  # negative values too
    reference[0, 0, :3] = -0.0  # signed zeros are one value, as in skimage
    reference[0, 0, 3:6] = 0.0
    valid = torch.ones(2, 30, 30, dtype=torch.bool)
    valid[0, :10] = False
    for s_valid in (None, valid):
        ours = match_histograms(source, reference, s_valid, s_valid)
        exact = match_histograms(source, reference.float(), s_valid, s_valid)  # sort path
        assert ours.dtype == torch.float32
        assert torch.allclose(ours, exact, atol=1e-7, rtol=0)
    expected = skimage_match(source[1].numpy(), reference[1].float().numpy(), channel_axis=0)
    assert np.abs(match_histograms(source, reference)[1].numpy() - expected).max() < 1e-6
    assert torch.equal(match_histograms(source, reference, valid, valid)[0, :, :10], source[0, :, :10])


def test_8bit_source_takes_the_level_path_however_k_over_255_was_rounded(naip_tiles):
    """CUDA computes ``k / 255`` as ``k * (1 / 255)``, 1 ulp off for some k: still the 8-bit fast path,
    with the same levels and the same matched image as the correctly rounded source."""
    from sen2naip_hub.models.histogram import source_levels

    counts8 = torch.round(naip_tiles[:2] * 255)
    divided, multiplied = counts8 / 255, counts8 * torch.tensor(1 / 255)
    assert not torch.equal(divided, multiplied)
    rows = divided.shape[0] * divided.shape[1]
    a, b = source_levels(divided.reshape(rows, -1), None), source_levels(multiplied.reshape(rows, -1), None)
    assert a is not None and b is not None
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    target = naip_tiles[1:3].flip(0) * 0.7
    assert torch.equal(match_histograms(divided, target), match_histograms(multiplied, target))
    assert source_levels((divided + 1e-4 / 255 * 2).reshape(rows, -1), None) is None  # off the grid


def test_triton_kernels_equal_bincount_in_the_interpreter():
    """The Triton kernels of the GPU fast path, run by Triton's interpreter on the CPU."""
    pytest.importorskip("triton")
    script = Path(__file__).with_name("kernels_check.py")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
