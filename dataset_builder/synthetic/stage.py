"""Stage 3, synthetic: tile + CLIP per image (tasks) → k-means++ (driver) → degrade per batch (tasks).

1. one task per kept NAIP image (sorted by file name): its loader cuts the world-grid tiles, a grid row
   per worker (:attr:`~dataset_builder.core.context.BuildContext.workers`, processes or threads;
   :mod:`dataset_builder.synthetic.reads`), drops blank ones (:mod:`dataset_builder.core.tiling`, reason
   recorded) and keeps the others' 8-bit RGB; the runner embeds them with open_clip (preprocessing in
   torch on the device, batches of ``synthetic.embed_batch_size``) → ``synthetic/embed-NNNNN.npz``;
2. on the driver, :func:`select` runs :func:`~dataset_builder.synthetic.selection.select_diverse` over
   every embedding in image order, on the build's device → ``synthetic/selection.json``;
3. one task per batch of ``batch_size`` selected tiles: its loader has the workers read their 8-bit
   counts and converts them to reflectance on the device; the runner degrades them with the
   Degradation model (harmonization and blur batched), draws each tile's noise from a CPU generator
   seeded by :func:`tile_seed` (the build seed and the tile id, so a tile's noise never depends on its
   batch or on the device) → ``synthetic/degrade-NNNNN.npz`` holding the LR and the rows' fields (not
   the HR: :mod:`dataset_builder.synthetic.shards` reads it again when it writes the shards).

Loaders may run ahead of the task being computed (:func:`dataset_builder.core.plan.prefetch`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dataset_builder.core import tiling, workers
from dataset_builder.core.checkpoints import Checkpoints, encode_arrays, encode_records
from dataset_builder.core.config import BuildConfig
from dataset_builder.core.context import BuildContext, Echo
from dataset_builder.core.errors import BuildError
from dataset_builder.core.plan import Step, Task
from dataset_builder.core.records import PairRecord
from dataset_builder.core.splits import RoiSplitter, spatial_roi_id
from dataset_builder.core.tiling import grid_origins
from dataset_builder.synthetic import reads
from dataset_builder.synthetic.selection import select_diverse
from sen2naip_hub.io import lr_transform
from sen2naip_hub.models.noise import table_uniform
from sen2naip_hub.sensors import NAIP, reflectance_to_s2

__all__ = [
    "SELECTION_CHECKPOINT",
    "counts_on_device",
    "embedder",
    "load_degrade",
    "load_embed",
    "manifest_entries",
    "plan_degrade",
    "plan_embed",
    "run_degrade",
    "run_embed",
    "select",
    "tile_seed",
]

#: The k-means++ selection, made on the driver once every image is embedded.
SELECTION_CHECKPOINT: str = "synthetic/selection.json"
#: Bits of a tile's noise seed (torch generators take 64-bit seeds; 63 keeps it a positive int64).
SEED_BITS: int = 63


def tile_seed(seed: int, tile_id: str) -> int:
    """The noise seed of one tile: sha256 of the build seed and the tile id, as a 63-bit integer.

    >>> tile_seed(0, "m_x_20090818_r000000_c000128") == tile_seed(0, "m_x_20090818_r000000_c000128")
    True
    """
    digest = hashlib.sha256(f"{seed}:{tile_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> (64 - SEED_BITS)


def _naip_entries(sources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    naip = [e for e in sources if e["sensor"] == NAIP.name and e["status"] == "ok"]
    return sorted(naip, key=lambda e: Path(e["path"]).name)


# ---------------------------------------------------------------------------- 1. tile + CLIP
def plan_embed(config: BuildConfig, sources: list[dict[str, Any]]) -> Step:
    """One task per kept NAIP image, in file-name order."""
    if not config.synthetic.enabled:
        return Step("synthetic: tile + CLIP", ())
    tasks = tuple(
        Task(
            f"synthetic/embed-{i:05d}.npz",
            f"{__name__}:run_embed",
            {"path": e["path"]},
            f"{__name__}:load_embed",
        )
        for i, e in enumerate(_naip_entries(sources))
    )
    return Step("synthetic: tile + CLIP", tasks)


def embedder(context: BuildContext):
    """The context's CLIP embedder (:class:`~dataset_builder.synthetic.clip.ClipEmbedder` of the
    config's model, weights, device, batch and precision), made on first use and kept."""
    return context.cached("clip", lambda: _make_embedder(context))


def _make_embedder(context: BuildContext):
    from dataset_builder.synthetic.clip import ClipEmbedder

    synthetic = context.config.synthetic
    return ClipEmbedder(
        synthetic.clip_model,
        pretrained=synthetic.clip_pretrained,
        device=context.device,
        batch_size=synthetic.embed_batch_size,
        seed=context.config.seed,
        precision=synthetic.clip_precision,
    )


def load_embed(
    args: dict[str, Any], context: BuildContext
) -> tuple[list, torch.Tensor, list[dict[str, str]]]:
    """Task loader: one image's grid tiles, a grid row per worker (:func:`reads.embed_row`) → ids,
    8-bit RGB ``(N, 3, H, W)`` on the device, blanks (in grid order)."""
    path, size = args["path"], context.config.synthetic.tile_size
    rows = tiling.grid_rows(grid_origins(path, size))
    read = partial(reads.embed_row, path, size=size, spool=context.spool)
    tiles, blanks, rgb = [], [], []
    for kept, blank, pixels in context.workers.map(read, rows):
        tiles += kept
        blanks += blank
        rgb.append(context.upload(workers.take(pixels)))
    pixels = torch.cat(rgb) if rgb else context.upload(np.zeros((0, 3, size, size), dtype=np.uint8))
    return tiles, pixels, blanks


def run_embed(args: dict[str, Any], context: BuildContext, loaded: tuple) -> bytes:
    """Task runner: one image's tiles → manifest entries of the blank ones, ids and embeddings of the rest."""
    tiles, rgb, blanks = loaded
    embeddings = np.zeros((0, 0), dtype=np.float32)
    if tiles:
        embeddings = embedder(context).embed_counts(context.adopt(rgb))
    meta = {"path": args["path"], "tiles": tiles, "blank": blanks}
    return encode_arrays(meta, embeddings=embeddings.astype(np.float32))


# ---------------------------------------------------------------------------- 2. k-means++
def select(
    config: BuildConfig, store: Checkpoints, step: Step, echo: Echo, device: str = "cpu"
) -> dict[str, Any]:
    """The selection over every embedded image (checkpoint :data:`SELECTION_CHECKPOINT`); k-means on
    ``device``."""
    if store.has(SELECTION_CHECKPOINT):
        return store.load_json(SELECTION_CHECKPOINT)
    ids, vectors, where = [], [], {}
    for name in step.names:
        if store.rejection(name):
            continue
        meta, arrays = store.load_arrays(name)
        for (tile_id, row, col), vector in zip(meta["tiles"], arrays["embeddings"], strict=True):
            ids.append(tile_id)
            vectors.append(vector)
            where[tile_id] = [meta["path"], row, col]
    if not ids:
        raise BuildError("synthetic: every NAIP tile is blank; nothing to select")
    size, clusters = min(config.synthetic.size, len(ids)), min(config.synthetic.n_clusters, len(ids))
    if size < config.synthetic.size:
        echo(f"synthetic: only {len(ids)} non-blank tiles; selecting all of them")
    selection = select_diverse(ids, np.stack(vectors), size, clusters, seed=config.seed, device=device)
    chosen = [  # in tile-id order = image by image, so that a degradation batch reads few images
        {"tile_id": t, "path": where[t][0], "row": where[t][1], "col": where[t][2]}
        for t in sorted(selection.tile_ids)
    ]
    value = {"selected": chosen, "labels": selection.labels}
    store.save_json(SELECTION_CHECKPOINT, value)
    return value


# ---------------------------------------------------------------------------- 3. degradation
def plan_degrade(config: BuildConfig, selected: list[dict[str, Any]], sources: list[dict[str, Any]]) -> Step:
    """One task per ``batch_size`` consecutive selected tiles (with their images' dates)."""
    dates = {e["path"]: e["date"] for e in _naip_entries(sources)}
    size = config.batch_size
    batches = [selected[i : i + size] for i in range(0, len(selected), size)]
    tasks = tuple(
        Task(
            f"synthetic/degrade-{i:05d}.npz",
            f"{__name__}:run_degrade",
            {"tiles": batch, "dates": {c["path"]: dates[c["path"]] for c in batch}},
            f"{__name__}:load_degrade",
        )
        for i, batch in enumerate(batches)
    )
    return Step("synthetic: degrade", tasks)


def _tile_generators(chosen: list[dict[str, Any]], seed: int) -> list[torch.Generator]:
    """Each tile's own noise source: a CPU generator seeded by :func:`tile_seed` (the build seed and the
    tile id), so a tile's draw is the same whatever the device and the batch: a GPU build's rows match a
    CPU's."""
    return [torch.Generator().manual_seed(tile_seed(seed, c["tile_id"])) for c in chosen]


def _noise_draws(chosen: list[dict[str, Any]], context: BuildContext) -> torch.Tensor | None:
    """The batch's table-noise draws (:func:`~sen2naip_hub.models.noise.table_uniform` from
    :func:`_tile_generators`), on the device, made by the loader so that the thread driving the device
    does not (256 tiles: ~15 M float64 draws, 120 MB). None without noise, or for a model whose noise is
    not drawn from a table (its runner draws it)."""
    config = context.config
    if not config.synthetic.noise or (model := context.degradation).noise.mode != "table":
        return None
    side = config.synthetic.tile_size // model.scale
    shape = (len(chosen), len(NAIP.all_bands), side, side)
    with context.side_stream():
        return table_uniform(shape, _tile_generators(chosen, config.seed), context.device)


def _add_noise(
    model, lr: torch.Tensor, chosen: list[dict[str, Any]], seed: int, uniform: torch.Tensor | None
) -> torch.Tensor:
    """Each tile's own noise (from :func:`_tile_generators`), its draws made ahead when ``uniform``."""
    if uniform is not None:
        return model.noise(lr, uniform=uniform)
    return model.noise(lr, _tile_generators(chosen, seed))


def load_degrade(
    args: dict[str, Any], context: BuildContext
) -> tuple[torch.Tensor, list, torch.Tensor | None]:
    """Task loader: one batch's HR windows, read by the workers (:func:`reads.read_hr_group`, up to
    :data:`reads.READ_GROUP` tiles of one image each) → reflectance ``(N, 4, H, W)`` on the device
    (NAIP counts converted there, :func:`counts_on_device`), geometries, and the noise's draws
    (:func:`_noise_draws`)."""
    size, chosen = context.config.synthetic.tile_size, args["tiles"]
    groups = reads.hr_groups(chosen)
    read = partial(reads.read_hr_group, size=size, spool=context.spool)
    hr = torch.empty(
        (len(chosen), len(NAIP.all_bands), size, size), dtype=torch.float32, device=context.device
    )
    geometry: list[tuple | None] = [None] * len(chosen)
    for group, (values, valid, where) in zip(
        groups, context.workers.map(read, [[chosen[i] for i in g] for g in groups]), strict=True
    ):
        values = context.upload(workers.take(values))
        valid = None if valid is None else context.upload(workers.take(valid))
        contiguous = group == list(range(group[0], group[-1] + 1))  # as they are: selection in image order
        hr[slice(group[0], group[-1] + 1) if contiguous else group] = counts_on_device(values, valid)
        for index, place in zip(group, where, strict=True):
            geometry[index] = place
    return hr, geometry, _noise_draws(chosen, context)


def counts_on_device(values: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """NAIP counts ``(N, 4, H, W)`` → float32 reflectance where they are (NaN where not ``valid``), value
    for value :func:`sen2naip_hub.sensors.counts_to_reflectance`: each count looks its reflectance up in
    the table that function made (:data:`reads.NAIP_REFLECTANCE`; a division on the GPU may differ in
    the last bit: CUDA divides by a scalar as a product with its reciprocal). Float values are
    reflectance already and pass through."""
    if values.dtype.is_floating_point:
        return values
    table = torch.from_numpy(reads.NAIP_REFLECTANCE).to(values.device)
    reflectance = table[values.long()]
    return reflectance if valid is None else reflectance.masked_fill_(~valid[:, None], float("nan"))


def run_degrade(args: dict[str, Any], context: BuildContext, loaded: tuple) -> bytes:
    """Task runner: one batch of selected tiles → their records, LR only (noise seeded per tile)."""
    config, chosen = context.config, args["tiles"]
    synthetic, (hr, geometry, uniform) = config.synthetic, loaded
    hr = context.adopt(hr)
    model = context.degradation
    with torch.inference_mode():
        lr = model(hr, noise=False, harmonization=synthetic.harmonization).lr
        if synthetic.noise:
            uniform = None if uniform is None else context.adopt(uniform)
            lr = _add_noise(model, lr, chosen, config.seed, uniform)
    lr = reflectance_to_s2(lr.float().cpu().numpy())
    size = synthetic.tile_size
    records = [
        _record(
            *geometry[i],
            size,
            lr[i],
            args["dates"][c["path"]],
            model.scale,
            context.degradation_id,
            c["path"],
        )
        for i, c in enumerate(chosen)
    ]
    ids = [{"id": c["tile_id"], "roi_id": r.roi_id} for c, r in zip(chosen, records, strict=True)]
    return encode_records(records, ids, arrays=("lr",))


def _record(
    crs, transform, size: int, lr: np.ndarray, date: str, scale: int, model_id: str, path: str
) -> PairRecord:
    """The row of one tile, its ``hr`` not stored (None; read again by the shard writer)."""
    crs = crs.to_wkt()
    return PairRecord(
        roi_id=spatial_roi_id(crs, transform, size, size),
        hr=None,
        lr=lr,
        crs=crs,
        hr_transform=tuple(transform.to_gdal()),
        lr_transform=tuple(lr_transform(transform, scale).to_gdal()),
        hr_date=dt.date.fromisoformat(date),
        lr_date=None,
        qa1=math.nan,
        qa2=math.nan,
        shift_x=0.0,
        shift_y=0.0,
        degradation_model=model_id,
        source="real",
        naip_id=Path(path).stem,
    )


# ---------------------------------------------------------------------------- manifest
def manifest_entries(
    embed: Step, degrade: Step, store: Checkpoints, splitter: RoiSplitter
) -> list[dict[str, Any]]:
    """Every tile's entry: blank, rejected with its image or batch, not selected, or kept with its split."""
    if not embed.tasks:
        return []
    labels = store.load_json(SELECTION_CHECKPOINT)["labels"]
    kept, failed = {}, {}
    for task in degrade.tasks:
        reason = store.rejection(task.name)
        for tile in task.args["tiles"] if reason else ():
            failed[tile["tile_id"]] = reason
        for entry in () if reason else store.load_meta(task.name)["extra"]:
            kept[entry["id"]] = entry["roi_id"]
    entries = []
    for task in embed.tasks:
        reason = store.rejection(task.name)
        if reason:
            entries.append({"id": Path(task.args["path"]).name, "status": "rejected", "reason": reason})
            continue
        meta, _ = store.load_arrays(task.name)
        entries += meta["blank"]
        for tile_id, _row, _col in meta["tiles"]:
            entries.append(
                _tile_entry(tile_id, labels[tile_id], kept.get(tile_id), failed.get(tile_id), splitter)
            )
    return [{"stage": "synthetic", "config": "synthetic"} | e for e in entries]


def _tile_entry(
    tile_id: str, cluster: int, roi: str | None, failure: str | None, splitter: RoiSplitter
) -> dict[str, Any]:
    if roi is not None:
        return {
            "id": tile_id,
            "status": "kept",
            "roi_id": roi,
            "split": splitter.split_of(roi),
            "cluster": cluster,
        }
    reason = failure or f"not selected: cluster {cluster}'s share of the diversity quota was filled"
    return {"id": tile_id, "status": "rejected", "reason": reason}
