"""One GeoTIFF member (bytes) → exact pixels and georeferencing, and the checks every release row needs."""

from __future__ import annotations

import datetime as dt
import re
import warnings
from dataclasses import dataclass

import numpy as np

from sen2naip_hub.errors import InvalidImageError
from sen2naip_hub.sensors import N_BANDS, SCALE_FACTOR, reflectance_to_s2

__all__ = ["MemberRaster", "date_in", "hr_to_builder", "lr_to_builder", "read_member"]

#: The builder's LR dtype holds DN 0 … 65535 (reflectance × 10000, as
#: :func:`sen2naip_hub.sensors.reflectance_to_s2` writes it).
LR_DN_MAX: int = np.iinfo(np.uint16).max
_DATE = re.compile(r"(?<!\d)(20\d{2})(\d{2})(\d{2})(?!\d)")


@dataclass(frozen=True)
class MemberRaster:
    """A member's pixels as stored (dtype untouched), its CRS (WKT) and GDAL geotransform."""

    data: np.ndarray
    crs: str
    transform: tuple[float, ...]
    bounds: tuple[float, float, float, float]


def read_member(data: bytes, name: str) -> MemberRaster:
    """Decode GeoTIFF bytes in memory (no file on disk); a truncated or non-GeoTIFF member raises."""
    import rasterio
    from rasterio.errors import RasterioIOError
    from rasterio.io import MemoryFile

    try:
        with warnings.catch_warnings(), rasterio.Env(CPL_LOG="/dev/null"):
            warnings.simplefilter("ignore")  # the v1 lr.tif's ExtraSamples warning; it reads four bands
            with MemoryFile(data) as memory, memory.open() as src:
                pixels = src.read()
                crs = src.crs.to_wkt() if src.crs else ""
                return MemberRaster(pixels, crs, tuple(src.transform.to_gdal()), tuple(src.bounds))
    except (RasterioIOError, rasterio.errors.RasterioError) as err:
        raise InvalidImageError(f"{name}: not a readable GeoTIFF ({str(err).splitlines()[0]})") from err


def _check_bands(raster: MemberRaster, name: str) -> None:
    if raster.data.ndim != 3 or raster.data.shape[0] != N_BANDS:
        raise InvalidImageError(f"{name}: expected {N_BANDS} bands, found shape {raster.data.shape}")


def hr_to_builder(raster: MemberRaster, name: str) -> np.ndarray:
    """NAIP uint8 counts → the builder's HR: uint16 reflectance × 10000 (``rint(DN / 255 × 10000)``),
    exactly as ``sen2naip build`` stores NAIP (:func:`sen2naip_hub.sensors.reflectance_to_counts`). The
    map is one-to-one except that a count of 0 becomes DN 1, the smallest valid value, since DN 0 means
    nodata in the builder's arrays; :func:`sen2naip_hub.sensors.reflectance_to_naip` gives the member's
    pixels back (0 as 1)."""
    _check_bands(raster, name)
    if raster.data.dtype != np.uint8:
        raise InvalidImageError(f"{name}: expected NAIP uint8 counts, found {raster.data.dtype}")
    from sen2naip_hub.sensors import NAIP, counts_to_reflectance

    return reflectance_to_s2(counts_to_reflectance(raster.data, NAIP))


def lr_to_builder(raster: MemberRaster, hr_shape: tuple[int, ...], name: str) -> np.ndarray:
    """Sentinel-2 DN (any integer dtype, e.g. the v1 int32) → uint16, losslessly, or an error naming the
    values that do not fit (never wrapped); the shape must be the HR's / 4 per axis."""
    _check_bands(raster, name)
    expected = (N_BANDS, hr_shape[1] // SCALE_FACTOR, hr_shape[2] // SCALE_FACTOR)
    if raster.data.shape != expected:
        raise InvalidImageError(
            f"{name}: expected LR shape {expected} (HR / {SCALE_FACTOR}), found {raster.data.shape}"
        )
    if not np.issubdtype(raster.data.dtype, np.integer):
        raise InvalidImageError(
            f"{name}: expected integer DN (reflectance × 10000), found {raster.data.dtype}"
        )
    low, high = int(raster.data.min()), int(raster.data.max())
    if low < 0 or high > LR_DN_MAX:
        bad = int(((raster.data < 0) | (raster.data > LR_DN_MAX)).sum())
        raise InvalidImageError(
            f"{name}: {bad} DN outside the uint16 range 0-{LR_DN_MAX} (found {low} to {high}); not wrapped"
        )
    return raster.data.astype(np.uint16)


def date_in(text: str | None) -> dt.date | None:
    """The first ``YYYYMMDD`` date inside an id (``S2A_MSIL2A_20190815T…``, ``m_…_20190601``), or None."""
    match = _DATE.search(text or "")
    if match is None:
        return None
    try:
        return dt.date(*(int(g) for g in match.groups()))
    except ValueError:
        return None
