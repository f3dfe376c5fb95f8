"""The synthetic stage's old path, measured on a subset, and the CPU check (for bench_synthetic_stage.py).

The old path (before the stage moved to the GPU) did, per input tile: read one window at a time, open_clip's
PIL preprocessing on the CPU, CLIP in fp32 at batch 32; k-means with scikit-learn on the CPU; per
selected tile: read the window again, degrade in fp32 at batch 32 with a per-tile noise loop, convert HR
and LR, save both in the degradation checkpoint; then, after every batch, load the checkpoints back and
write the shards in one thread. :func:`baseline_rates` times each of these on ``--baseline-tiles`` tiles
of the same mosaic, with the same models on the same device, and combines the per-tile times into the
old path's end-to-end seconds for the full input.
"""

from __future__ import annotations

import io
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["Baseline", "baseline_rates", "cpu_check", "random_degradation"]

#: The old path's batch sizes (builder defaults before this change: embed 32, degradation 32 as used).
OLD_BATCH: int = 32


def random_degradation(folder: Path, seed: int) -> Path:
    """:func:`bench_dataset.untrained_degradation` (U-Net weights from ``seed``) saved in ``folder``."""
    from bench_dataset import untrained_degradation

    untrained_degradation(seed).save_pretrained(folder)
    return folder


@dataclass
class Baseline:
    """Per-tile seconds of each old step, and the old end-to-end rate for the full input."""

    per_tile: dict[str, float]
    counts: dict[str, int]
    kmeans_s: float
    kmeans_note: str
    subset: int

    @property
    def seconds(self) -> float:
        n, rows = self.counts["tiles"], self.counts["rows"]
        p = self.per_tile
        return n * (p["read"] + p["clip"]) + self.kmeans_s + rows * (p["read"] + p["degrade"] + p["write"])

    @property
    def end_to_end(self) -> float:
        return self.counts["tiles"] / self.seconds

    def table(self) -> str:
        lines = [
            f"\nold path (measured on {self.subset} tiles of the same mosaic, same device):",
            "| old step | tiles/s |\n|---|---:|",
        ]
        for step, label in (
            ("read", "read one window at a time"),
            ("clip", f"CLIP: PIL preprocessing per tile + fp32 batch {OLD_BATCH}"),
            ("degrade", f"degrade fp32 batch {OLD_BATCH}, per-tile noise loop, HR+LR conversion"),
            ("write", "HR+LR checkpoint, load back, shards written after (one thread)"),
        ):
            lines.append(f"| {label} | {1 / self.per_tile[step]:,.0f} |")
        lines.append(f"| k-means ({self.kmeans_note}) | {self.kmeans_s:.2f} s |")
        lines.append(
            f"old path, whole input: {self.seconds:.1f} s → {self.end_to_end:,.0f} input tiles/s "
            f"({self.counts['tiles']:,} tiles, {self.counts['rows']:,} rows)"
        )
        return "\n".join(lines)


def _subset(naip: Path, size: int, n: int) -> list:
    from dataset_builder.core.tiling import grid_origins, read_tile

    origins = [(p, r, c) for p in sorted(naip.glob("*.tif")) for r, c in grid_origins(p, size)][:n]
    start = time.perf_counter()
    tiles = [read_tile(p, r, c, size) for p, r, c in origins]
    return [t for t in tiles if not isinstance(t, str)], (time.perf_counter() - start) / len(origins)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _old_clip(tiles: list, args) -> float:
    from PIL import Image

    from dataset_builder.synthetic.clip import ClipEmbedder, rgb_counts

    embedder = ClipEmbedder(
        args.clip_model, device=args.device, batch_size=OLD_BATCH, seed=args.seed, precision="fp32"
    )
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(tiles), OLD_BATCH):
            images = [
                Image.fromarray(np.ascontiguousarray(rgb_counts(t.data[:3]).transpose(1, 2, 0)))
                for t in tiles[i : i + OLD_BATCH]
            ]
            batch = torch.stack([embedder.pil_transform(image) for image in images]).to(args.device)
            torch.nn.functional.normalize(embedder.model.encode_image(batch).float(), dim=-1).cpu()
    return (time.perf_counter() - start) / len(tiles)


def _old_degrade(tiles: list, model_dir: Path, args) -> tuple[float, list]:
    from sen2naip_hub.models import Degradation
    from sen2naip_hub.sensors import reflectance_to_s2

    model = Degradation.from_pretrained(model_dir).to(args.device).eval()
    model.harmonization.precision = "fp32"
    pairs = []
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(tiles), OLD_BATCH):
            chunk = tiles[i : i + OLD_BATCH]
            hr = torch.from_numpy(np.stack([t.data for t in chunk])).to(args.device)
            lr = model(hr, noise=False).lr
            noisy = [
                model.noise(lr[j : j + 1], torch.Generator(device=args.device).manual_seed(j))
                for j in range(len(chunk))
            ]
            lr = torch.cat(noisy).float().cpu().numpy()
            pairs += [(reflectance_to_s2(t.data), reflectance_to_s2(lr[j])) for j, t in enumerate(chunk)]
    _sync(args.device)
    return (time.perf_counter() - start) / len(tiles), pairs


def _old_write(tiles: list, pairs: list) -> float:
    import datetime as dt

    from dataset_builder.core.checkpoints import Checkpoints
    from dataset_builder.core.records import PairRecord
    from dataset_builder.core.splits import spatial_roi_id
    from dataset_builder.write.shards import write_config

    records = [
        PairRecord(spatial_roi_id(t.crs.to_wkt(), t.transform, t.data.shape[-1], t.data.shape[-1]), hr, lr,
                   t.crs.to_wkt(), tuple(t.transform.to_gdal()), tuple(t.transform.to_gdal()),
                   dt.date(2020, 6, 1), None, float("nan"), float("nan"), 0.0, 0.0, "baseline", "real")
        for t, (hr, lr) in zip(tiles, pairs, strict=True)
    ]  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        store = Checkpoints(Path(folder))
        start = time.perf_counter()
        names = []
        for i in range(0, len(records), OLD_BATCH):
            names.append(f"synthetic/degrade-{i:05d}.npz")
            store.save_records(names[-1], records[i : i + OLD_BATCH])
        loaded = (r for name in names for r in store.load_records(name)[0])
        write_config(loaded, Path(folder) / "out", "synthetic")
        return (time.perf_counter() - start) / len(records)


def _old_kmeans(work: Path, args, facts: dict) -> tuple[float, str]:
    try:
        from sklearn.cluster import KMeans
    except ImportError:
        return float("nan"), "scikit-learn not installed here"
    vectors = [np.load(p)["embeddings"] for p in sorted((work / "synthetic").glob("embed-*.npz"))]
    points = np.concatenate([v for v in vectors if v.size]).astype(np.float64)
    start = time.perf_counter()
    KMeans(
        n_clusters=min(args.clusters, facts["rows"]), init="k-means++", n_init=10, random_state=args.seed
    ).fit(points)
    return time.perf_counter() - start, "scikit-learn on the CPU, the full embeddings"


def baseline_rates(
    naip: Path, model_dir: Path, args, settings: dict[str, Any], n_tiles: int, facts: dict
) -> Baseline:
    """Time the old path's steps on a subset (see the module docstring)."""
    tiles, read_s = _subset(naip, args.tile_size, args.baseline_tiles)
    clip_s = _old_clip(tiles, args)
    degrade_s, pairs = _old_degrade(tiles, model_dir, args)
    write_s = _old_write(tiles, pairs)
    kmeans_s, note = _old_kmeans(Path(settings["work_dir"]), args, facts)
    if np.isnan(kmeans_s):
        kmeans_s, note = 0.0, note + ": counted as 0 s (favours the old path)"
    per_tile = {"read": read_s, "clip": clip_s, "degrade": degrade_s, "write": write_s}
    return Baseline(per_tile, {"tiles": facts["tiles"], "rows": facts["rows"]}, kmeans_s, note, len(tiles))


def cpu_check(settings: dict[str, Any], n: int) -> dict[str, float]:
    """The first ``n`` selected rows degraded again by the CPU path (fp32) vs the build's LR."""
    from dataset_builder.core.checkpoints import Checkpoints
    from dataset_builder.core.config import BuildConfig
    from dataset_builder.core.context import BuildContext
    from dataset_builder.core.plan import run_task
    from dataset_builder.sources.stage import CHECKPOINT
    from dataset_builder.synthetic import stage

    work = Path(settings["work_dir"])
    store = Checkpoints(work)
    selected = store.load_json(stage.SELECTION_CHECKPOINT)["selected"][:n]
    built, index = [], 0
    while len(built) < len(selected):
        built += [r.lr for r in store.load_records(f"synthetic/degrade-{index:05d}.npz")[0]]
        index += 1
    config = BuildConfig.model_validate(
        settings | {"device": "cpu", "precision": "fp32", "compile": False, "batch_size": OLD_BATCH}
    )
    context = BuildContext(config, echo=lambda _: None, processes=0)
    again = []
    try:
        for task in stage.plan_degrade(config, selected, store.load_json(CHECKPOINT)).tasks:
            with np.load(io.BytesIO(run_task(task, context)), allow_pickle=False) as data:
                if "lr" not in data.files:
                    raise RuntimeError(f"CPU path rejected {task.name}: {json.loads(data['meta'].tobytes())}")
                again.append(data["lr"])
    finally:
        context.close()
    diff = np.abs(np.concatenate(again).astype(np.int64) - np.stack(built[: len(selected)]).astype(np.int64))
    scale = 10000.0
    return {
        "rows": len(selected),
        "mean": float(diff.mean()) / scale,
        "p99.9": float(np.quantile(diff, 0.999)) / scale,
        "max": float(diff.max()) / scale,
        "max_dn": int(diff.max()),
    }
