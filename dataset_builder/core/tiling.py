"""The one tiler and blank rule: world-grid HR tiles of a NAIP image, read window by window.

Both backends and the tests cut tiles through :func:`split_tiles` (one image: the kept tiles and the
blank ones with their reason) and judge them with :func:`blank_reason`. :func:`iter_tiles` is the
streaming form over many images.

Tiles follow a *world* grid (multiples of ``size`` × pixel size in the image's CRS, for north-up
images), so acquisitions of one place on different dates, whose pixel grids may be shifted by a few
metres, are cut into the same footprints (to the nearest pixel) and share their
:func:`dataset_builder.core.splits.spatial_roi_id`. Partial tiles at the edges are skipped.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from dataset_builder.core.errors import BuildError
from dataset_builder.core.facts import MIN_BAND_STD, SEN2NAIP_ROI_HR_PX, SYNTHETIC_MAX_NODATA_FRACTION
from sen2naip_hub.io import ALL_NODATA, StoredWindow, read_info, read_stored_windows
from sen2naip_hub.sensors import NAIP

__all__ = [
    "Tile",
    "band_std",
    "blank_reason",
    "grid_origins",
    "grid_rows",
    "is_blank",
    "iter_tiles",
    "read_stored_tiles",
    "read_tile",
    "read_tiles",
    "split_tiles",
    "world_grid_offset",
]

log = logging.getLogger(__name__)

#: NAIP file names end in the acquisition date, e.g. ``m_4709963_se_14_1_20090818.tif``.
_NAIP_DATE = re.compile(r"_(\d{8})$")


@dataclass(frozen=True)
class Tile:
    """One HR tile of one NAIP image: reflectance ``(4, size, size)`` and where it came from."""

    image_id: str
    row: int
    col: int
    data: np.ndarray = field(repr=False)
    crs: CRS | None
    transform: Affine

    @property
    def tile_id(self) -> str:
        """``<image_id>_r<row>_c<col>`` (pixel offsets in the source image, zero-padded)."""
        return tile_id(self.image_id, self.row, self.col)

    @property
    def date(self) -> str | None:
        """``YYYYMMDD`` when the image id ends in a NAIP acquisition date, else None."""
        match = _NAIP_DATE.search(self.image_id)
        return match.group(1) if match else None


def tile_id(image_id: str, row: int, col: int) -> str:
    """``<image_id>_r<row>_c<col>``, the id of a tile (and of its rows in the manifest)."""
    return f"{image_id}_r{row:06d}_c{col:06d}"


def blank_reason(
    data: np.ndarray,
    max_nodata_fraction: float = SYNTHETIC_MAX_NODATA_FRACTION,
    min_std: float = MIN_BAND_STD,
    *,
    valid: np.ndarray | None = None,
    scale: float = 1.0,
) -> str | None:
    """Why ``data`` is blank, or None if it is not.

    ``data`` is ``(C, H, W)`` reflectance (NaN = nodata), or a file's stored integers with ``scale``
    (reflectance per stored unit, e.g. 1/255 for NAIP) and ``valid`` (``(H, W)``, True where a pixel
    has data; None: every pixel of integers, every finite one of floats). Blank: more nodata than
    ``max_nodata_fraction`` (or none valid), or every band's standard deviation (in reflectance) below
    ``min_std`` (near-constant).

    >>> blank_reason(np.full((4, 8, 8), 0.3, dtype="float32"))
    'blank: near-constant (largest band std 0.0000 < 0.0039)'
    >>> blank_reason(np.full((4, 8, 8), 77, dtype="uint8"), scale=1 / 255)
    'blank: near-constant (largest band std 0.0000 < 0.0039)'
    """
    if valid is None and data.dtype.kind == "f":
        valid = np.isfinite(data).all(axis=0)
    nodata = 0.0 if valid is None else 1.0 - float(valid.mean())
    if nodata > max_nodata_fraction or (valid is not None and not valid.any()):
        return f"blank: nodata {nodata:.1%} > {max_nodata_fraction:.0%}"
    whole = valid is None or valid.all()
    values = data.reshape(data.shape[0], -1) if whole else data[:, valid]  # no copy when all valid
    spread = float(band_std(values).max()) * scale
    if spread < min_std:
        return f"blank: near-constant (largest band std {spread:.4f} < {min_std:.4f})"
    return None


def band_std(values: np.ndarray) -> np.ndarray:
    """Each row's population standard deviation (``values.std(axis=1)``). For 8-bit values (NAIP
    counts) from exact integer sums, Σx and Σx² (the variance ``(nΣx² − (Σx)²) / n²`` is then rounded
    once), with no float copy of the tile: the blank rule on 8-bit tiles is a worker process's largest
    cost after the read.

    >>> band_std(np.array([[0, 255, 0, 255], [7, 7, 7, 7]], dtype=np.uint8)).tolist()
    [127.5, 0.0]
    """
    if values.dtype != np.uint8 or values.shape[1] == 0:
        return values.std(axis=1)
    n = values.shape[1]
    squares = values.astype(np.uint16)
    squares *= squares  # 255² fits 16 bits
    sums = values.sum(axis=1, dtype=np.int64).tolist()
    square_sums = squares.sum(axis=1, dtype=np.int64).tolist()
    variances = [(n * q - s * s) / (n * n) for s, q in zip(sums, square_sums, strict=True)]  # exact ints
    return np.sqrt(np.array(variances, dtype=np.float64))


def is_blank(
    data: np.ndarray,
    max_nodata_fraction: float = SYNTHETIC_MAX_NODATA_FRACTION,
    min_std: float = MIN_BAND_STD,
) -> bool:
    """True if :func:`blank_reason` finds a reason.

    >>> is_blank(np.full((4, 8, 8), 0.3, dtype="float32"))
    True
    """
    return blank_reason(data, max_nodata_fraction, min_std) is not None


def world_grid_offset(transform: Affine, size: int) -> tuple[int, int]:
    """Pixel offset ``(row, col)`` of the first world-grid line inside a north-up image (else ``(0, 0)``)."""
    if transform.b != 0 or transform.d != 0 or transform.a <= 0 or transform.e >= 0:
        return 0, 0
    step_x, step_y = transform.a * size, -transform.e * size
    col = round((math.ceil(transform.c / step_x) * step_x - transform.c) / transform.a) % size
    row = round((transform.f - math.floor(transform.f / step_y) * step_y) / -transform.e) % size
    return row, col


def grid_origins(path: str | Path, size: int) -> Iterator[tuple[int, int]]:
    """Top-left ``(row, col)`` of every full world-grid tile of an image, row by row."""
    if size <= 0:
        raise BuildError(f"tile size must be positive, found {size}")
    info = read_info(path)
    row0, col0 = world_grid_offset(info.transform, size)
    for row in range(row0, info.height - size + 1, size):
        for col in range(col0, info.width - size + 1, size):
            yield row, col


def read_tile(path: Path, row: int, col: int, size: int) -> Tile | str:
    """The tile at ``(row, col)``, or the reason it is left out (all nodata, blank)."""
    return read_tiles(path, [(row, col)], size)[0]


def read_tiles(path: Path, origins: Sequence[tuple[int, int]], size: int) -> list[Tile | str]:
    """The tiles at ``origins`` of one image, read through one open file, each a :class:`Tile`
    (reflectance) or the reason it is left out (all nodata, blank), as :func:`read_stored_tiles` judges."""
    stored = read_stored_tiles(path, origins, size)
    return [
        tile
        if isinstance(tile, str)
        else Tile(path.stem, row, col, tile.to_raster(NAIP).data, tile.crs, tile.transform)
        for (row, col), tile in zip(origins, stored, strict=True)
    ]


def read_stored_tiles(path: Path, origins: Sequence[tuple[int, int]], size: int) -> list[StoredWindow | str]:
    """The tiles at ``origins`` of one image as stored (:func:`~sen2naip_hub.io.read_stored_windows`,
    one open file), each, or the reason it is left out: all nodata, or :func:`blank_reason`. 8-bit NAIP
    is judged on its stored counts (no reflectance made for a blank tile), other files on reflectance."""
    windows = [Window(col, row, size, size) for row, col in origins]
    return [_stored_or_reason(window) for window in read_stored_windows(path, windows, NAIP)]


def _stored_or_reason(window: StoredWindow) -> StoredWindow | str:
    if window.counts.dtype == np.dtype(NAIP.dtype):
        if window.valid is not None and not window.valid.any():
            return f"blank: {ALL_NODATA}"
        return blank_reason(window.counts, valid=window.valid, scale=1.0 / NAIP.dn_scale) or window
    data = window.to_raster(NAIP).data  # raises for files that are no NAIP reflectance
    if not np.isfinite(data).any():
        return f"blank: {ALL_NODATA}"
    return blank_reason(data) or window


def grid_rows(origins: Iterable[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """``origins`` grouped by row (one group per grid row, in order): the tiles one reader reads together."""
    rows: dict[int, list[tuple[int, int]]] = {}
    for row, col in origins:
        rows.setdefault(row, []).append((row, col))
    return list(rows.values())


def split_tiles(path: str | Path, size: int = SEN2NAIP_ROI_HR_PX) -> tuple[list[Tile], list[dict[str, str]]]:
    """The grid tiles of one image: the kept ones, and manifest entries (id, reason) of the blank ones."""
    path = Path(path)
    tiles, blanks = [], []
    for origins in grid_rows(grid_origins(path, size)):
        for (row, col), tile in zip(origins, read_tiles(path, origins, size), strict=True):
            if isinstance(tile, Tile):
                tiles.append(tile)
            else:
                blanks.append({"id": tile_id(path.stem, row, col), "status": "rejected", "reason": tile})
    return tiles, blanks


def iter_tiles(paths: Iterable[str | Path], size: int = SEN2NAIP_ROI_HR_PX) -> Iterator[Tile]:
    """The kept tiles of each image (:func:`split_tiles`), paths in sorted order, tiles row by row."""
    kept = dropped = 0
    for path in sorted(Path(p) for p in paths):
        tiles, blanks = split_tiles(path, size)
        kept, dropped = kept + len(tiles), dropped + len(blanks)
        yield from tiles
    log.info("tiling: kept %d tiles, dropped %d blank ones", kept, dropped)
