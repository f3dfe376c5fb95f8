"""Per-tile noise for a degradation batch: one call per tile (the builder before) against one call with a
generator per tile (:func:`sen2naip_hub.models.noise.draw`), same run, same draws.

Each tile's noise comes from its own seeded CPU generator either way (so a tile's noise does not depend
on its batch); the batched call makes the whole batch's lookups in one pass and moves the draws to the
device in one copy, where the per-tile calls launch ~10 small operations per tile. The two outputs are
compared (they must be equal) and the ratio printed.

    python benchmarks/bench_noise_batch.py --models models --device cpu --batch 256
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from sen2naip_hub.models import NoiseModel

LR = 121


def best_of(repeats: int, run) -> float:
    """Fastest of ``repeats`` timed calls of ``run``, seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=Path, required=True, help="converted models (sen2naip convert-reference)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    model = NoiseModel.from_pretrained(args.models / "sen2naip-noise").to(args.device)
    lr = (
        torch.rand(args.batch, 4, LR, LR, generator=torch.Generator().manual_seed(0)).mul(0.4).to(args.device)
    )

    def generators() -> list[torch.Generator]:
        return [torch.Generator().manual_seed(1000 + i) for i in range(args.batch)]

    def per_tile() -> torch.Tensor:
        return torch.cat([model(lr[i : i + 1], g) for i, g in enumerate(generators())])

    def batched() -> torch.Tensor:
        return model(lr, generators())

    with torch.inference_mode():
        assert torch.equal(per_tile(), batched()), "the batched draw differs from the per-tile one"
        old, new = best_of(args.repeats, per_tile), best_of(args.repeats, batched)
    print(f"{args.batch} tiles of {LR}² on {args.device}, best of {args.repeats}; outputs equal")
    print(f"one call per tile        {old * 1e3:8.1f} ms")
    print(f"one call, one generator per tile {new * 1e3:8.1f} ms   ({old / new:.2f}× faster)")


if __name__ == "__main__":
    main()
