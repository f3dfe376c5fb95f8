"""GPU behaviour (``pytest -m gpu``; deselected by default). Needs only torch and this package on the
GPU machine: tiles come from ``$SEN2NAIP_TILES_NPY`` (uint8 ``(N, 4, H, W)``, written by
``benchmarks/bench_degradation.py --save-tiles``) when set, else from the real sample; the published
weights from the installed opensr-degradation or ``$SEN2NAIP_REFERENCE_DIR``."""

from __future__ import annotations

import pytest
import torch

from sen2naip_hub import Degradation
from sen2naip_hub.models.noise import table_uniform

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
TILES = 4


@pytest.fixture(scope="module")
def tiles(naip_tiles) -> torch.Tensor:
    return naip_tiles[:TILES]


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


def test_cpu_and_gpu_agree(models, tiles):
    cpu_model, gpu_model = models
    assert next(gpu_model.parameters()).device.type == "cuda"
    with torch.no_grad():
        cpu = cpu_model(tiles, noise=False).lr
        gpu = gpu_model(tiles.cuda(), noise=False).lr.cpu()
    assert torch.allclose(cpu, gpu, atol=1e-5, rtol=0)


def test_cpu_and_gpu_draw_the_same_noise(models, tiles):
    """The same LR and one CPU generator give the same noise on both devices. End to end, an LR value
    that differs by float rounding can fall on the other side of a reflectance bin edge and draw from
    the neighbouring row: allowed for a handful of pixels only."""
    cpu_model, gpu_model = models
    with torch.no_grad():
        lr = cpu_model(tiles, noise=False).lr
        cpu = cpu_model.noise(lr, torch.Generator().manual_seed(0))
        gpu = gpu_model.noise(lr.cuda(), torch.Generator().manual_seed(0)).cpu()
        assert torch.allclose(cpu, gpu, atol=1e-6, rtol=0)
        cpu = cpu_model(tiles, generator=torch.Generator().manual_seed(0)).lr
        gpu = gpu_model(tiles.cuda(), generator=torch.Generator().manual_seed(0)).lr.cpu()
    differing = (cpu - gpu).abs() > 1e-5
    assert float(differing.float().mean()) < 1e-4


def test_per_tile_generators_draw_the_same_on_the_gpu(models, tiles):
    """One CPU generator per tile (a build's noise): the draws reach the GPU through pinned memory value
    for value, and the noise equals the CPU's (as the one-generator test above)."""

    def generators() -> list[torch.Generator]:
        return [torch.Generator().manual_seed(seed) for seed in range(len(tiles))]

    shape = (len(tiles), 4, 31, 29)
    assert torch.equal(table_uniform(shape, generators(), "cuda").cpu(), table_uniform(shape, generators()))
    cpu_model, gpu_model = models
    with torch.no_grad():
        lr = cpu_model(tiles, noise=False).lr
        cpu = cpu_model.noise(lr, generators())
        gpu = gpu_model.noise(lr.cuda(), generators()).cpu()
        ahead = gpu_model.noise(lr.cuda(), uniform=table_uniform(lr.shape, generators(), "cuda")).cpu()
    assert torch.allclose(cpu, gpu, atol=1e-6, rtol=0)
    assert torch.equal(ahead, gpu)


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


def test_triton_kernels_equal_torch_on_the_gpu(tiles):
    """The kernels of the histogram fast path give the torch path's levels and counts, bit for bit."""
    from sen2naip_hub.models import _kernels
    from sen2naip_hub.models import histogram as H

    assert _kernels.available(torch.zeros(1, device="cuda"))
    x = tiles.cuda().reshape(-1, tiles.shape[-2] * tiles.shape[-1])  # 8-bit NAIP rows
    rows = x.shape[0]
    index, counts = H.source_levels(x, None)
    levels = torch.round(x * 255).to(torch.int32)
    assert torch.equal(index, levels + torch.arange(rows, device="cuda", dtype=torch.int32)[:, None] * 256)
    expected = torch.stack([torch.bincount(r.long(), minlength=256) for r in levels]).to(torch.int32)
    assert torch.equal(counts, expected)
    assert H.source_levels(x + 1e-4, None) is None  # off the 8-bit grid: the sort path
    divided_on_gpu = H.source_levels(torch.round(x * 255) / 255, None)  # CUDA: k * (1 / 255)
    assert divided_on_gpu is not None and torch.equal(divided_on_gpu[1], counts)

    ref = ((x - 0.05) * 0.8).to(torch.bfloat16)  # negative values far from the rows' means, too
    keys = H.half_keys(ref) + torch.arange(rows, device="cuda", dtype=torch.int32)[:, None] * 65536
    via_index_add = H.level_counts(keys, None, rows, 65536)
    assert torch.equal(H._half_counts(ref, None), via_index_add)


def test_bf16_pipeline_uses_the_exact_histogram_path(models, tiles):
    """With a bf16 U-Net the target stays bf16 and is counted, not sorted; same result as sorting it."""
    from sen2naip_hub.models.histogram import match_histograms

    gpu_model = models[1]
    harm = gpu_model.harmonization
    x = tiles.cuda()
    harm.precision = "bf16"
    try:
        with torch.no_grad():
            target = harm.predict_target(x, dtype=None)
            counted = harm.match(x, target)
            sorted_ = match_histograms(x, target.float())
    finally:
        harm.precision = "fp32"
    assert target.dtype == torch.bfloat16
    assert torch.allclose(counted, sorted_, atol=1e-6, rtol=0)


def _lr_without_noise(model: Degradation, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x, noise=False).lr.float().cpu()


def test_fused_unet_equals_the_published_one_on_the_gpu(models, tiles):
    """Folding the BatchNorms and the padding into the convolutions changes only float rounding."""
    gpu_model = models[1]
    x = tiles.cuda()
    published = _lr_without_noise(gpu_model, x)
    gpu_model.harmonization.fuse()
    try:
        fused = _lr_without_noise(gpu_model, x)
    finally:
        gpu_model.harmonization.unfuse()
    assert torch.allclose(published, fused, atol=1e-4, rtol=0)


def test_fast_gpu_path_stays_within_one_8bit_level_of_fp32(reference_dir, models, tiles):
    """The fast path (fused U-Net, compiled, fp16; ``sen2naip degrade --precision fp16 --compile``)
    against the fp32 eager pipeline: p99.9 of |ΔLR| ≤ 1/255 (the issue's bound), mean ≤ 1e-3."""
    x = tiles.cuda()
    reference = _lr_without_noise(models[1], x)
    fast = Degradation.from_pretrained(reference_dir / "sen2naip-degradation", map_location="cuda")
    fast.harmonization.precision = "fp16"
    fast.compile(dynamic=False)
    assert fast.harmonization.fused
    error = (_lr_without_noise(fast, x) - reference).abs().flatten()
    assert float(torch.quantile(error[:: max(1, error.numel() // 2**24)], 0.999)) <= 1 / 255
    assert float(error.mean()) <= 1e-3
