"""The degradation's fast GPU path against the published U-Net and our eager paths, in one run.

For each variant (precision, fused U-Net or not, ``torch.compile`` settings) on real 484² NAIP tiles
at one batch size: the U-Net alone and the full pipeline (λ + δ + e) in tiles/s, the ratio to the
published TorchScript U-Net alone (same run, same batch), the share of the pipeline's time outside the
U-Net, and the accuracy of the LR (noise off) and of the harmonized HR against the fp32 eager pipeline
with TF32 off (mean, p99.9 and max of |difference| in reflectance, over the distinct real tiles).

    python3 benchmarks/bench_gpu_fast.py --tiles-npy .devcarry/tiles.npy --models /tmp/models \
        --package-dir .devcarry/reference --batch 256

Variants are run cheapest first; ``--budget-s`` skips those that would start past it (compiling with
autotuning takes minutes). ``--out`` writes every number as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_degradation import stage_report  # noqa: E402

from sen2naip_hub import Degradation  # noqa: E402
from sen2naip_hub.models.fusion import FAST_COMPILE_OPTIONS  # noqa: E402

TILE = 484
UNET_INPUT = 512
FREEZE = {"freezing": True}


@dataclass(frozen=True)
class Variant:
    name: str
    precision: str
    fused: bool = False
    compile: dict | None = None  # None: eager; else torch.compile keyword arguments
    tags: tuple[str, ...] = field(default=())


VARIANTS: tuple[Variant, ...] = (
    Variant("eager fp32 (as published)", "fp32"),
    Variant("eager bf16", "bf16"),
    Variant("eager fp16", "fp16"),
    Variant("fused eager fp16", "fp16", fused=True),
    Variant("compiled bf16, not fused (as landed before)", "bf16", compile={"dynamic": False, "fuse": False}),
    Variant("fused compiled bf16, freezing only", "bf16", True, {"dynamic": False, "options": FREEZE}),
    Variant("fused compiled bf16 (default compile)", "bf16", True, {"dynamic": False}),
    Variant("fused compiled fp16 (default compile)", "fp16", True, {"dynamic": False}),
    Variant(
        "fused compiled fp16 + CUDA graphs",
        "fp16",
        True,
        {"dynamic": False, "options": {**FAST_COMPILE_OPTIONS, "triton.cudagraphs": True}},
    ),
)


def timed(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    """Median seconds of ``fn`` (CUDA events around each call) after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return statistics.median(times)


def error_stats(ours: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    diff = (ours.float() - reference.float()).abs().flatten()
    sample = (
        diff
        if diff.numel() <= 16_000_000
        else diff[torch.randperm(diff.numel(), device=diff.device)[:16_000_000]]
    )
    return {
        "mean": float(diff.mean()),
        "p99.9": float(torch.quantile(sample, 0.999)),
        "max": float(diff.max()),
        "share_over_1_255": float((diff > 1 / 255).float().mean()),
    }


def published_unet(package_dir: Path, batch: torch.Tensor, repeats: int) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.load(str(package_dir / "naipd/models/model_unet.pt"), map_location="cuda").eval()
    padded = torch.nn.functional.pad(batch, (0, UNET_INPUT - TILE, 0, UNET_INPUT - TILE))
    out = {}
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        with torch.inference_mode(), torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
            out[precision] = timed(lambda: scripted(padded), repeats)
    return out


def load(models: Path, variant: Variant) -> tuple[Degradation, float]:
    """The model of one variant, ready (fused, compiled and warmed up); also the set-up seconds."""
    model = Degradation.from_pretrained(models / "sen2naip-degradation", map_location="cuda")
    model.harmonization.precision = variant.precision
    start = time.perf_counter()
    if variant.fused:
        model.harmonization.fuse()
    if variant.compile is not None:
        model.compile(**variant.compile)
    return model, time.perf_counter() - start


def kernel_table(model: Degradation, batch: torch.Tensor, rows: int = 20) -> str:
    """The CUDA kernels of one full pipeline call, most expensive first."""
    from torch.profiler import ProfilerActivity, profile

    gen = torch.Generator(device="cuda").manual_seed(0)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        model(batch, generator=gen)
        torch.cuda.synchronize()
    return prof.key_averages().table(sort_by="cuda_time_total", row_limit=rows, max_name_column_width=70)


def run_variant(
    variant: Variant,
    models: Path,
    batch: torch.Tensor,
    distinct: int,
    reference: tuple[torch.Tensor, torch.Tensor],
    repeats: int,
    profile: bool,
    stages: bool,
) -> dict:
    model, setup = load(models, variant)
    gen = torch.Generator(device="cuda").manual_seed(0)
    start = time.perf_counter()
    with torch.inference_mode():
        out = model(batch, noise=False, return_harmonized=True)  # first call: compiles
        torch.cuda.synchronize()
        first = time.perf_counter() - start
        t_unet = timed(lambda: model.harmonization.predict_target(batch, dtype=None), repeats)
        t_full = timed(lambda: model(batch, generator=gen), repeats)
        if profile:
            print(f"kernels of {variant.name}:\n{kernel_table(model, batch)}", flush=True)
        if stages:
            stage_report(model, batch, batch.device, repeats, variant.compile is not None)
    lr_ref, hr_ref = reference
    return {
        "variant": variant.name,
        "precision": variant.precision,
        "fused": variant.fused,
        "compile": variant.compile,
        "setup_s": setup + first,
        "unet_s": t_unet,
        "full_s": t_full,
        "lr_error": error_stats(out.lr[:distinct], lr_ref),
        "hr_error": error_stats(out.harmonized[:distinct], hr_ref),
    }


def fp32_reference(models: Path, batch: torch.Tensor, distinct: int) -> tuple[torch.Tensor, torch.Tensor]:
    """LR and harmonized HR of the fp32 eager pipeline with TF32 off, on the distinct tiles."""
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    model = Degradation.from_pretrained(models / "sen2naip-degradation", map_location="cuda")
    with torch.inference_mode():
        out = model(batch[:distinct], noise=False, return_harmonized=True)
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    return out.lr, out.harmonized


def table(results: list[dict], batch: int, published: dict[str, float]) -> str:
    base = batch / published["fp32"]
    lines = [
        f"published TorchScript U-Net alone, batch {batch}: fp32 {batch / published['fp32']:.0f} tiles/s, "
        f"bf16 {batch / published['bf16']:.0f} tiles/s",
        f"{'variant':<40} {'U-Net t/s':>9} {'full t/s':>9} {'vs pub':>7} {'outside':>8} "
        f"{'LR mean':>8} {'LR p99.9':>9} {'LR max':>8} {'HR p99.9':>9} {'HR max':>8} {'set-up':>7}",
    ]
    for r in results:
        full = batch / r["full_s"]
        outside = max(r["full_s"] - r["unet_s"], 0.0) / r["full_s"]
        lr, hr = r["lr_error"], r["hr_error"]
        lines.append(
            f"{r['variant']:<40} {batch / r['unet_s']:9.0f} {full:9.0f} {full / base:6.2f}x "
            f"{100 * outside:7.1f}% "
            f"{lr['mean']:8.1e} {lr['p99.9']:9.1e} {lr['max']:8.1e} {hr['p99.9']:9.1e} {hr['max']:8.1e} "
            f"{r['setup_s']:6.0f}s"
        )
    lines.append("errors: |ours - fp32 eager with TF32 off| in reflectance; 1/255 = 3.9e-03")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiles-npy", type=Path, required=True)
    parser.add_argument("--models", type=Path, required=True, help="converted models (convert-reference)")
    parser.add_argument("--package-dir", type=Path, required=True, help="holds naipd/models/model_unet.pt")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--variants", help="comma-separated indices into VARIANTS (default: all)")
    parser.add_argument("--budget-s", type=float, default=480.0)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--profile", help="comma-separated indices of the variants to profile")
    parser.add_argument("--stages", help="comma-separated indices of the variants to time stage by stage")
    args = parser.parse_args()

    started = time.perf_counter()
    torch.backends.cudnn.benchmark = True
    tiles = torch.from_numpy(np.load(args.tiles_npy)).cuda().float() / 255
    distinct = min(len(tiles), args.batch)
    batch = tiles[torch.arange(args.batch) % len(tiles)].contiguous()
    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}; {distinct} distinct real tiles")
    reference = fp32_reference(args.models, batch, distinct)
    published = published_unet(args.package_dir, batch, args.repeats)
    chosen = [VARIANTS[int(i)] for i in args.variants.split(",")] if args.variants else list(VARIANTS)
    profiled = {VARIANTS[int(i)].name for i in args.profile.split(",")} if args.profile else set()
    staged = {VARIANTS[int(i)].name for i in args.stages.split(",")} if args.stages else set()
    results = []
    for variant in chosen:
        if time.perf_counter() - started > args.budget_s:
            print(f"skipped (time budget): {variant.name}")
            continue
        results.append(
            run_variant(
                variant,
                args.models,
                batch,
                distinct,
                reference,
                args.repeats,
                variant.name in profiled,
                variant.name in staged,
            )
        )
        print(f"done: {variant.name} ({time.perf_counter() - started:.0f} s)", flush=True)
        torch._dynamo.reset()
        if args.out:
            args.out.write_text(json.dumps({"published_s": published, "results": results}, indent=1))
    print(table(results, args.batch, published))


if __name__ == "__main__":
    main()
