"""STAC API items → local GeoTIFFs of the configured area: the windows read once and kept as the cache.

For each searched item, only the window of ``sources.bbox`` is read over HTTP (:mod:`.cog`):

* **NAIP** (one 4-band asset, NAD83 / UTM, 0.6 or 1.0 m): resampled on its own CRS to the HR pixel
  size the ROI grid needs (``cross_sensor.hr_resolution_m``, 2.5 m) by ``sources.hr_resampling``
  (area averaging by default); a NAIP item coarser than that is rejected (never upsampled);
* **Sentinel-2 L2A** (one asset per band, WGS84 / UTM, 10 m): the bands' window on their native grid,
  scaled to reflectance with each item's own ``raster:bands`` scale and offset (:mod:`.l2a`, so
  baselines 02.14 and 05.00 agree), written as DN = reflectance × 10000; the SCL asset's window,
  nearest-neighbour on the same grid, beside it as ``<item>.scl.tif``.

The files land in the work folder under atomic names; a resumed build finds them and reads nothing
again. An item whose asset cannot be read is an error naming the asset, which the sources stage lists
in the manifest; it does not stop the build. The cross-sensor stage then reprojects the Sentinel-2
onto the NAIP's grid (one grid per ROI).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import transform_bounds

from dataset_builder.sources.cog import (
    AssetHeader,
    Grid,
    HttpSettings,
    read_header,
    read_window,
    read_windows,
)
from dataset_builder.sources.l2a import band_scaling, to_reflectance
from dataset_builder.sources.stac_catalog import item_crs
from sen2naip_hub.errors import InvalidImageError, UnreadableFileError
from sen2naip_hub.files import atomic_file
from sen2naip_hub.io import Raster, write_raster
from sen2naip_hub.sensors import NAIP, SENTINEL2, counts_to_reflectance

__all__ = ["NaipRequest", "S2Request", "fetch_naip", "fetch_s2", "local_name", "scl_path"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def local_name(item_id: str) -> str:
    """A file name for an item id (characters other than letters, digits, ``._-`` become ``_``).

    >>> local_name("S2A_14TNT_20190904_0_L2A")
    'S2A_14TNT_20190904_0_L2A.tif'
    """
    return _UNSAFE.sub("_", item_id) + ".tif"


def scl_path(path: Path) -> Path:
    """The SCL file beside a Sentinel-2 file: ``<stem>.scl.tif``."""
    return path.with_name(path.stem + ".scl.tif")


@dataclass(frozen=True)
class NaipRequest:
    """NAIP: the asset key, the WGS84 bbox, the HR pixel size (None: native) and its resampling."""

    asset: str
    bbox: Sequence[float]
    resolution_m: float | None
    resampling: str = "average"


@dataclass(frozen=True)
class S2Request:
    """Sentinel-2: band → asset key (B04, B03, B02, B08), the SCL asset key, the WGS84 bbox."""

    bands: Mapping[str, str]
    scl: str | None
    bbox: Sequence[float]


def _asset(item: pystac.Item, key: str) -> pystac.Asset:
    if key not in item.assets:
        raise InvalidImageError(f"STAC item {item.id}: no asset {key!r}; it has {sorted(item.assets)}")
    return item.assets[key]


def _window_grid(header: AssetHeader, bbox: Sequence[float], resolution: float) -> Grid:
    """The grid of ``bbox`` ∩ the asset at ``resolution``, its origin on the asset's pixel corners."""
    crs = header.crs
    if crs is None:
        raise InvalidImageError("asset has no CRS")
    west, south, east, north = transform_bounds(CRS.from_epsg(4326), crs, *bbox)
    left, top = header.transform.c, header.transform.f
    right = left + header.width * header.transform.a
    bottom = top + header.height * header.transform.e
    west, east = max(west, min(left, right)), min(east, max(left, right))
    south, north = max(south, min(top, bottom)), min(north, max(top, bottom))
    if west >= east or south >= north:
        raise InvalidImageError("the asset does not overlap sources.bbox")
    x0 = left + math.floor((west - left) / resolution) * resolution
    y0 = top - math.floor((top - north) / resolution) * resolution
    width = math.floor((east - x0) / resolution)
    height = math.floor((y0 - south) / resolution)
    if width < 1 or height < 1:
        raise InvalidImageError("the window of sources.bbox is under one pixel")
    return Grid(crs, Affine(resolution, 0, x0, 0, -resolution, y0), (height, width))


def fetch_naip(
    item: pystac.Item,
    request: NaipRequest,
    out: Path,
    settings: HttpSettings = HttpSettings(),  # noqa: B008
) -> dict[str, Any]:
    """Write the NAIP window of ``item`` to ``out``; returns its manifest facts.

    Raises:
        UnreadableFileError: the asset cannot be read (after retries).
        InvalidImageError: no such asset, not 4 bands, outside the bbox, coarser than the HR pixel size.
    """
    href = _asset(item, request.asset).get_absolute_href()
    header = read_header(href, settings)
    if header.count < len(NAIP.all_bands):
        raise InvalidImageError(
            f"asset {request.asset}: {header.count} bands, expected {len(NAIP.all_bands)}"
        )
    native = header.resolution
    target = native if request.resolution_m is None else request.resolution_m
    if native > target * (1 + 1e-6):
        raise InvalidImageError(f"NAIP pixel {native:g} m is coarser than the {target:g} m HR grid")
    facts = {
        "native_resolution_m": round(native, 6),
        "resolution_m": target,
        "resampling": request.resampling,
    }
    grid = _window_grid(header, request.bbox, target)
    resampling = Resampling[request.resampling] if native != target else Resampling.nearest
    counts = read_window(href, grid, (1, 2, 3, 4), resampling, "uint8", settings)
    data = np.where(counts == NAIP.nodata, np.nan, counts_to_reflectance(counts, NAIP)).astype(np.float32)
    data[:, ~np.isfinite(data).all(axis=0)] = np.nan
    write_raster(out, Raster(data, grid.crs, grid.transform, NAIP.all_bands), NAIP)
    return facts


def _write_scl(path: Path, scl: np.ndarray, grid: Grid) -> None:
    profile = {
        "driver": "GTiff",
        "count": 1,
        "height": grid.shape[0],
        "width": grid.shape[1],
        "dtype": "uint8",
        "crs": grid.crs,
        "transform": grid.transform,
        "compress": "deflate",
    }
    with atomic_file(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(scl.astype(np.uint8), 1)
        dst.set_band_description(1, "SCL")


def fetch_s2(
    item: pystac.Item,
    request: S2Request,
    out: Path,
    settings: HttpSettings = HttpSettings(),  # noqa: B008
) -> dict[str, Any]:
    """Write the Sentinel-2 window of ``item`` (and its SCL) beside ``out``; returns its manifest facts.

    Raises:
        UnreadableFileError: an asset cannot be read (after retries); the message names it.
        InvalidImageError: a missing asset, or the item does not overlap the bbox.
    """
    keys = [request.bands[band] for band in SENTINEL2.all_bands]
    assets = {key: _asset(item, key) for key in [*keys, *([request.scl] if request.scl else [])]}
    scalings = {
        b: band_scaling(assets[request.bands[b]].to_dict(), item.properties) for b in SENTINEL2.all_bands
    }
    facts = {
        "scl": str(scl_path(out)) if request.scl else None,
        "offsets": {b: s.offset for b, s in scalings.items()},
    }
    first = assets[keys[0]].get_absolute_href()
    header = read_header(first, settings)
    grid = _window_grid(header, request.bbox, header.resolution)
    if header.crs is None and item_crs(item.properties) is not None:
        grid = Grid(item_crs(item.properties), grid.transform, grid.shape)
    jobs = [(assets[key].get_absolute_href(), grid, (1,), Resampling.nearest) for key in assets]
    results = read_windows(jobs, "uint16", settings)
    for key, result in zip(assets, results, strict=True):
        if isinstance(result, UnreadableFileError):
            raise UnreadableFileError(f"asset {key}: {result}") from result
    bands = [to_reflectance(results[i][0], scalings[b]) for i, b in enumerate(SENTINEL2.all_bands)]
    if request.scl:
        _write_scl(scl_path(out), results[-1][0], grid)
    data = np.clip(np.stack(bands), 1.0 / SENTINEL2.dn_scale, None)
    write_raster(out, Raster(data, grid.crs, grid.transform, SENTINEL2.all_bands), SENTINEL2)
    return facts
