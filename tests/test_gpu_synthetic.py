"""The synthetic stage on the GPU (``pytest -m gpu``; deselected by default): the torch CLIP preprocessing,
bf16 CLIP, k-means++ and a degradation task give the CPU path's results within their tolerances.

Needs torch, rasterio, pydantic, open_clip_torch and segmentation_models_pytorch on the GPU machine; tiles
come from the ``naip_tiles`` fixture (``$SEN2NAIP_TILES_NPY`` there), the published weights from
``reference_dir``.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
CLIP_MODEL = "ViT-B-32"
#: bf16 CLIP on the GPU vs fp32 on the CPU, random weights: smallest cosine of the embeddings.
BF16_MIN_COSINE = 0.99
#: The same float32 preprocessing on two devices: largest difference (normalised units).
PREPROCESS_ATOL = 1e-4
#: A degradation task on the GPU vs the CPU path, |ΔLR| in reflectance: p99.9 within issue 16's 1/255 for
#: the default GPU path (fp32) and the fast path's precision (fp16). fp32 on CUDA runs its convolutions in
#: TF32 (PyTorch's cuDNN default), so it is not bit-equal to the CPU: on the H200 the largest difference
#: was 8 DN (8e-4) here and 4.4e-3 over 16 tiles in bench_gpu_fast.py; its max is held to FP32_MAX.
GPU_P999 = 1 / 255
FP32_MAX = 1e-2
#: bf16 is further off by its own arithmetic, whatever the device: the same task in bf16 on the CPU is
#: p99.9 4.3e-3 (max 3.7e-2) from fp32 on the CPU on these tiles (and 4.5e-3 on the H200), over 1/255.
BF16_P999 = 2 / 255
P999 = {"fp32": GPU_P999, "fp16": GPU_P999, "bf16": BF16_P999}


@pytest.fixture(scope="module")
def rgb(naip_tiles) -> np.ndarray:
    from dataset_builder.synthetic.clip import rgb_counts

    return rgb_counts(naip_tiles[:, :3].numpy())


@pytest.fixture(scope="module")
def embedders():
    from dataset_builder.synthetic.clip import ClipEmbedder

    return ClipEmbedder(CLIP_MODEL, seed=0), ClipEmbedder(CLIP_MODEL, seed=0, device="cuda")


def test_preprocessing_on_the_gpu_equals_the_cpu(embedders, rgb) -> None:
    cpu, gpu = embedders
    on_cpu = cpu.preprocess(torch.from_numpy(rgb))
    on_gpu = gpu.preprocess(torch.from_numpy(rgb).cuda()).cpu()
    assert float((on_cpu - on_gpu).abs().max()) <= PREPROCESS_ATOL


def test_bf16_clip_on_the_gpu_is_close_to_fp32_on_the_cpu(embedders, rgb) -> None:
    cpu, gpu = embedders
    assert gpu.dtype == torch.bfloat16 and cpu.dtype is None
    cosine = (cpu.embed_counts(rgb) * gpu.embed_counts(rgb)).sum(1)
    assert cosine.min() >= BF16_MIN_COSINE, cosine


def test_kmeans_on_the_gpu_selects_what_the_cpu_selects() -> None:
    from dataset_builder.synthetic.selection import select_diverse

    rng = np.random.default_rng(0)
    points = rng.normal(size=(12, 64))[rng.integers(12, size=3000)] + rng.normal(scale=0.3, size=(3000, 64))
    ids = [f"t{i:05d}" for i in range(len(points))]
    on_cpu = select_diverse(ids, points, 600, 12, seed=0)
    on_gpu = select_diverse(ids, points, 600, 12, seed=0, device="cuda")
    assert on_gpu == on_cpu


def _geotiff(tiles: torch.Tensor, path: Path) -> Path:
    import rasterio
    from affine import Affine

    size = tiles.shape[-1]
    counts = (tiles.numpy() * 255).round().astype(np.uint8)
    image = np.concatenate(list(counts), axis=2)  # side by side
    profile = {"driver": "GTiff", "dtype": "uint8", "count": 4, "height": size, "width": image.shape[2]}
    transform = Affine(2.5, 0, 300_080.0, 0, -2.5, 5_299_800.0)  # on the 484-px world grid
    with rasterio.open(path, "w", crs="EPSG:26914", transform=transform, **profile) as dst:
        dst.write(image)
    return path


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_a_degradation_task_on_the_gpu_matches_the_cpu_path(naip_tiles, reference_dir, tmp_path, precision):
    from dataset_builder.core.config import BuildConfig
    from dataset_builder.core.context import BuildContext
    from dataset_builder.core.plan import run_task
    from dataset_builder.synthetic.stage import plan_degrade

    path = _geotiff(naip_tiles, tmp_path / "m_0000000_se_14_1_20200601.tif")
    size = naip_tiles.shape[-1]
    selected = [
        {"tile_id": f"t{i}", "path": str(path), "row": 0, "col": i * size} for i in range(len(naip_tiles))
    ]
    sources = [{"sensor": "NAIP", "status": "ok", "path": str(path), "date": "2020-06-01"}]
    rows = {}
    for device in ("cpu", "cuda"):
        settings = {"degradation_model": str(reference_dir / "sen2naip-degradation"), "device": device}
        settings |= {"sources": {"naip": {"folder": str(tmp_path)}}}
        settings |= {"precision": "fp32" if device == "cpu" else precision, "synthetic": {"tile_size": size}}
        config = BuildConfig.model_validate(settings)
        (task,) = plan_degrade(config, selected, sources).tasks
        with np.load(io.BytesIO(run_task(task, BuildContext(config, echo=print)))) as data:
            rows[device] = data["lr"].astype(np.int64)
    diff = np.abs(rows["cpu"] - rows["cuda"]) / 10000  # Sentinel-2 DN → reflectance
    assert np.quantile(diff, 0.999) <= P999[precision]
    if precision == "fp32":
        assert diff.max() <= FP32_MAX


def test_naip_counts_become_the_same_reflectance_on_the_gpu() -> None:
    """The degradation loader converts 8-bit counts on the device: value for value the CPU rule."""
    from dataset_builder.synthetic.stage import counts_on_device
    from sen2naip_hub.sensors import NAIP, counts_to_reflectance

    counts = np.arange(256, dtype=np.uint8).reshape(1, 4, 8, 8)
    valid = np.ones((1, 8, 8), dtype=bool)
    valid[0, 0, :3] = False
    expected = counts_to_reflectance(counts, NAIP)
    expected[:, :, ~valid[0]] = np.nan
    on_gpu = counts_on_device(torch.from_numpy(counts).cuda(), torch.from_numpy(valid).cuda())
    np.testing.assert_array_equal(on_gpu.cpu().numpy(), expected)
