"""The synthetic stage's tile reads, run in worker processes (or threads): what crosses back is 8-bit.

Light on purpose (numpy and rasterio, no torch), so a worker process imports little. Each function
reads through one open file (:func:`~sen2naip_hub.io.read_stored_windows`) and returns stored values,
not reflectance: an embedding read sends 8-bit RGB (:func:`embed_row`), a degradation read 8-bit counts
and valid masks (:func:`read_hr_group`), 4× less than float32 reflectance; the degradation converts
them on its device (:func:`dataset_builder.synthetic.stage.load_degrade`). Workers in other processes
put their arrays in the build's spool folder (:mod:`dataset_builder.core.workers`) and return file
names; with ``spool=None`` (threads) arrays come back as they are.

8-bit RGB and S2 counts are made from NAIP counts through tables of the one conversion
(``reflectance_to_naip(counts_to_reflectance(c))`` for every count ``c``, nodata from NaN), so they
equal the conversion of the tile's reflectance value for value.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.windows import Window

from dataset_builder.core.tiling import read_stored_tiles, tile_id
from dataset_builder.core.workers import put
from sen2naip_hub.io import StoredWindow, read_stored_windows
from sen2naip_hub.sensors import NAIP, counts_to_reflectance, reflectance_to_naip, reflectance_to_s2

__all__ = [
    "NAIP_REFLECTANCE",
    "READ_GROUP",
    "embed_row",
    "hr_groups",
    "read_hr_group",
    "read_hr_s2",
    "rgb_counts",
    "stored_rgb",
    "stored_s2",
]

#: Tiles of one image one worker reads through one open file, at most (more files in parallel).
READ_GROUP: int = 16
_NAIP_DTYPE = np.dtype(NAIP.dtype)
_NAIP_COUNTS = np.arange(np.iinfo(_NAIP_DTYPE).max + 1, dtype=_NAIP_DTYPE)
#: The reflectance of each 8-bit NAIP count (``counts_to_reflectance``): the table every conversion of
#: counts here and on the device (:func:`dataset_builder.synthetic.stage.counts_on_device`) looks up.
NAIP_REFLECTANCE: np.ndarray = counts_to_reflectance(_NAIP_COUNTS, NAIP)
#: ``reflectance_to_naip`` / ``reflectance_to_s2`` of each NAIP count's reflectance, and of NaN (nodata).
_RGB_TABLE = reflectance_to_naip(NAIP_REFLECTANCE)
_S2_TABLE = reflectance_to_s2(NAIP_REFLECTANCE)
_NODATA = np.array([np.nan], dtype=np.float32)
_RGB_NODATA, _S2_NODATA = reflectance_to_naip(_NODATA)[0], reflectance_to_s2(_NODATA)[0]


def rgb_counts(rgb: np.ndarray) -> np.ndarray:
    """``(..., 3, H, W)`` RGB: uint8 as is, float reflectance → NAIP uint8 (NaN → 0) by the one DN rule."""
    return rgb if rgb.dtype == np.uint8 else reflectance_to_naip(rgb)


def _through_table(window: StoredWindow, bands: slice, table: np.ndarray, nodata: Any) -> np.ndarray:
    values = np.take(table, window.counts[bands])
    if window.valid is not None:
        values[:, ~window.valid] = nodata
    return values


def stored_rgb(window: StoredWindow) -> np.ndarray:
    """8-bit RGB ``(3, H, W)`` of a stored NAIP tile: ``reflectance_to_naip`` of its reflectance."""
    if window.counts.dtype != _NAIP_DTYPE:
        return reflectance_to_naip(window.to_raster(NAIP).data[:3])
    return _through_table(window, slice(0, 3), _RGB_TABLE, _RGB_NODATA)


def stored_s2(window: StoredWindow) -> np.ndarray:
    """The shard's uint16 HR ``(4, H, W)`` of a stored NAIP tile: ``reflectance_to_s2`` of its reflectance."""
    if window.counts.dtype != _NAIP_DTYPE:
        return reflectance_to_s2(window.to_raster(NAIP).data)
    return _through_table(window, slice(None), _S2_TABLE, _S2_NODATA)


def embed_row(
    path: str, origins: Sequence[tuple[int, int]], size: int, spool: str | None = None
) -> tuple[list[list], list[dict[str, str]], np.ndarray | str]:
    """Tiles of one image (a grid row) for CLIP: ``[id, row, col]`` of the kept ones, manifest entries
    of the blank ones (:func:`~dataset_builder.core.tiling.read_stored_tiles`), and the kept tiles'
    8-bit RGB ``(N, 3, size, size)`` (:func:`~dataset_builder.core.workers.put` into ``spool``)."""
    stem = Path(path).stem
    kept, blanks, rgb = [], [], []
    for (row, col), tile in zip(origins, read_stored_tiles(Path(path), origins, size), strict=True):
        if isinstance(tile, str):
            blanks.append({"id": tile_id(stem, row, col), "status": "rejected", "reason": tile})
        else:
            kept.append([tile_id(stem, row, col), row, col])
            rgb.append(stored_rgb(tile))
    stacked = np.stack(rgb) if rgb else np.zeros((0, 3, size, size), dtype=np.uint8)
    return kept, blanks, put(stacked, spool)


def hr_groups(tiles: Sequence[dict[str, Any]]) -> list[list[int]]:
    """Indexes of ``tiles`` (each with a ``path``) grouped by image, :data:`READ_GROUP` at most a group."""
    order: dict[str, list[int]] = {}
    for index, tile in enumerate(tiles):
        order.setdefault(tile["path"], []).append(index)
    return [ix[i : i + READ_GROUP] for ix in order.values() for i in range(0, len(ix), READ_GROUP)]


def _windows(tiles: Sequence[dict[str, Any]], size: int) -> list[Window]:
    return [Window(tile["col"], tile["row"], size, size) for tile in tiles]


def read_hr_group(
    tiles: Sequence[dict[str, Any]], size: int, spool: str | None = None
) -> tuple[np.ndarray | str, np.ndarray | str | None, list[tuple]]:
    """HR windows of selected tiles of one image (``path``, ``row``, ``col``): 8-bit counts
    ``(N, 4, size, size)``, valid pixels ``(N, size, size)`` (None when every pixel is valid; both
    :func:`put` into ``spool``) and each tile's ``(crs, transform)``. A file of other than 8-bit values
    gives float32 reflectance (nodata NaN) in place of the counts."""
    stored = read_stored_windows(tiles[0]["path"], _windows(tiles, size), NAIP)
    geometry = [(w.crs, w.transform) for w in stored]
    valid = None
    if any(w.valid is not None for w in stored):
        valid = put(
            np.stack([np.ones((size, size), bool) if w.valid is None else w.valid for w in stored]), spool
        )
    if all(w.counts.dtype == _NAIP_DTYPE for w in stored):
        values = np.stack([w.counts for w in stored])
    else:
        values = np.stack([w.to_raster(NAIP).data for w in stored])
    return put(values, spool), valid, geometry


def read_hr_s2(tiles: Sequence[dict[str, Any]], size: int) -> list[np.ndarray]:
    """The HR of selected tiles (``path``, ``row``, ``col``) as the shards store it (:func:`stored_s2`),
    in order, each image's tiles through one open file."""
    hr: list[np.ndarray | None] = [None] * len(tiles)
    for group in hr_groups(tiles):
        stored = read_stored_windows(tiles[group[0]]["path"], _windows([tiles[i] for i in group], size), NAIP)
        for index, window in zip(group, stored, strict=True):
            hr[index] = stored_s2(window)
    return hr
