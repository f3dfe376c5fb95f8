"""GPU behaviour (``pytest -m gpu``; deselected by default). Needs only torch and this package on the
GPU machine: tiles come from ``$SEN2NAIP_TILES_NPY`` (uint8 ``(N, 4, H, W)``, written by
``benchmarks/bench_degradation.py --save-tiles``) when set, else from the real sample; the published
weights from the installed opensr-degradation or ``$SEN2NAIP_REFERENCE_DIR``."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from sen2naip_hub import Degradation

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
TILES = 4


@pytest.fixture(scope="module")
def tiles(request) -> torch.Tensor:
    path = os.environ.get("SEN2NAIP_TILES_NPY")
    if path:
        return torch.from_numpy(np.load(path)[:TILES].astype(np.float32) / 255)
    return request.getfixturevalue("naip_tiles")


@pytest.fixture(scope="module")
def models(reference_dir) -> tuple[Degradation, Degradation]:
    folder = reference_dir / "sen2naip-degradation"
    return Degradation.from_pretrained(folder), Degradation.from_pretrained(folder, map_location="cuda")


@pytest.fixture(autouse=True)
def no_tf32():
    """Float32 means float32: cuDNN would otherwise use TF32 for the U-Net's convolutions."""
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = before


@pytest.mark.parametrize("noise", [False, True])
def test_cpu_and_gpu_agree(models, tiles, noise):
    cpu_model, gpu_model = models
    assert next(gpu_model.parameters()).device.type == "cuda"
    with torch.no_grad():  # the noise comes from one CPU generator on both devices
        cpu = cpu_model(tiles, noise=noise, generator=torch.Generator().manual_seed(0)).lr
        gpu = gpu_model(tiles.cuda(), noise=noise, generator=torch.Generator().manual_seed(0)).lr.cpu()
    assert torch.allclose(cpu, gpu, atol=1e-5, rtol=0)


def test_gpu_batch_equals_one_by_one(models, tiles):
    gpu_model = models[1]
    x = tiles.cuda()
    with torch.no_grad():
        batch = gpu_model(x, noise=False).lr
        singles = torch.cat([gpu_model(x[i : i + 1], noise=False).lr for i in range(len(x))])
    assert torch.allclose(batch, singles, atol=1e-5, rtol=0)


def test_same_cuda_generator_seed_same_output(models, tiles):
    gpu_model = models[1]
    x = tiles[:2].cuda()
    with torch.no_grad():
        a = gpu_model(x, generator=torch.Generator(device="cuda").manual_seed(5)).lr
        b = gpu_model(x, generator=torch.Generator(device="cuda").manual_seed(5)).lr
    assert torch.equal(a, b)
