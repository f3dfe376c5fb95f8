"""The HR grid: SEN2NAIP's degradation was learned on 2.5 m NAIP, so an input of another pixel size is
brought to 2.5 m first (finer: area averaging) or refused (coarser: unless the caller allows it).

>>> from affine import Affine
>>> hr_grid(Affine(0.6, 0, 500, 0, -0.6, 900), 500, 400, 2.5)
(Affine(2.5, 0.0, 500.0,
       0.0, -2.5, 900.0), 120, 96)
"""

from __future__ import annotations

import math

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import Resampling, reproject

from sen2naip_hub.errors import InvalidImageError
from sen2naip_hub.io import Raster
from sen2naip_hub.sensors import NAIP, SCALE_FACTOR

__all__ = [
    "HR_RESOLUTION_M",
    "RESOLUTION_TOLERANCE",
    "area_average",
    "conform_resolution",
    "hr_grid",
    "pixel_size_m",
    "resampled_grid",
    "resolution_plan",
    "to_resolution",
]

#: The HR pixel size the degradation expects: SEN2NAIP's NAIP, resampled to 2.5 m (×4 → 10 m Sentinel-2).
HR_RESOLUTION_M: float = NAIP.resolution_m
#: Relative difference below which two pixel sizes count as equal (GeoTIFF transforms carry rounding).
RESOLUTION_TOLERANCE: float = 1e-3


def pixel_size_m(crs: CRS | None, transform: Affine) -> float | None:
    """The pixel size in metres of a north-up grid in a projected CRS with metre units; None when it
    cannot be known in metres (no CRS, geographic degrees, other units).

    Raises:
        InvalidImageError: rotated or non-square pixels (this pipeline works on square, north-up grids).
    """
    if crs is None or not crs.is_projected:
        return None
    factor = crs.linear_units_factor[1] if crs.linear_units_factor else None
    if not factor:
        return None
    if transform.b or transform.d:
        raise InvalidImageError(f"rotated grid (transform {tuple(transform)[:6]}): expected a north-up image")
    width, height = abs(transform.a) * factor, abs(transform.e) * factor
    if not math.isclose(width, height, rel_tol=RESOLUTION_TOLERANCE):
        raise InvalidImageError(f"pixels of {width:g} × {height:g} m: expected square pixels")
    return width


def hr_grid(transform: Affine, height: int, width: int, target_m: float) -> tuple[Affine, int, int]:
    """The grid of ``target_m`` pixels (in the CRS's units) with the same origin, covering the whole
    pixels of ``target_m`` that fit inside the image: ``(transform, height, width)``."""
    step_x, step_y = abs(transform.a), abs(transform.e)
    out_width = math.floor(width * step_x / target_m + RESOLUTION_TOLERANCE)
    out_height = math.floor(height * step_y / target_m + RESOLUTION_TOLERANCE)
    sign_x, sign_y = math.copysign(1, transform.a), math.copysign(1, transform.e)
    grid = Affine(sign_x * target_m, 0.0, transform.c, 0.0, sign_y * target_m, transform.f)
    return grid, out_height, out_width


def to_resolution(raster: Raster, source_m: float, target_m: float) -> Raster:
    """Area-average ``raster`` (pixels of ``source_m`` metres) onto ``target_m`` metre pixels; an output
    pixel is nodata when any nodata source pixel overlaps it."""
    if target_m < source_m * (1 - RESOLUTION_TOLERANCE):
        raise InvalidImageError(f"cannot area-average {source_m:g} m pixels to finer {target_m:g} m pixels")
    grid, height, width = resampled_grid(raster.transform, *raster.data.shape[1:], source_m, target_m)
    return raster.with_data(area_average(raster, grid, height, width), transform=grid)


def resampled_grid(
    transform: Affine, height: int, width: int, source_m: float, target_m: float
) -> tuple[Affine, int, int]:
    """:func:`hr_grid` of ``target_m`` metre pixels for an image of ``source_m`` metre pixels.

    Raises:
        InvalidImageError: the image is smaller than one ``target_m`` pixel.
    """
    units = target_m / source_m * abs(transform.a)  # target size in the CRS's units
    grid, out_height, out_width = hr_grid(transform, height, width, units)
    if min(out_height, out_width) < 1:
        raise InvalidImageError(
            f"image of {height}×{width} px at {source_m:g} m is smaller than one {target_m:g} m pixel"
        )
    return grid, out_height, out_width


def area_average(raster: Raster, grid: Affine, height: int, width: int) -> np.ndarray:
    """``raster`` area-averaged onto the ``height`` × ``width`` pixels of ``grid`` (coarser, same CRS):
    ``(C, height, width)`` float32 in [0, 1], NaN where a nodata source pixel overlaps the output pixel
    or the source does not cover it entirely. A window of the output grid equals the same window of
    the whole image's average when ``raster`` covers the window's footprint (the streamed degradation
    reads each window's source pixels with a margin)."""
    valid = raster.valid.astype(np.float32)
    filled = np.where(valid.astype(bool), raster.data, 0.0).astype(np.float32)
    stack = np.concatenate([filled, valid[None]])
    out = np.zeros((stack.shape[0], height, width), np.float32)
    reproject(
        stack,
        out,
        src_transform=raster.transform,
        dst_transform=grid,
        src_crs=raster.crs,
        dst_crs=raster.crs,
        resampling=Resampling.average,
    )
    data, coverage = out[:-1], out[-1]
    data[:, coverage < 1 - RESOLUTION_TOLERANCE] = np.nan
    return np.clip(data, 0.0, 1.0)


def resolution_plan(
    crs: CRS | None,
    transform: Affine,
    name: str,
    target_m: float = HR_RESOLUTION_M,
    allow_coarse: bool = False,
) -> tuple[float | None, str | None]:
    """What to do with a grid of ``transform`` to get ``target_m`` metre pixels: the source pixel size
    to area-average from (None: use the grid as it is) and a line saying what is done (None: nothing).

    Finer pixels are area-averaged; coarser ones are refused unless ``allow_coarse`` (then degraded as
    they are, into ``SCALE_FACTOR`` times larger pixels); a grid whose pixel size is unknown in metres
    (no CRS, degrees) is taken to be ``target_m`` already.

    Raises:
        InvalidImageError: coarser pixels without ``allow_coarse``; rotated or non-square pixels.
    """
    source = pixel_size_m(crs, transform)
    if source is None or math.isclose(source, target_m, rel_tol=RESOLUTION_TOLERANCE):
        return None, None
    if source < target_m:
        return source, f"{name}: {source:g} m pixels resampled to {target_m:g} m by area averaging"
    if not allow_coarse:
        raise InvalidImageError(
            f"{name}: pixels of {source:g} m are coarser than the {target_m:g} m the degradation expects; "
            f"pass --allow-coarse to degrade them as they are (into {SCALE_FACTOR * source:g} m pixels)"
        )
    return (
        None,
        f"{name}: {source:g} m pixels degraded as they are: output pixels of {SCALE_FACTOR * source:g} m",
    )


def conform_resolution(
    raster: Raster, name: str, target_m: float = HR_RESOLUTION_M, allow_coarse: bool = False
) -> tuple[Raster, str | None]:
    """Bring ``raster`` to ``target_m`` metre pixels as :func:`resolution_plan` decides (finer pixels
    area-averaged by :func:`to_resolution`); returns it and a line saying what was done."""
    source, note = resolution_plan(raster.crs, raster.transform, name, target_m, allow_coarse)
    if source is None:
        return raster, note
    return to_resolution(raster, source, target_m), note
