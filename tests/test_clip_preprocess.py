"""CLIP preprocessing in torch (dataset_builder.synthetic.clip.ClipPreprocess) against open_clip's own PIL
transform, on real NAIP tiles: 484-px windows (downsampled to 224, as real builds) and 128-px ones
(upsampled, as the tests' builds). open_clip's real ``ViT-S-32`` with seeded random weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SAMPLE_DIR
from PIL import Image
from rasterio.windows import Window

from dataset_builder.core.facts import CLIP_TORCH_VS_PIL_MIN_COSINE
from dataset_builder.synthetic.clip import ClipEmbedder, ClipPreprocess, rgb_counts
from dataset_builder.synthetic.selection import SelectionError
from sen2naip_hub.io import read_raster

NAIP_DIR = SAMPLE_DIR / "naip"
TEST_CLIP_MODEL = "ViT-S-32"
#: Two windows per image (top-left, and one offset by these rows and columns).
OFFSETS = ((0, 0), (200, 400))
#: PIL rounds its resized image to 8 bits; the float resize differs from it by about one 8-bit step.
MAX_PIXEL_DIFF = 1.5 / 255


@pytest.fixture(scope="module")
def embedder() -> ClipEmbedder:
    torch.set_num_threads(2)
    return ClipEmbedder(TEST_CLIP_MODEL, pretrained=None, batch_size=16, seed=0)


def _rgb(size: int) -> np.ndarray:
    paths = sorted(NAIP_DIR.glob("*.tif"))[:5]
    if not paths:
        pytest.skip(f"real NAIP sample not found in {NAIP_DIR}")
    windows = [Window(col, row, size, size) for row, col in OFFSETS]
    return np.stack([rgb_counts(read_raster(p, window=w).data[:3]) for p in paths for w in windows])


def _pil_pixels(embedder: ClipEmbedder, rgb: np.ndarray) -> torch.Tensor:
    images = [Image.fromarray(np.ascontiguousarray(x.transpose(1, 2, 0)), mode="RGB") for x in rgb]
    return torch.stack([embedder.pil_transform(image) for image in images])


@pytest.mark.parametrize("size", [484, 128])
def test_torch_preprocessing_matches_open_clips_pil_transform(embedder, size) -> None:
    rgb = _rgb(size)
    reference = _pil_pixels(embedder, rgb)
    pixels = embedder.preprocess(torch.from_numpy(rgb))
    assert pixels.shape == reference.shape == (len(rgb), 3, 224, 224)
    std = embedder.preprocess.std
    assert float(((pixels - reference).abs() * std).max()) <= MAX_PIXEL_DIFF
    with torch.inference_mode():
        expected = torch.nn.functional.normalize(embedder.model.encode_image(reference).float(), dim=-1)
    cosine = (torch.from_numpy(embedder.embed_counts(rgb)) * expected).sum(1)
    assert float(cosine.min()) >= CLIP_TORCH_VS_PIL_MIN_COSINE


def test_reflectance_and_uint8_inputs_embed_alike(embedder) -> None:
    rgb = _rgb(128)[:4]
    reflectance = rgb.astype(np.float32) / 255
    np.testing.assert_array_equal(embedder.embed(list(reflectance)), embedder.embed(list(rgb)))
    assert embedder.dtype is None  # fp32 on the CPU ("auto")


def test_mean_std_and_size_come_from_the_models_config() -> None:
    config = {"size": (96, 96), "mean": (0.1, 0.2, 0.3), "std": (0.5, 0.5, 0.25), "interpolation": "bicubic"}
    preprocess = ClipPreprocess(config | {"resize_mode": "shortest"})
    ones = torch.full((1, 3, 120, 200), 255, dtype=torch.uint8)
    out = preprocess(ones)
    assert out.shape == (1, 3, 96, 96)
    np.testing.assert_allclose(out[0, :, 0, 0].numpy(), [(1 - 0.1) / 0.5, (1 - 0.2) / 0.5, (1 - 0.3) / 0.25])
    assert preprocess.resized_shape(120, 200) == (96, 160)
    with pytest.raises(SelectionError, match="resize_mode 'squash'"):
        ClipPreprocess(config | {"resize_mode": "squash"})
    with pytest.raises(SelectionError, match="uint8 RGB"):
        preprocess(ones.float())


def test_bad_precision_is_a_typed_error() -> None:
    with pytest.raises(SelectionError, match="precision"):
        ClipEmbedder(TEST_CLIP_MODEL, precision="fp16")
