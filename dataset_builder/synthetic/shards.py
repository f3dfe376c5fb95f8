"""The synthetic config's parquet shards, planned before degradation and written while it runs.

Every selected tile's spatial ROI id, hence its split, follows from its image's grid alone (CRS and
geotransform, :func:`sen2naip_hub.io.read_info`), and every row has the same size, so the shards of each
split are known once the selection is: the selected tiles of a split, in selection order, cut by
:func:`dataset_builder.write.shards.shard_ranges`. :func:`plan_shards` makes one task per shard
(``write/synthetic/<split>-NNNNN.parquet``, in the ``write`` stage's folder, so a change of shard limits
restarts only the writing), naming the degradation checkpoints it ``needs``;
:class:`dataset_builder.write.pipeline.DependentTasks` starts each shard as soon as those exist, on one
of the build's offload processes when it has worker processes (:func:`write_planned_shard`; as many
shards at once as there are processes).
:func:`write_synthetic_shard` takes the rows' LR and fields from the degradation checkpoints and reads
each HR window again (the same bytes the degradation read) as the shard's uint16
(:func:`dataset_builder.synthetic.reads.read_hr_s2`).

A tile of a rejected degradation batch has no row: its shard is written without it (a shard left with
no row is not written at all, so a split's shard numbers may then have a gap).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from dataset_builder.core.checkpoints import Checkpoints
from dataset_builder.core.config import BuildConfig
from dataset_builder.core.plan import Step, Task
from dataset_builder.core.splits import RoiSplitter, spatial_roi_id
from dataset_builder.synthetic.reads import read_hr_s2
from dataset_builder.write.shards import ShardLimits, shard_name, shard_ranges, write_shard
from sen2naip_hub.io import read_info
from sen2naip_hub.sensors import N_BANDS, SCALE_FACTOR

if TYPE_CHECKING:  # not imported: shard-writing worker processes need no torch
    from dataset_builder.core.context import BuildContext

__all__ = ["SHARD_FOLDER", "plan_shards", "row_bytes", "write_planned_shard", "write_synthetic_shard"]

#: Where the synthetic shards are written as they are ready (inside the work folder).
SHARD_FOLDER: str = "write/synthetic"
#: Bytes of one uint16 value.
_UINT16_BYTES: int = 2


def row_bytes(tile_size: int) -> int:
    """Array bytes of one synthetic row: uint16 HR ``(4, size, size)`` + LR ``(4, size/4, size/4)``."""
    return N_BANDS * _UINT16_BYTES * (tile_size**2 + (tile_size // SCALE_FACTOR) ** 2)


def shard_limits(config: BuildConfig) -> ShardLimits:
    """The shard limits of the config's ``write`` section."""
    return ShardLimits(max_rows=config.write.max_shard_rows, max_bytes=config.write.max_shard_bytes)


def _rois(selected: list[dict[str, Any]], size: int) -> list[str]:
    """The spatial ROI id of every selected tile, from its image's CRS and geotransform."""
    grids = {}
    rois = []
    for tile in selected:
        if tile["path"] not in grids:
            info = read_info(tile["path"])
            grids[tile["path"]] = (info.crs.to_wkt(), info.transform)
        crs, transform = grids[tile["path"]]
        window = window_transform(Window(tile["col"], tile["row"], size, size), transform)
        rois.append(spatial_roi_id(crs, window, size, size))
    return rois


def plan_shards(
    config: BuildConfig, selected: list[dict[str, Any]], degrade: Step, splitter: RoiSplitter
) -> Step:
    """One task per shard of the synthetic config (see the module docstring)."""
    size, batch = config.synthetic.tile_size, config.batch_size
    rows: dict[str, list[list]] = {}
    for index, (tile, roi) in enumerate(zip(selected, _rois(selected, size), strict=True)):
        where = [degrade.tasks[index // batch].name, index % batch, tile]
        rows.setdefault(splitter.split_of(roi), []).append(where)
    tasks = []
    for split in splitter.names:
        chosen = rows.get(split, [])
        for index, (start, stop) in enumerate(
            shard_ranges([row_bytes(size)] * len(chosen), shard_limits(config))
        ):
            part = chosen[start:stop]
            args = {"split": split, "index": index, "rows": part, "needs": sorted({r[0] for r in part})}
            tasks.append(
                Task(f"{SHARD_FOLDER}/{shard_name(split, index)}", f"{__name__}:write_synthetic_shard", args)
            )
    return Step("synthetic: write shards", tuple(tasks))


def write_planned_shard(
    task: Task, store: Checkpoints, config: BuildConfig, context: BuildContext
) -> Path | None:
    """:func:`write_synthetic_shard` in one of the build's offload processes (or here, without worker
    processes: :meth:`~dataset_builder.core.context.BuildContext.offload`)."""
    return context.offload(write_synthetic_shard, task, store, config)


def write_synthetic_shard(task: Task, store: Checkpoints, config: BuildConfig) -> Path | None:
    """Write one planned shard into the work folder (None when every one of its rows was rejected)."""
    size, batches, records, tiles = config.synthetic.tile_size, {}, [], []
    for batch, position, tile in task.args["rows"]:
        if batch not in batches:
            batches[batch] = None if store.rejection(batch) else store.load_records(batch)[0]
        if batches[batch] is not None:
            records.append(batches[batch][position])
            tiles.append(tile)
    if not records:
        return None
    hr = read_hr_s2(tiles, size)
    records = [dataclasses.replace(r, hr=h) for r, h in zip(records, hr, strict=True)]
    folder = store.path(task.name).parent
    return write_shard(records, folder, task.args["split"], task.args["index"], shard_limits(config))
