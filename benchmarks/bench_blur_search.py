"""Speed of the blur grid search (`sen2naip fit blur`): pairs × 4 bands × 3 kernels × 4 modes × 40 σ.

Prints pairs/s of the batched search (registration + grid) and the projected time for 1,000 pairs,
beside a naive baseline measured in the same run on a subset: one `blur_downsample` call per pair, per
family, per mode and per σ (the loop a straightforward implementation writes), at the same σ grid.

    python benchmarks/bench_blur_search.py --device cpu --pairs 8
    python benchmarks/bench_blur_search.py --device cuda --pairs 1000 --naive-pairs 4

Self-contained: torch + numpy + sen2naip_hub.models.blur (imported without the package's heavy
dependencies when they are missing). Pairs are synthesised from ``--naip-npy`` (``(N, 4, H, W)``
float reflectance tiles) when given, else from smoothed random noise, degraded with a known δ.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataset_builder.fit.blur_search import DEFAULT_SIGMA_GRID, search_blur
from sen2naip_hub.models import blur

TILE = 484  # SEN2NAIP HR ROI, px
TRUE_SIGMAS = (2.2, 3.6, 2.7, 4.1)


def synthesize(n: int, tile: int, npy: Path | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    if npy is not None and npy.is_file():
        base = torch.from_numpy(np.load(npy).astype(np.float32))[..., :tile, :tile]
        hr = base[torch.randint(base.shape[0], (n,), generator=gen)]
    else:
        hr = torch.nn.functional.avg_pool2d(torch.rand(n, 4, tile, tile, generator=gen), 5, 1, 2)
    model = blur.BlurModel(sigmas=TRUE_SIGMAS, downsample="bilinear")
    with torch.no_grad():
        lr = model(hr) + 0.003 * torch.randn(n, 4, tile // 4, tile // 4, generator=gen)
    return hr, lr


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def naive(hr: torch.Tensor, lr: torch.Tensor, device: torch.device) -> float:
    """Per pair × family × mode × σ: blur_downsample + MAE. Returns seconds."""
    sync(device)
    start = time.perf_counter()
    for i in range(hr.shape[0]):
        x, y = hr[i : i + 1].to(device), lr[i : i + 1].to(device)
        for family in blur.KERNEL_FAMILIES:
            for mode in blur.DOWNSAMPLE_MODES:
                for sigma in DEFAULT_SIGMA_GRID:
                    kernels = blur.kernel1d(family, torch.full((4,), sigma), 13).to(device)
                    (blur.blur_downsample(x, kernels, mode) - y).abs().mean(dim=(0, 2, 3))
    sync(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--naive-pairs", type=int, default=2)
    parser.add_argument("--tile", type=int, default=TILE)
    parser.add_argument("--memory-gb", type=float, default=None, help="chunk budget (default 1 CPU / 16 GPU)")
    parser.add_argument("--naip-npy", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    device = torch.device(args.device)
    budget = int((args.memory_gb or (16 if device.type == "cuda" else 1)) * 2**30)
    hr, lr = synthesize(args.pairs, args.tile, args.naip_npy, args.seed)
    grid = f"{args.pairs} pairs × 4 bands × 3 kernels × 4 modes × {len(DEFAULT_SIGMA_GRID)} σ, {args.tile} px"
    print(f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}; {grid}")

    search_blur(hr[:2], lr[:2], device=device, memory_budget=budget)  # warm-up
    sync(device)
    start = time.perf_counter()
    result = search_blur(hr, lr, device=device, memory_budget=budget)
    sync(device)
    batched = time.perf_counter() - start
    rate = args.pairs / batched
    print(f"batched search: {batched:.2f} s, {rate:.2f} pairs/s → 1,000 pairs in {1000 / rate:.1f} s")
    print(
        f"  chose {result.kernel} + {result.downsample}, σ = {result.sigmas} (true {TRUE_SIGMAS}, bilinear)"
    )

    n_naive = min(args.naive_pairs, args.pairs)
    naive(hr[:1], lr[:1], device) if device.type == "cuda" else None  # warm-up
    seconds = naive(hr[:n_naive], lr[:n_naive], device)
    naive_rate = n_naive / seconds
    print(
        f"naive loop ({n_naive} pairs, no registration): {naive_rate:.3f} pairs/s → 1,000 pairs in "
        f"{1000 / naive_rate:.0f} s"
    )
    print(f"speed-up batched / naive: {rate / naive_rate:.1f}×")


if __name__ == "__main__":
    main()
