"""The synthetic stage end to end through ``sen2naip build``: stage times, tiles/s, rerun identity, CPU check.

One command on the GPU machine (needs torch, rasterio, pydantic, open_clip_torch, pyarrow, ...; see
``--help``)::

    python benchmarks/bench_synthetic_stage.py --device cuda [--models DIR] [--cpu-check 256]
    python benchmarks/bench_synthetic_stage.py --tiles 512 --device cpu      # small mode (CPU machine)

1. **Input**: ``--tiles`` (default 20,480) real 484-px NAIP tiles laid out as NAIP-like GeoTIFFs by
   :func:`mosaic.make_mosaic` (``--tiles-per-image`` each), from ``--tiles-npy`` (default
   ``.devcarry/tiles.npy``) or cut from ``../shared/sample``.
2. **Build** (the real builder: :func:`dataset_builder.build.build_dataset`, local backend, synthetic
   config only): device ``--device``, degradation batch ``--batch`` (256) in ``--precision`` (bf16), CLIP
   ``--clip-model`` (ViT-B-32) with seeded random weights (no download there) at batch ``--embed-batch``,
   selection size = half the tiles, ``--clusters`` k-means++ clusters. Degradation: the published weights
   converted into ``--models DIR`` (``sen2naip convert-reference DIR``) if given, else a seeded
   random-weight model of the same architecture (printed). Stage times come from wrapping the builder's
   own functions (busy = sum of call times, which overlap across threads; span = first start to last end).
3. **Rerun**: the same config into fresh folders; the selection and every shard's sha256 must be equal.
4. **Baseline** in the same run (``synthetic_baseline.py``): the old path's per-stage rates on a subset
   (one window read at a time, open_clip's PIL preprocessing per tile, fp32 CLIP and fp32 degradation at
   batch 32, per-tile noise loop, shards written after), combined into an end-to-end rate; the ratio is
   printed.
5. ``--cpu-check N``: the first N rows degraded again by the CPU path (fp32), compared with the build's.

Tiles/s = input tiles (every grid tile, blank or not) / seconds of the build; rows/s = rows written /
the same seconds. "synthetic stage" excludes the ``sources`` stage (listing and fully decoding every
input file once), which the table shows on its own line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mosaic import load_tiles_npy, make_mosaic, tiles_from_sample
from synthetic_baseline import baseline_rates, cpu_check, random_degradation
from timing_probe import STAGES, CpuMeter, StageProbe

REPO = Path(__file__).resolve().parents[1]
#: The probe's label of the degradation step (the py-spy recording starts with its first call).
DEGRADE_LABEL = next(label for label, target, _ in STAGES if target.endswith(":run_degrade"))
DEFAULT_TILES_NPY = REPO / ".devcarry" / "tiles.npy"
SAMPLE_DIR = REPO.parent / "shared" / "sample"
#: Tolerance of the CPU check: p99.9 of |LR(GPU) − LR(CPU path)| in reflectance (issue 16's bound for
#: the default GPU path, 1/255), and the mean.
CPU_CHECK_P999: float = 1 / 255
CPU_CHECK_MEAN: float = 1e-3
#: Seconds the issue asks for at most per 1,000 input tiles (≥ 1,000 tiles/s).
TARGET_TILES_PER_S: float = 1000.0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tiles", type=int, default=20_480, help="input tiles (default 20,480)")
    p.add_argument("--tile-size", type=int, default=None, help="px (default 484; 128 with --device cpu)")
    p.add_argument("--tiles-per-image", type=int, default=128)
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", type=int, default=256, help="degradation batch")
    p.add_argument("--embed-batch", type=int, default=256, help="CLIP batch")
    p.add_argument(
        "--precision",
        choices=["fp32", "bf16", "fp16"],
        default=None,
        help="U-Net (default bf16; fp32 on CPU)",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the degradation")
    p.add_argument("--workers", default="auto", help="the build's workers: auto or a number (0: threads)")
    p.add_argument("--clip-model", default="ViT-B-32")
    p.add_argument("--clusters", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--models", type=Path, default=None, help="folder of converted published models")
    p.add_argument("--tiles-npy", type=Path, default=DEFAULT_TILES_NPY)
    p.add_argument("--workdir", type=Path, default=None, help="default: a new temporary folder")
    p.add_argument("--baseline-tiles", type=int, default=None, help="default 1,024 (64 on CPU); 0: skip")
    p.add_argument("--cpu-check", type=int, default=0, metavar="N", help="compare N rows with the CPU path")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    p.add_argument("--runs", type=int, choices=(1, 2), default=2, help="2: build again, check identity")
    p.add_argument(
        "--switch-interval",
        type=float,
        nargs="+",
        default=None,
        metavar="S",
        help="sys.setswitchinterval (s) for run 1 [and run 2] (default: the interpreter's)",
    )
    p.add_argument(
        "--py-spy",
        type=Path,
        default=None,
        metavar="BIN",
        help="py-spy binary: record run 1's degradation step (GIL holders and all threads) into --py-spy-out",
    )
    p.add_argument(
        "--prefetch-depth",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="the local backend's tasks read ahead, for run 1 [and run 2] (default: the builder's)",
    )
    p.add_argument("--py-spy-out", type=Path, default=Path("."), help="folder of the py-spy profiles")
    p.add_argument("--py-spy-seconds", type=int, default=20)
    args = p.parse_args()
    cpu = args.device == "cpu"
    args.tile_size = args.tile_size or (128 if cpu else 484)
    args.precision = args.precision or ("fp32" if cpu else "bf16")  # bf16 autocast is slow on CPUs
    if args.baseline_tiles is None:
        args.baseline_tiles = 64 if cpu else 1024
    return args


def real_tiles(args: argparse.Namespace) -> np.ndarray:
    """Real uint8 tiles of ``--tile-size`` px: the .npy (cropped if larger), else cut from the sample."""
    if args.tiles_npy.is_file():
        tiles = load_tiles_npy(args.tiles_npy)
        if tiles.shape[-1] >= args.tile_size:
            return np.ascontiguousarray(tiles[:, :, : args.tile_size, : args.tile_size])
    return tiles_from_sample(SAMPLE_DIR, 16, args.tile_size)


def degradation_folder(args: argparse.Namespace, root: Path) -> tuple[Path, str]:
    """The Degradation to build with, and how to describe it."""
    if args.models:
        folder = args.models / "sen2naip-degradation"
        return folder, f"published SEN2NAIP weights ({folder})"
    return random_degradation(root / "random-degradation", args.seed), f"random weights (seed {args.seed})"


def build_config(args: argparse.Namespace, naip: Path, model: Path, out: Path, n_tiles: int) -> dict:
    size = n_tiles // 2
    return {
        "out": str(out),
        "work_dir": str(out.parent / "work"),
        "degradation_model": str(model),
        "device": args.device,
        "seed": args.seed,
        "batch_size": args.batch,
        "precision": args.precision,
        "compile": args.compile,
        "workers": args.workers if args.workers == "auto" else int(args.workers),
        "sources": {"naip": {"folder": str(naip)}},
        "cross_sensor": {"enabled": False},
        "synthetic": {
            "tile_size": args.tile_size,
            "size": size,
            "n_clusters": min(args.clusters, size),
            "clip_model": args.clip_model,
            "embed_batch_size": args.embed_batch,
        },
    }


def py_spy_hook(args: argparse.Namespace) -> dict[str, Callable[[], object]]:
    """The probe's hook that starts py-spy on this process when the degradation step starts: one
    recording of the threads that hold the GIL, one of every thread (idle ones too), raw stacks."""
    if args.py_spy is None:
        return {}

    def start() -> None:
        args.py_spy_out.mkdir(parents=True, exist_ok=True)
        for name, flags in (("gil", ["--gil"]), ("all", ["--idle"])):
            command = [str(args.py_spy), "record", "--pid", str(os.getpid()), "--threads", "--nonblocking"]
            command += ["-r", "200", "-d", str(args.py_spy_seconds), "-f", "raw"]
            command += [*flags, "-o", str(args.py_spy_out / f"degrade_{name}.txt")]
            with open(args.py_spy_out / f"{name}.err", "w") as errors:  # the child keeps its own copy
                subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors)
        print(f"py-spy: recording {args.py_spy_seconds} s of the degradation step into {args.py_spy_out}")

    return {DEGRADE_LABEL: start}


def run_build(settings: dict, on_first: dict | None = None) -> tuple[StageProbe, dict]:
    """One build under the stage probe; returns the probe and facts of the result."""
    from dataset_builder.build import build_dataset
    from dataset_builder.core.config import BuildConfig

    config = BuildConfig.model_validate(settings)
    with CpuMeter() as meter, StageProbe(on_first) as probe:
        result = build_dataset(config, progress=False, echo=lambda line: print(f"  build: {line}"))
    out = Path(settings["out"])
    entries = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    synthetic = [e for e in entries if e["stage"] == "synthetic"]
    shards = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((out / "synthetic").glob("*.parquet"))
    }
    selection = (Path(settings["work_dir"]) / "synthetic" / "selection.json").read_bytes()
    facts = {
        "tiles": len(synthetic),
        "nonblank": sum(1 for e in synthetic if not e.get("reason", "").startswith("blank")),
        "rows": result.kept,
        "shards": shards,
        "selection": hashlib.sha256(selection).hexdigest(),
        "manifest": hashlib.sha256((out / "manifest.jsonl").read_bytes()).hexdigest(),
        "meter": meter,
    }
    return probe, facts


def print_table(probe: StageProbe, facts: dict, title: str) -> float:
    """The stage table of one build; returns the synthetic stage's seconds."""
    counts = {"tiles": facts["tiles"], "nonblank": facts["nonblank"], "rows": facts["rows"]}
    print(f"\n{title}")
    print(
        "| stage | calls | items | busy s | span s | items/s (span) | cores: build process, workers |"
        "\n|---|---:|---:|---:|---:|---:|---:|"
    )
    for row in probe.rows(counts, facts["meter"]):
        print(
            "| {stage} | {calls} | {items:,} | {busy:.2f} | {span:.2f} | {rate:,.0f} | "
            "{cores:.1f}, {children:.1f} |".format(**row)
        )
    total, sources = probe.total(), probe.span(STAGES[0][0])
    stage = total - sources
    for label, seconds in (("whole build", total), ("synthetic stage (build − sources)", stage)):
        print(
            f"{label}: {seconds:.2f} s → {facts['tiles'] / seconds:,.0f} input tiles/s, "
            f"{facts['rows'] / seconds:,.0f} rows/s ({facts['tiles']:,} tiles, {facts['rows']:,} rows)"
        )
    return stage


def main() -> None:
    args = parse_args()
    root = Path(args.workdir or tempfile.mkdtemp(prefix="bench_synthetic_"))
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"device: {args.device} ({device_name}), torch {torch.__version__}, work folder {root}")
    tiles = real_tiles(args)
    per_image = args.tiles_per_image
    n_images = max(1, args.tiles // per_image)
    start = time.perf_counter()
    naip = root / "naip"
    make_mosaic(tiles, naip, n_images, per_image, seed=args.seed)
    n_tiles = n_images * per_image
    print(
        f"mosaic: {n_images} images × {per_image} tiles of {args.tile_size} px = {n_tiles:,} tiles "
        f"from {len(tiles)} real tiles ({time.perf_counter() - start:.1f} s)"
    )
    model, described = degradation_folder(args, root)
    print(f"degradation: {described}; precision {args.precision}, batch {args.batch}, compile {args.compile}")
    print(f"CLIP: {args.clip_model}, random weights (seed {args.seed}), batch {args.embed_batch}")
    from dataset_builder.core.context import worker_processes

    processes = worker_processes(args.workers if args.workers == "auto" else int(args.workers))
    print(f"workers: {args.workers} → {processes} processes ({os.cpu_count()} cores; 0 = threads)")

    from dataset_builder.backends import local

    intervals = args.switch_interval or [sys.getswitchinterval()]
    depths = args.prefetch_depth or [local.PREFETCH_DEPTH]
    runs = []
    for name in ("run 1", "run 2 (same seed, fresh folders)")[: args.runs]:
        sys.setswitchinterval(intervals[min(len(runs), len(intervals) - 1)])
        local.PREFETCH_DEPTH = depths[min(len(runs), len(depths) - 1)]
        print(
            f"\n{name}: interpreter switch interval {sys.getswitchinterval() * 1e3:g} ms, "
            f"prefetch depth {local.PREFETCH_DEPTH}"
        )
        settings = build_config(
            args, naip, model, root / name.split(" (")[0].replace(" ", "") / "sen2naip", n_tiles
        )
        probe, facts = run_build(settings, py_spy_hook(args) if not runs else None)
        seconds = print_table(probe, facts, name)
        runs.append((settings, facts, seconds))
        if len(runs) == 1 and args.cpu_check:
            report_cpu_check(args, settings)
        shutil.rmtree(Path(settings["out"]))  # disk: keep only what the identity check needs
        shutil.rmtree(Path(settings["work_dir"]) / "write", ignore_errors=True)

    (first, a, seconds), *rerun = runs
    same = {}
    if rerun:
        (_, b, _) = rerun[0]
        same = {key: a[key] == b[key] for key in ("selection", "shards", "manifest")}
        print(
            f"\nrerun identity: selection {same['selection']}, {len(a['shards'])} shards sha256 "
            f"{same['shards']}, manifest {same['manifest']}"
        )
    old = baseline_rates(naip, model, args, first, n_tiles, a) if args.baseline_tiles else None
    if old is not None:
        print(old.table())
        print("(the old path's rates exclude model loading; the new runs' seconds include it)")
    for index, (_, _, stage_s) in enumerate(runs if old is not None else ()):
        name = f"run {index + 1}"
        new_rate = a["tiles"] / stage_s
        verdict = "met" if new_rate >= TARGET_TILES_PER_S else "NOT met"
        print(
            f"end to end, synthetic stage, {name}: {new_rate:,.0f} tiles/s vs old path {old.end_to_end:,.0f} "
            f"tiles/s = {new_rate / old.end_to_end:.2f}× (same run, same device); "
            f"target ≥ {TARGET_TILES_PER_S:,.0f}: {verdict}"
        )
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    if not all(same.values()):
        raise SystemExit("rerun identity FAILED")


def report_cpu_check(args: argparse.Namespace, settings: dict) -> None:
    diff = cpu_check(settings, args.cpu_check)
    ok = diff["p99.9"] <= CPU_CHECK_P999 and diff["mean"] <= CPU_CHECK_MEAN
    print(
        f"\nCPU check ({diff['rows']} rows, CPU path fp32 vs this build): |ΔLR| reflectance mean "
        f"{diff['mean']:.2e}, p99.9 {diff['p99.9']:.2e}, max {diff['max']:.3f} ({diff['max_dn']} DN); "
        f"tolerance p99.9 ≤ {CPU_CHECK_P999:.2e}, mean ≤ {CPU_CHECK_MEAN:.0e}: {'pass' if ok else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
