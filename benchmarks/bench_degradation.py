"""Degradation speed: this library vs the published research code, in one run, on the same real tiles.

CPU (default): real 484×484 NAIP tiles from ../shared/sample; the published pipeline
(opensr-degradation 1.0.1: U-Net harmonization + real noise, one image at a time) against
``Degradation`` (batched), and the noise sampling alone. Prints tiles/s and the ratios.

GPU (``--device cuda``): the published TorchScript U-Net alone against this library's full pipeline,
for several batch sizes and precisions (optionally ``torch.compile``), the share of time spent outside
the U-Net, and a CPU/GPU agreement check. The tiles come from ``--tiles-npy`` (uint8, (N, 4, 484, 484)),
written here by ``--save-tiles`` so the GPU machine needs no rasterio.

    python benchmarks/bench_degradation.py                       # CPU, 2 cores
    python benchmarks/bench_degradation.py --batch-sizes 8 --precisions fp32 --stages
    python benchmarks/bench_degradation.py --save-tiles .devcarry/tiles.npy
    python benchmarks/bench_degradation.py --device cuda --tiles-npy .devcarry/tiles.npy \
        --package-dir .devcarry/opensr_degradation --batch-sizes 1,16,64,128,256 --compile
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from unittest import mock

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _timing import interleaved  # noqa: E402

from sen2naip_hub import Degradation  # noqa: E402
from sen2naip_hub.convert import convert_reference, reference_package_dir  # noqa: E402

TILE = 484
UNET_INPUT = 512  # the published U-Net's input for a 484 tile (padded to a multiple of 32)


def real_tiles(sample_dir: Path, n: int) -> np.ndarray:
    """``n`` real NAIP tiles (uint8, (n, 4, 484, 484)): two per sample image, cycling through dates."""
    from sen2naip_hub.io import read_raster

    tiles = []
    for path in sorted((sample_dir / "naip").glob("*.tif")):
        data = np.rint(read_raster(path).data * 255).astype(np.uint8)
        tiles += [data[:, :TILE, :TILE], data[:, -TILE:, -TILE:]]
    if not tiles:
        raise SystemExit(f"no NAIP tiles in {sample_dir / 'naip'}")
    return np.stack([tiles[i % len(tiles)] for i in range(n)])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Median seconds of ``fn`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def with_torch_sort() -> AbstractContextManager:
    """Histogram matching with ``torch.sort`` in place of ``sorted_rows`` (numpy on CPUs): the
    previous implementation, as a baseline."""
    from sen2naip_hub.models import histogram

    return mock.patch.object(histogram, "sorted_rows", lambda x: torch.sort(x, dim=1).values)


def row(name: str, tiles: int, seconds: float, baseline: float | None = None) -> str:
    rate = tiles / seconds
    ratio = f"{rate / baseline:8.1f}x" if baseline else "        "
    return f"{name:<58} {rate:10.2f} tiles/s {ratio}"


# ---------------------------------------------------------------------------------------------- CPU
def bench_cpu(args, tiles_u8: np.ndarray, model: Degradation) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from opensr_degradation import pipe
        from opensr_degradation.naipd.main import naip_unet_model
        from opensr_degradation.naipd.noise import noise as reference_noise

    tiles = torch.from_numpy(tiles_u8).float() / 255
    n = len(tiles)
    params = {"reflectance_method": ["unet_histogram_matching"], "noise_method": "real_noise"}
    published = pipe("naip_d", add_noise=True, params=params)
    preloaded = pipe("naip_d", add_noise=True, params={**params, "unet_reflectance_model": naip_unet_model()})

    def reference(p) -> Callable[[], None]:
        def run() -> None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for tile in tiles:
                    p.forward(tile)

        return run

    def ours(bs: int, precision: str) -> Callable[[], None]:
        def run() -> None:
            model.harmonization.precision = precision
            gen = torch.Generator().manual_seed(0)
            with torch.inference_mode():
                for i in range(0, n, bs):
                    model(tiles[i : i + bs], generator=gen)

        return run

    contenders = {
        "published pipeline (U-Net reloaded per call, as shipped)": reference(published),
        "published pipeline, U-Net preloaded": reference(preloaded),
    }
    for precision in args.precisions:
        for bs in args.batch_sizes:
            contenders[f"sen2naip-hub Degradation, batch {bs}, {precision}"] = ours(bs, precision)
    ours(args.batch_sizes[0], args.precisions[0])()  # warm-up
    t = interleaved(contenders, args.repeats)
    model.harmonization.precision = "fp32"
    names = list(contenders)
    base, base_pre = n / t[names[0]], n / t[names[1]]
    lines = [f"CPU, {torch.get_num_threads()} threads, {n} real NAIP tiles of {TILE}x{TILE}, timed in turns"]
    lines.append(row(names[0], n, t[names[0]]))
    for name in names[1:]:
        lines.append(row(name, n, t[name], base) + f" {(n / t[name]) / base_pre:6.1f}x vs preloaded")

    with torch.inference_mode():
        lr = model(tiles, noise=False).lr

    def reference_noise_all() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for x in lr:
                reference_noise(x, {"noise_method": "real_noise"})

    noise_t = interleaved(
        {
            "published": reference_noise_all,
            "ours": lambda: model.noise.sample(lr, torch.Generator().manual_seed(0)),
        },
        args.repeats,
    )
    lines.append(row("noise alone: published (np.vectorize per pixel)", n, noise_t["published"]))
    lines.append(
        row(
            "noise alone: sen2naip-hub (one inverse-CDF lookup)", n, noise_t["ours"], n / noise_t["published"]
        )
    )
    print("\n".join(lines))
    if args.stages:
        for precision in args.precisions:
            model.harmonization.precision = precision
            stage_report(model, tiles[: args.batch_sizes[-1]], torch.device("cpu"), args.repeats, False)
        model.harmonization.precision = "fp32"


# ---------------------------------------------------------------------------------------------- GPU
def bench_gpu(args, tiles_u8: np.ndarray, model: Degradation, package_dir: Path) -> None:
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    print(f"GPU: {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    base_tiles = torch.from_numpy(tiles_u8).to(device).float() / 255
    cpu_model = model
    model = Degradation.from_pretrained(args.models / "sen2naip-degradation", map_location=str(device))
    agreement(cpu_model, model, base_tiles[:4].cpu(), device)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.load(str(package_dir / "naipd/models/model_unet.pt"), map_location=device).eval()

    results = []
    for bs in args.batch_sizes:
        batch = base_tiles[torch.arange(bs) % len(base_tiles)].contiguous()
        padded = torch.nn.functional.pad(batch, (0, UNET_INPUT - TILE, 0, UNET_INPUT - TILE))
        for precision in args.precisions:
            dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
            with torch.inference_mode(), torch.autocast("cuda", dtype=dtype, enabled=precision != "fp32"):
                t_ref = timed(lambda padded=padded: scripted(padded), device, args.repeats, 2)
            results.append((f"published TorchScript U-Net alone, batch {bs}, {precision}", bs, t_ref, None))
            model.harmonization.precision = precision
            for compiled in [False, True] if args.compile else [False]:
                if compiled:  # in place, state-dict keys unchanged
                    model.compile(dynamic=False)
                gen = torch.Generator(device=device).manual_seed(0)
                with torch.inference_mode():
                    t_unet = timed(
                        lambda batch=batch: model.harmonization.predict_target(batch, dtype=None),
                        device,
                        args.repeats,
                        2,
                    )
                    t_full = timed(
                        lambda batch=batch, gen=gen: model(batch, generator=gen), device, args.repeats, 2
                    )
                tag = f"{precision}{', compiled' if compiled else ''}"
                results.append((f"sen2naip-hub full pipeline, batch {bs}, {tag}", bs, t_full, bs / t_ref))
                share = max(t_full - t_unet, 0.0) / t_full
                results.append(
                    (
                        f"  of which outside the U-Net: {100 * share:.1f}% of the time",
                        bs,
                        t_full - t_unet,
                        None,
                    )
                )
                if compiled:  # undo the in-place compile, so later rows measure what they say
                    uncompile(model)
    for name, count, seconds, base in results:
        print(row(name, count, seconds, base) if "outside" not in name else name)
    if args.stages or args.profile:
        batch = base_tiles[torch.arange(args.batch_sizes[-1]) % len(base_tiles)].contiguous()
        for precision in args.precisions:
            model.harmonization.precision = precision
            for compiled in [False, True] if args.compile else [False]:
                if compiled:
                    model.compile(dynamic=False)
                if args.stages:
                    stage_report(model, batch, device, args.repeats, compiled)
                if args.profile:
                    profile(model, batch)
                uncompile(model)


def uncompile(model: Degradation) -> None:
    """Undo :meth:`Degradation.compile` (in place)."""
    from sen2naip_hub.models.histogram import match_histograms

    model.harmonization.unet._compiled_call_impl = None
    model.harmonization.unfuse()
    model.harmonization._match_global = match_histograms


def agreement(
    cpu_model: Degradation, gpu_model: Degradation, tiles: torch.Tensor, device: torch.device
) -> None:
    """CPU and GPU give the same LR in float32 (TF32 off: cuDNN uses it by default for convolutions).
    With noise, both draw from one CPU generator; a pixel whose value sits on a reflectance bin edge
    can still land in the neighbouring bin on the other device."""
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    with torch.inference_mode():
        for noise in (False, True):
            cpu = cpu_model(tiles, noise=noise, generator=torch.Generator().manual_seed(0)).lr
            gpu = gpu_model(
                tiles.to(device), noise=noise, generator=torch.Generator().manual_seed(0)
            ).lr.cpu()
            diff = (cpu - gpu).abs()
            share = float((diff > 1e-5).float().mean())
            print(
                f"CPU vs GPU (fp32, TF32 off, {len(tiles)} tiles, noise={noise}): max |LR difference| = "
                f"{float(diff.max()):.2e}, pixels differing by > 1e-5: {share:.2e}"
            )
    torch.backends.cudnn.allow_tf32 = tf32


def stage_report(
    model: Degradation, batch: torch.Tensor, device: torch.device, repeats: int, compiled: bool
) -> None:
    """Where the time goes, stage by stage, for one batch; with the previous implementations of the
    histogram's target CDF (a sort; on CPUs also ``torch.sort`` in place of numpy's) and of δ
    (convolutions) as baselines in the same run."""
    from sen2naip_hub.models.blur import blur_downsample
    from sen2naip_hub.models.histogram import match_histograms

    def match_with_torch_sort() -> torch.Tensor:
        with with_torch_sort():
            return match_histograms(batch, target32)

    harm, blur = model.harmonization, model.blur
    gen = torch.Generator(device=device).manual_seed(0)
    with torch.inference_mode():
        target = harm.predict_target(batch, dtype=None)
        target32 = target.float()
        harmonized = harm.match(batch, target)
        lr = blur(harmonized)
        histogram, blur_name = (
            f"histogram matching ({'histogram' if target.dtype == torch.bfloat16 else 'sort'} of the target)",
            "blur + downsampling (matrices)",
        )
        stages = {
            "input checks": lambda: model.check_inputs(batch),
            "U-Net": lambda: harm.predict_target(batch, dtype=None),
            histogram: lambda: harm.match(batch, target),
            blur_name: lambda: blur(harmonized),
            "noise": lambda: model.noise.sample(lr, gen),
            "full pipeline": lambda: model(batch, generator=gen),
            "baseline: histogram matching, float32 target (sort)": lambda: match_histograms(batch, target32),
            **({"baseline: the same with torch.sort": match_with_torch_sort} if device.type == "cpu" else {}),
            "baseline: blur + downsampling (convolutions)": lambda: blur_downsample(
                harmonized, blur.kernels, blur.downsample, blur.scale
            ),
        }
        times = {name: timed(fn, device, repeats, 2) for name, fn in stages.items()}
    total = times["full pipeline"]
    tag = f"{harm.precision}{', compiled' if compiled else ''}"
    print(f"stages for a batch of {len(batch)} ({tag}):")
    for name, seconds in times.items():
        print(f"  {name:<46} {1000 * seconds:9.2f} ms  {100 * seconds / total:5.1f}%")
    outside = total - times["U-Net"]
    print(f"  outside the U-Net: {1000 * outside:.2f} ms = {100 * outside / total:.1f}% of the full pipeline")
    speedups = {
        histogram: times["baseline: histogram matching, float32 target (sort)"] / times[histogram],
        blur_name: times["baseline: blur + downsampling (convolutions)"] / times[blur_name],
    }
    if device.type == "cpu":
        speedups["float32 target: numpy's sort (sorted_rows)"] = (
            times["baseline: the same with torch.sort"]
            / times["baseline: histogram matching, float32 target (sort)"]
        )
    for name, ratio in speedups.items():
        print(f"  {name}: {ratio:.1f}x its baseline")


def profile(model: Degradation, batch: torch.Tensor) -> None:
    """The CUDA kernels of one full pipeline call, most expensive first."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    gen = torch.Generator(device=batch.device).manual_seed(0)
    with torch.inference_mode():
        model(batch, generator=gen)
        with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            model(batch, generator=gen)
            torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=60))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tiles", type=int, default=8)
    parser.add_argument("--batch-sizes", default="4")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--stages", action="store_true", help="time each stage for the last batch size")
    parser.add_argument("--profile", action="store_true", help="GPU: kernel table of one pipeline call")
    parser.add_argument("--sample-dir", type=Path, default=REPO.parent / "shared" / "sample")
    parser.add_argument("--tiles-npy", type=Path)
    parser.add_argument("--save-tiles", type=Path)
    parser.add_argument(
        "--package-dir", type=Path, help="opensr_degradation package folder (default: installed)"
    )
    parser.add_argument("--models", type=Path, help="converted models (default: converted into a temp dir)")
    args = parser.parse_args()
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    args.precisions = args.precisions.split(",")

    if args.save_tiles:
        args.save_tiles.parent.mkdir(parents=True, exist_ok=True)
        np.save(args.save_tiles, real_tiles(args.sample_dir, args.tiles))
        print(f"wrote {args.save_tiles}")
        return
    tiles_u8 = np.load(args.tiles_npy) if args.tiles_npy else real_tiles(args.sample_dir, args.tiles)
    package_dir = args.package_dir or reference_package_dir()
    with tempfile.TemporaryDirectory() as tmp:
        if args.models is None:
            args.models = Path(tmp)
            convert_reference(args.models, package_dir)
        model = Degradation.from_pretrained(args.models / "sen2naip-degradation")
        if args.device == "cpu":
            bench_cpu(args, tiles_u8, model)
        else:
            bench_gpu(args, tiles_u8, model, package_dir)


if __name__ == "__main__":
    main()
