"""Throughput of the synthetic stage: the local backend vs the Ray backend, same config and input, one run.

The stage is timed end to end from the backend's start (sources listed while the backend starts its
actors or worker processes → tile + blank filter → CLIP embedding → k-means++ → degradation, model
loading included, checkpoints written into a fresh work folder each run). Throughput is *tiles/s =
non-blank tiles embedded / stage seconds*; the ratio is against the local backend measured in the same
run. After every Ray run its checkpoints (every embedding, the selection, every degraded batch) are
compared with the local run's by sha256: the rows are equal when they all are. One untimed local run
on a small part of the input comes first (imports, file cache, CUDA context).

* ``--device cpu`` (default; this 2-core machine): the real NAIP of ``../shared/sample``, the tests'
  small settings; Ray runs on a local cluster of ``workers + 1`` CPUs started before the clock, with
  ``--workers`` actors of ``--ray-threads`` torch threads.
* ``--device cuda`` (the GPU machine): a mosaic of the real 484-px tiles of ``--tiles-npy``
  (``benchmarks/mosaic.py``, default ``.devcarry/tiles.npy``) of ``--images`` × ``--tiles-per-image``
  tiles; CLIP ViT-B-32 with seeded random weights; GPU actor pools with ``--actors-per-gpu`` actors
  sharing each GPU, on a cluster the backend starts inside the clock (Ray's fixed costs counted).

Models: the published weights when ``--models DIR`` (a converted folder, ``sen2naip convert-reference``)
is given, else a Degradation with seeded random weights (the published architecture; throughput does
not depend on the weights) saved to a temporary folder. The script prints which.

    python benchmarks/bench_ray.py                                   # CPU: 1 and 2 workers, the sample
    python benchmarks/bench_ray.py --device cuda --actors-per-gpu 2 1   # GPU machine, 6,144 tiles
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = Path(os.environ.get("SEN2NAIP_SAMPLE_DIR", REPO_ROOT.parent / "shared" / "sample"))
#: The 16 real NAIP tiles the GPU machine gets (``python benchmarks/mosaic.py --out .devcarry/tiles.npy``).
DEFAULT_TILES_NPY = REPO_ROOT / ".devcarry" / "tiles.npy"
#: Per device: CLIP model, tile size (None: the .npy's), tiles selected, clusters, batch sizes.
PRESETS: dict[str, dict] = {
    "cpu": {
        "clip_model": "ViT-S-32",
        "tile_size": 128,
        "size": 64,
        "clusters": 8,
        "embed_batch": 16,
        "batch": 8,
    },
    "cuda": {
        "clip_model": "ViT-B-32",
        "tile_size": None,
        "size": 2048,
        "clusters": 32,
        "embed_batch": 256,
        "batch": 64,
    },
}
#: Mosaic images by default (× ``--tiles-per-image`` 256 = 6,144 tiles: Ray's fixed costs stay small).
MOSAIC_IMAGES = 24
#: Seed of the mosaic's layout and of the random-weight Degradation.
SEED = 0


def _config(naip: Path, model: Path, out: Path, args: argparse.Namespace, size: int | None = None):
    from dataset_builder.core.config import from_dict

    return from_dict(
        {
            "out": str(out),
            "degradation_model": str(model),
            "device": args.device,
            "seed": 0,
            "batch_size": args.batch_size,
            "precision": args.precision,
            "sources": {"naip": {"folder": str(naip)}},
            "cross_sensor": {"enabled": False},
            "synthetic": {
                "tile_size": args.tile_size,
                "size": size or args.size,
                "n_clusters": args.clusters,
                "clip_model": args.clip_model,
                "embed_batch_size": args.embed_batch_size,
            },
        }
    )


def random_degradation(folder: Path, seed: int) -> Path:
    """A Degradation with the published architecture and seeded random weights and noise table, saved."""
    from sen2naip_hub.models import BlurModel, Degradation, HarmonizationModel, NoiseModel
    from sen2naip_hub.models.noise import published_noise_axes

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        edges, values = published_noise_axes()
        table = torch.rand(len(edges) + 1, len(values), dtype=torch.float64)
        model = Degradation(HarmonizationModel(), BlurModel(), NoiseModel.from_table(table, edges, values))
    model.save_pretrained(folder)
    return folder


def _runner(backend: str, args: argparse.Namespace, actors_per_gpu: int, workers: int | None):
    from dataset_builder.backends.local import LocalBackend
    from dataset_builder.backends.ray import RayBackend, RayOptions

    if backend == "local":
        return LocalBackend()
    threads = args.ray_threads if args.device == "cpu" else None
    options = RayOptions(
        workers=workers, torch_threads=threads, actors_per_gpu=actors_per_gpu, processes=args.actor_processes
    )
    return RayBackend(options)


def run_stage(config, runner) -> dict:
    """Run the synthetic stage with ``runner``; seconds per step, tiles, traffic and checkpoint digests."""
    from dataset_builder.core.checkpoints import Checkpoints
    from dataset_builder.core.context import BuildContext
    from dataset_builder.core.fingerprint import stage_fingerprints
    from dataset_builder.sources.stage import stage_sources
    from dataset_builder.synthetic import stage as synthetic

    quiet = lambda _: None  # noqa: E731
    store = Checkpoints.open(config.work_path, stage_fingerprints(config), quiet)
    context = BuildContext(config, quiet)
    times = {"start": time.perf_counter()}
    runner.start(context)  # as a build does: actors and worker processes start while sources are listed
    sources = stage_sources(config, store, progress=False)
    times["sources"] = time.perf_counter()
    arrivals: dict[str, list[float]] = {"embed": [], "degrade": []}
    embed = synthetic.plan_embed(config, sources)
    runner.execute(embed, store, context, False, lambda _: arrivals["embed"].append(time.perf_counter()))
    times["embed"] = time.perf_counter()
    selected = synthetic.select(config, store, embed, quiet, context.device)["selected"]
    times["select"] = time.perf_counter()
    degrade = synthetic.plan_degrade(config, selected, sources)
    runner.execute(degrade, store, context, False, lambda _: arrivals["degrade"].append(time.perf_counter()))
    times["degrade"] = time.perf_counter()
    runner.close()
    context.close()
    names = [*embed.names, synthetic.SELECTION_CHECKPOINT, *degrade.names]
    tiles = sum(len(store.load_meta(name)["tiles"]) for name in embed.names)
    return {
        "seconds": {k: times[k] - times[p] for p, k in zip(times, list(times)[1:], strict=False)},
        "tiles": tiles,
        "selected": len(selected),
        "digests": {n: hashlib.sha256(store.path(n).read_bytes()).hexdigest() for n in names},
        "traffic": _traffic(store, embed, degrade, tiles, len(selected)),
        "startup": {
            step: (got[0] - times[previous], (len(got) - 1) / max(got[-1] - got[0], 1e-9))
            for (step, got), previous in zip(arrivals.items(), ("sources", "select"), strict=True)
            if got
        },
    }


def _traffic(store, embed, degrade, tiles: int, selected: int) -> dict[str, float]:
    """Bytes per tile a Ray build moves: task arguments out, checkpoint payloads back (embed, degrade)."""

    def size(step, what):
        if what == "args":
            return sum(len(json.dumps(t.args)) for t in step.tasks)
        return sum(store.path(n).stat().st_size for n in step.names)

    return {
        "embed args": size(embed, "args") / max(tiles, 1),
        "embed payload": size(embed, "payload") / max(tiles, 1),
        "degrade args": size(degrade, "args") / max(selected, 1),
        "degrade payload": size(degrade, "payload") / max(selected, 1),
    }


def prepare_input(args: argparse.Namespace, root: Path) -> tuple[Path, str]:
    """The NAIP folder to build from and a description of it."""
    naip = root / "naip"
    if args.tiles_npy is None:
        naip.mkdir()
        paths = sorted((SAMPLE_DIR / "naip").glob("*.tif"))
        paths = paths[: args.images] if args.images else paths
        for path in paths:
            (naip / path.name).symlink_to(path)
        return naip, f"{len(paths)} real NAIP images of {SAMPLE_DIR}"
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from mosaic import load_tiles_npy, make_mosaic, mosaic_name

    tiles = load_tiles_npy(args.tiles_npy)
    if args.tile_size is None:
        args.tile_size = tiles.shape[-1]
    images = args.images or MOSAIC_IMAGES
    start = time.perf_counter()
    paths = make_mosaic(tiles, naip, images, args.tiles_per_image, SEED)
    took = time.perf_counter() - start
    for copy in range(1, args.links + 1):  # the same bytes under more names: more tiles, no more disk
        for index, path in enumerate(paths):
            (naip / mosaic_name(copy * images + index)).symlink_to(path)
    links = f", each file also linked under {args.links} more names" if args.links else ""
    return naip, (
        f"mosaic of {images} images × {args.tiles_per_image} of the {len(tiles)} real "
        f"{tiles.shape[-1]}-px tiles of {args.tiles_npy} (written in {took:.0f} s){links}"
    )


def prepare_models(args: argparse.Namespace, root: Path) -> tuple[Path, str]:
    """The Degradation folder and what it holds."""
    from sen2naip_hub.convert import REPO_NAMES

    if args.models is not None:
        return args.models / REPO_NAMES["degradation"], f"published weights from {args.models}"
    folder = random_degradation(root / "random-degradation", SEED)
    return folder, f"Degradation with seeded random weights (seed {SEED}), {folder}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", choices=tuple(PRESETS), default="cpu")
    parser.add_argument(
        "--tiles-npy", type=Path, help="mosaic input from these tiles (cuda default: .devcarry)"
    )
    parser.add_argument("--images", type=int, default=0, help="NAIP images (sample: 0 = all; mosaic: 0 = 24)")
    parser.add_argument("--tiles-per-image", type=int, default=256)
    parser.add_argument(
        "--links", type=int, default=0, help="cuda: link each mosaic file under this many more names"
    )
    parser.add_argument("--tile-size", type=int)
    parser.add_argument("--size", type=int, help="tiles selected (and degraded)")
    parser.add_argument("--clusters", type=int)
    parser.add_argument("--clip-model")
    parser.add_argument("--embed-batch-size", type=int)
    parser.add_argument("--batch-size", type=int, help="tiles per degradation task")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    parser.add_argument("--models", type=Path, help="converted published weights (default: random weights)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="cpu: actors per pool")
    parser.add_argument("--ray-threads", type=int, default=1, help="cpu: torch threads per Ray actor")
    parser.add_argument(
        "--actors-per-gpu", type=int, nargs="+", default=[2], help="cuda: actors sharing a GPU"
    )
    parser.add_argument(
        "--actor-processes", type=int, help="worker processes of each actor (default: the backend's)"
    )
    return parser


def _args() -> argparse.Namespace:
    args = _parser().parse_args()
    preset = PRESETS[args.device]
    if args.device == "cuda" and args.tiles_npy is None:
        args.tiles_npy = DEFAULT_TILES_NPY
    if args.tile_size is None and args.tiles_npy is None:
        args.tile_size = preset["tile_size"]
    for key, name in (("size", "size"), ("clusters", "clusters"), ("clip_model", "clip_model")):
        if getattr(args, key) is None:
            setattr(args, key, preset[name])
    args.embed_batch_size = args.embed_batch_size or preset["embed_batch"]
    args.batch_size = args.batch_size or preset["batch"]
    return args


def _variants(args: argparse.Namespace) -> list[tuple[str, int, int | None]]:
    """(label, actors per GPU, workers) of each Ray run."""
    if args.device == "cpu":
        return [(f"ray, {w} worker{'s' * (w > 1)}", 1, w) for w in args.workers]
    return [(f"ray, {k} actor{'s' * (k > 1)}/GPU", k, None) for k in args.actors_per_gpu]


def _row(label: str, got: dict, base: float, same: str) -> str:
    s = got["seconds"]
    total = sum(s.values())
    rate = got["tiles"] / total
    steps = f"{s['sources']:>8.1f}{s['embed']:>8.1f}{s['select']:>8.1f}{s['degrade']:>9.1f}"
    rates = f"{got['tiles'] / s['embed']:>9.1f}{got['selected'] / s['degrade']:>9.1f}"
    first = "; ".join(
        f"{step}: first checkpoint after {wait:.1f} s, then {per_s:.2f} tasks/s"
        for step, (wait, per_s) in got["startup"].items()
    )
    return (
        f"{label:<20}{got['tiles']:>7}{steps}{total:>9.1f}{rates}{rate:>9.1f}{rate / base:>8.2f}x  {same}\n"
        f"{'':<20}({first})"
    )


def main() -> None:
    args = _args()
    import ray

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="bench_ray_") as tmp:
        root = Path(tmp)
        naip, input_text = prepare_input(args, root)
        model, model_text = prepare_models(args, root)
        gpu = torch.cuda.get_device_name() if args.device == "cuda" else "no GPU"
        print(
            f"input: {input_text}\nmodels: {model_text}\n{args.tile_size}-px tiles, {args.clip_model} "
            f"(random weights, batch {args.embed_batch_size}), {args.size} selected, degradation batch "
            f"{args.batch_size} {args.precision}; {os.cpu_count()} CPUs, {gpu}, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), ray {ray.__version__}"
        )
        _warmup(naip, model, root, args)
        local = run_stage(
            _config(naip, model, root / "local" / "sen2naip", args), _runner("local", args, 1, 0)
        )
        shutil.rmtree(root / "local")
        if args.device == "cuda":
            torch.cuda.empty_cache()  # the driver's cached blocks would otherwise be held from the actors
        base = local["tiles"] / sum(local["seconds"].values())
        print(
            f"{'backend':<20}{'tiles':>7}{'sources':>8}{'embed s':>8}{'select':>8}{'degrade':>9}"
            f"{'total s':>9}"
            f"{'embed/s':>9}{'degr./s':>9}{'tiles/s':>9}{'vs local':>9}  same checkpoints as local"
        )
        print(_row("local", local, base, "-"))
        for index, (label, per_gpu, workers) in enumerate(_variants(args)):
            folder = root / f"ray-{index}"
            if args.device == "cpu":
                ray.init(num_cpus=workers + 1, include_dashboard=False, log_to_driver=False)
            try:
                got = run_stage(
                    _config(naip, model, folder / "sen2naip", args),
                    _runner("ray", args, per_gpu, workers),
                )
            finally:
                ray.shutdown()
            shutil.rmtree(folder)
            equal = sum(got["digests"].get(n) == d for n, d in local["digests"].items())
            same = f"{equal}/{len(local['digests'])} " + (
                "EQUAL" if got["digests"] == local["digests"] else "DIFFER"
            )
            print(_row(label, got, base, same))
        print(
            "bytes per tile through the object store (task args out, checkpoint payload back): "
            + ", ".join(f"{k} {v:,.0f}" for k, v in local["traffic"].items())
        )


def _warmup(naip: Path, model: Path, root: Path, args: argparse.Namespace) -> None:
    """An untimed local run over the first image only (imports, CUDA context, file cache)."""
    first = root / "warmup-naip"
    first.mkdir()
    path = sorted(naip.glob("*.tif"))[0]
    (first / path.name).symlink_to(path.resolve())
    config = _config(
        first, model, root / "warmup" / "sen2naip", args, size=max(args.batch_size, args.clusters)
    )
    run_stage(config, _runner("local", args, 1, 0))
    shutil.rmtree(root / "warmup")


if __name__ == "__main__":
    main()
