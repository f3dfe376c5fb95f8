"""Throughput of the synthetic stage: the local backend vs the Ray backend with 1 and 2 workers.

The stage is timed end to end (tile + blank filter → CLIP embedding → k-means++ → degradation, model
loading included, checkpoints written into a fresh work folder each run), on the real NAIP of
``../shared/sample`` (override with ``SEN2NAIP_SAMPLE_DIR``), with the tests' small settings:
``--tile-size`` px tiles, open_clip ``--clip-model`` with seeded random weights, ``--size`` tiles
selected. Throughput is *tiles/s = non-blank tiles embedded / stage seconds*; the ratio is against the
local backend measured in the same run. Ray runs on a local cluster started here with ``workers + 1``
logical CPUs (one pool of ``workers`` actors at a time, plus the read tasks); each actor uses
``--ray-threads`` torch threads. The local backend uses torch's default thread count. After every
run the selected tiles and the degradation checkpoints are compared with the local run's. One
untimed local run comes first (imports, file cache); Ray's times include starting its actors.

    python benchmarks/bench_ray.py                       # 1 and 2 workers, all sample NAIP images
    python benchmarks/bench_ray.py --workers 1 2 --images 4 --tile-size 128
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = Path(os.environ.get("SEN2NAIP_SAMPLE_DIR", REPO_ROOT.parent / "shared" / "sample"))


def _config(naip: Path, model: Path, out: Path, args: argparse.Namespace):
    from dataset_builder.core.config import from_dict

    return from_dict(
        {
            "out": str(out),
            "degradation_model": str(model),
            "device": "cpu",
            "seed": 0,
            "batch_size": args.batch_size,
            "sources": {"naip": {"folder": str(naip)}},
            "cross_sensor": {"enabled": False},
            "synthetic": {
                "tile_size": args.tile_size,
                "size": args.size,
                "n_clusters": args.clusters,
                "clip_model": args.clip_model,
                "embed_batch_size": args.embed_batch_size,
            },
        }
    )


def _run(config, backend: str, workers: int, threads: int) -> tuple[float, int, list[str], list[bytes]]:
    """Seconds of the synthetic stage, tiles embedded, selected ids, degraded LR arrays (as bytes)."""
    from dataset_builder.backends.local import LocalBackend
    from dataset_builder.backends.ray import RayBackend, RayOptions
    from dataset_builder.core.checkpoints import Checkpoints
    from dataset_builder.core.context import BuildContext
    from dataset_builder.core.fingerprint import stage_fingerprints
    from dataset_builder.sources.stage import stage_sources
    from dataset_builder.synthetic import stage as synthetic

    quiet = lambda _: None  # noqa: E731
    store = Checkpoints.open(config.work_path, stage_fingerprints(config), quiet)
    sources = stage_sources(config, store, progress=False)
    context = BuildContext(config, quiet)
    runner = (
        LocalBackend()
        if backend == "local"
        else RayBackend(RayOptions(workers=workers, torch_threads=threads))
    )
    start = time.perf_counter()
    embed = synthetic.plan_embed(config, sources)
    runner.execute(embed, store, context, progress=False)
    selected = synthetic.select(config, store, embed, quiet)["selected"]
    degrade = synthetic.plan_degrade(config, selected, sources)
    runner.execute(degrade, store, context, progress=False)
    seconds = time.perf_counter() - start
    runner.close()
    tiles = sum(len(store.load_meta(name)["tiles"]) for name in embed.names)
    ids = [s["tile_id"] for s in selected]
    lrs = [store.load_arrays(name)[1]["lr"].tobytes() for name in degrade.names]
    return seconds, tiles, ids, lrs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--images", type=int, default=0, help="NAIP images to use (0: all)")
    parser.add_argument("--tile-size", type=int, default=128)
    parser.add_argument("--size", type=int, default=64, help="tiles selected (and degraded)")
    parser.add_argument("--clusters", type=int, default=8)
    parser.add_argument("--clip-model", default="ViT-S-32")
    parser.add_argument("--embed-batch-size", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--ray-threads", type=int, default=1, help="torch threads per Ray actor")
    args = parser.parse_args()

    import ray
    import ray.data

    from sen2naip_hub.convert import REPO_NAMES, convert_reference

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    paths = sorted((SAMPLE_DIR / "naip").glob("*.tif"))
    paths = paths[: args.images] if args.images else paths
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        naip = root / "naip"
        naip.mkdir()
        for path in paths:
            (naip / path.name).symlink_to(path)
        convert_reference(root / "models")
        model = root / "models" / REPO_NAMES["degradation"]

        def config(name: str):
            return _config(naip, model, root / name / "sen2naip", args)

        print(
            f"{len(paths)} NAIP images, {args.tile_size}-px tiles, {args.clip_model} (random weights), "
            f"{args.size} selected; {os.cpu_count()} CPUs, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads locally), ray {ray.__version__}"
        )
        _run(config("warmup"), "local", 0, 0)  # untimed: imports, file cache, first model build
        seconds, tiles, selected, lrs = _run(config("local"), "local", 0, 0)
        base = tiles / seconds
        print(f"{'backend':<16}{'tiles':>7}{'seconds':>9}{'tiles/s':>9}{'vs local':>10}  same as local")
        print(f"{'local':<16}{tiles:>7}{seconds:>9.1f}{base:>9.2f}{1.0:>9.2f}x  -")
        for workers in args.workers:
            ray.init(num_cpus=workers + 1, include_dashboard=False, log_to_driver=False)
            try:
                ray.data.DataContext.get_current().enable_progress_bars = False
                got = _run(config(f"ray{workers}"), "ray", workers, args.ray_threads)
            finally:
                ray.shutdown()
            same = {
                "selection": got[2] == selected,
                "lr": got[3] == lrs,
            }
            rate = got[1] / got[0]
            label = f"ray, {workers} worker{'s' if workers > 1 else ''}"
            print(f"{label:<16}{got[1]:>7}{got[0]:>9.1f}{rate:>9.2f}{rate / base:>9.2f}x  {json.dumps(same)}")


if __name__ == "__main__":
    main()
