"""Global histogram matching, step by step, with variants of the costly steps timed in one run.

Source: real NAIP tiles (8-bit levels); reference: the published U-Net's bf16 output for them. Prints
the milliseconds of each step and variant for one batch, then the whole matching with the bf16
reference counted in a histogram of its 65,536 values (eager, and compiled on GPUs) against the exact
sort-based matching of the same reference in float32 (the baseline), and their largest difference;
then, with the fp32 U-Net's output as the reference, its sort as matching does it (numpy on CPUs)
against ``torch.sort``, alone and inside the matching.

    python benchmarks/bench_histogram.py --device cuda --tiles-npy .devcarry/tiles.npy --models models
    python benchmarks/bench_histogram.py --device cpu --batch 8 --tiles-npy tiles.npy --models models

(``tiles.npy``: ``python benchmarks/bench_degradation.py --save-tiles tiles.npy --tiles 12``.)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_degradation import timed, with_torch_sort

from sen2naip_hub.models import HarmonizationModel
from sen2naip_hub.models import histogram as H


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiles-npy", type=Path, required=True)
    parser.add_argument("--models", type=Path, required=True, help="converted models (for the U-Net)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    tiles = torch.from_numpy(np.load(args.tiles_npy)).to(device).float() / 255
    src = tiles[torch.arange(args.batch, device=device) % len(tiles)].contiguous()
    harm = HarmonizationModel.from_pretrained(
        args.models / "sen2naip-harmonization", map_location=str(device)
    )
    harm.precision = "bf16"
    with torch.inference_mode():
        target = harm.predict_target(src, dtype=None)
    rows = src.shape[0] * src.shape[1]
    s2, r2 = src.reshape(rows, -1), target.reshape(rows, -1)
    n = torch.full((rows, 1), float(s2.shape[1]), dtype=torch.float64, device=device)
    times: dict[str, float] = {}

    def t(name, fn):
        with torch.inference_mode():
            times[name] = timed(fn, device, args.repeats, 2)
        print(f"  {name:<60} {1000 * times[name]:8.2f} ms", flush=True)

    offset = torch.arange(rows, device=device, dtype=torch.int32)[:, None]
    index, _ = H.source_levels(s2, None)
    keys = H.half_keys(r2) + offset * (1 << 16)
    ones = torch.ones(1, dtype=torch.int32, device=device)
    print(f"{args.batch} tiles, {rows} rows of {s2.shape[1]} px ({target.dtype} U-Net output)")
    t("finite check: isfinite(x).all()", lambda: bool(torch.isfinite(src).all()))
    t("finite check (used): aminmax(x)", lambda: torch.stack(torch.aminmax(src)).tolist())
    t("source levels + counts (used: one Triton kernel on GPUs)", lambda: H.source_levels(s2, None))
    t("source levels by torch ops, then counts", lambda: source_levels_torch(s2))
    t(
        "source counts alone: index_add int32",
        lambda: torch.zeros(rows * 256, dtype=torch.int32, device=device).index_add_(
            0, index.reshape(-1), ones.expand(index.numel())
        ),
    )
    t("source counts alone: bincount, 16 rows per call", lambda: bincount_rows(index, rows, 256))
    t("reference key counts (used: Triton kernel on GPUs)", lambda: H._half_counts(r2, None))
    t(
        "reference keys + counts by torch ops: keys + index_add int32",
        lambda: H.level_counts(H.half_keys(r2) + offset * (1 << 16), None, rows, 1 << 16),
    )
    t(
        "reference key counts: keys + one bincount (int64)",
        lambda: torch.bincount(keys.reshape(-1), minlength=rows << 16),
    )
    cdf = H.BinnedCdf.of_half(r2, None, n)
    t("reference CDF: counts + cumsum", lambda: H.BinnedCdf.of_half(r2, None, n))
    quantile = H.source_levels(s2, None)[1].cumsum(1).double() / n
    t("values at the source's quantiles", lambda: cdf.values_at(quantile))
    table = cdf.values_at(quantile).reshape(-1, 1)
    t("lookup: F.embedding", lambda: torch.nn.functional.embedding(index, table))
    t("baseline: sort of the float32 reference", lambda: torch.sort(r2.float(), dim=1))
    target32 = target.float()
    t("baseline: match_histograms, float32 reference (sort)", lambda: H.match_histograms(src, target32))
    t("match_histograms, bf16 reference (histogram)", lambda: H.match_histograms(src, target))
    if device.type == "cuda":  # compiling on a CPU takes minutes and is not the CPU path
        compiled = torch.compile(H.match_histograms)
        t("match_histograms, bf16 reference (histogram), compiled", lambda: compiled(src, target))
    with torch.inference_mode():
        diff = (H.match_histograms(src, target) - H.match_histograms(src, target32)).abs().max()
    print(f"max |histogram path - sort path| = {float(diff):.2e} (both exact: float rounding only)")
    base = times["baseline: match_histograms, float32 reference (sort)"]
    for name in (
        "match_histograms, bf16 reference (histogram)",
        "match_histograms, bf16 reference (histogram), compiled",
    ):
        if name in times:
            print(f"{name}: {base / times[name]:.2f}x the sort baseline")
    harm.precision = "fp32"
    with torch.inference_mode():
        float_sorts(t, times, src, harm.predict_target(src))


def float_sorts(t, times: dict[str, float], src: torch.Tensor, target: torch.Tensor) -> None:
    """The fp32 U-Net's output (the default precision) as the reference: its sort as matching does it
    (:func:`~sen2naip_hub.models.histogram.sorted_rows`: numpy on CPUs) against ``torch.sort``, alone
    and inside the whole matching."""
    rows = target.reshape(-1, target.shape[-2] * target.shape[-1])
    print(f"fp32 U-Net output as the reference ({target.dtype}, float32 histogram matching sorts it):")
    t("baseline: torch.sort", lambda: torch.sort(rows, dim=1))
    t("sorted_rows (used)", lambda: H.sorted_rows(rows))
    with with_torch_sort():
        t("baseline: match_histograms with torch.sort", lambda: H.match_histograms(src, target))
    t("match_histograms (used)", lambda: H.match_histograms(src, target))
    sort = times["baseline: torch.sort"] / times["sorted_rows (used)"]
    match = times["baseline: match_histograms with torch.sort"] / times["match_histograms (used)"]
    print(f"sorted_rows: {sort:.2f}x torch.sort; float32 matching with it: {match:.2f}x")


def source_levels_torch(src: torch.Tensor):
    """The torch path of ``source_levels`` (what runs without Triton)."""
    scaled = src * H.QUANTIZED_LEVELS
    levels = torch.round(scaled)
    if bool(((scaled - levels).abs() > H.GRID_TOLERANCE).any()):
        return None
    index = (
        levels.to(torch.int32)
        + torch.arange(src.shape[0], device=src.device, dtype=torch.int32)[:, None] * 256
    )
    return index, H.level_counts(index, None, src.shape[0], 256)


def bincount_rows(index: torch.Tensor, rows: int, n_levels: int, per_call: int = 16) -> torch.Tensor:
    """The previous source counting: bincount in shared memory, 16 rows per call."""
    out = []
    for r0 in range(0, rows, per_call):
        chunk = index[r0 : r0 + per_call] - r0 * n_levels
        out.append(torch.bincount(chunk.reshape(-1), minlength=chunk.shape[0] * n_levels))
    return torch.cat(out)


if __name__ == "__main__":
    main()
