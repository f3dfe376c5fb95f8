"""GeoTIFF input and output: the one place where stored integers become reflectance and back.

Reading returns a :class:`Raster`: float32 reflectance ``(C, H, W)`` in [0, 1], NaN where the file
says nodata, with its CRS, affine transform and band names. Writing takes reflectance, converts it to
the sensor's integers, and writes a Cloud-Optimized GeoTIFF atomically (a temporary name, then a
rename), so a failed write never leaves a partial file behind.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import MaskFlags
from rasterio.errors import NodataShadowWarning, NotGeoreferencedWarning, RasterioError
from rasterio.io import MemoryFile
from rasterio.windows import Window

from sen2naip_hub.errors import AllNodataError, InvalidImageError, UnreadableFileError
from sen2naip_hub.files import atomic_file
from sen2naip_hub.sensors import (
    N_BANDS,
    NAIP,
    SCALE_FACTOR,
    SENTINEL2,
    Sensor,
    counts_to_reflectance,
    reflectance_to_counts,
    validate_reflectance,
)

__all__ = [
    "ALL_NODATA",
    "Raster",
    "RasterInfo",
    "StoredWindow",
    "lr_transform",
    "read_info",
    "read_raster",
    "read_stored_windows",
    "read_windows",
    "stored_counts",
    "write_raster",
]


#: Why a window or image with no valid pixel is refused (the message of its AllNodataError).
ALL_NODATA: str = "every pixel is nodata"


@dataclass(frozen=True)
class RasterInfo:
    """What a GeoTIFF holds, read from its header only."""

    path: str
    count: int
    height: int
    width: int
    dtype: str
    crs: CRS | None
    transform: Affine
    nodata: float | None
    band_names: tuple[str | None, ...]


@dataclass(frozen=True)
class Raster:
    """Reflectance ``(C, H, W)`` float32 in [0, 1] (NaN = nodata) with its georeferencing."""

    data: np.ndarray
    crs: CRS | None
    transform: Affine
    band_names: tuple[str, ...]

    @property
    def valid(self) -> np.ndarray:
        """``(H, W)`` bool: True where every band has a value."""
        return np.isfinite(self.data).all(axis=0)

    def with_data(self, data: np.ndarray, transform: Affine | None = None, band_names=None) -> Raster:
        """A copy holding other pixels (and optionally another transform or band names)."""
        return replace(
            self,
            data=data,
            transform=self.transform if transform is None else transform,
            band_names=self.band_names if band_names is None else tuple(band_names),
        )


@dataclass(frozen=True)
class StoredWindow:
    """One window as its file stores it, before conversion: the stored values ``(C, H, W)`` (integers, or
    floats for float files) and ``valid``, ``(H, W)`` True where a pixel has data (None: every pixel has).

    :meth:`to_raster` is the one conversion to reflectance (what :func:`read_windows` returns). Readers
    in other processes send this, 4× smaller than reflectance for 8-bit NAIP.
    """

    counts: np.ndarray
    valid: np.ndarray | None
    crs: CRS | None
    transform: Affine
    band_names: tuple[str, ...]
    path: str

    def to_raster(self, sensor: Sensor = NAIP, scale: float | None = None) -> Raster:
        """Reflectance, nodata NaN (see :func:`read_raster` for ``sensor`` and ``scale``)."""
        counts = self.counts
        if self.valid is not None and counts.dtype.kind == "f":
            counts = counts.copy()
            counts[:, ~self.valid] = np.nan  # a float nodata value such as -9999 is no reflectance to check
        data = _to_reflectance(counts, sensor, self.path, scale)
        if self.valid is not None:
            data[:, ~self.valid] = np.nan
        return Raster(data=data, crs=self.crs, transform=self.transform, band_names=self.band_names)


def lr_transform(hr_transform: Affine, scale: int = SCALE_FACTOR) -> Affine:
    """The LR grid's transform: same origin and bounds, pixels ``scale`` times larger.

    >>> lr_transform(Affine(2.5, 0, 100, 0, -2.5, 200))
    Affine(10.0, 0.0, 100.0,
           0.0, -10.0, 200.0)
    """
    return hr_transform @ Affine.scale(scale)


@contextmanager
def _quiet_rasterio_context() -> Iterator[None]:
    """Silence rasterio's warnings about files without georeferencing or with nodata beside alpha: such
    a raster is still read as it is (no CRS stays no CRS; nodata wins over alpha)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        warnings.simplefilter("ignore", NodataShadowWarning)
        yield


def read_info(path: str | os.PathLike) -> RasterInfo:
    """Read a GeoTIFF's header, raising :class:`UnreadableFileError` for anything that is not one."""
    with _quiet_rasterio_context():
        return _read_info(str(path))


def _read_info(path: str) -> RasterInfo:
    if not os.path.exists(path):
        raise UnreadableFileError(f"{path}: no such file")
    try:
        with rasterio.open(path) as src:
            if src.driver != "GTiff":
                raise UnreadableFileError(f"{path}: expected a GeoTIFF, found a {src.driver} file")
            return RasterInfo(
                path=path,
                count=src.count,
                height=src.height,
                width=src.width,
                dtype=src.dtypes[0],
                crs=src.crs,
                transform=src.transform,
                nodata=src.nodata,
                band_names=tuple(src.descriptions),
            )
    except RasterioError as err:
        raise UnreadableFileError(f"{path}: not a readable GeoTIFF ({_first_line(err)})") from err


def read_raster(
    path: str | os.PathLike,
    sensor: Sensor = NAIP,
    window: Window | None = None,
    nodata: float | None = None,
    bands: Sequence[int] | None = None,
    scale: float | None = None,
) -> Raster:
    """Read a 4-band image of ``sensor`` as reflectance.

    Integer files are divided by the sensor's scale (NAIP /255, Sentinel-2 /10000); float files must
    already be reflectance in [0, 1]. Nodata becomes NaN; it comes only from, in this order: ``nodata``
    (a stored value: pixels holding it in every band), the file's nodata tag (same rule), or its
    internal per-dataset mask. An alpha band is never a mask: the 4th band is NIR, even in a TIFF whose
    ExtraSamples tag calls it alpha (with RGB photometric), where GDAL would mask every NIR = 0 pixel.

    ``bands`` (1-based) picks the file's bands that are the sensor's (e.g. R, G, B, NIR) in order, for
    files of other band layouts; ``scale`` replaces the sensor's DN → reflectance factor
    (reflectance = DN × ``scale``) for other sensors' integers, whatever their width.

    Raises:
        UnreadableFileError: missing, non-TIFF, corrupt or truncated file.
        InvalidImageError: not 4 bands (or bad ``bands``), reflectance outside [0, 1], ``nodata`` not
            representable in the file's dtype, or no valid pixel.
    """
    (raster,) = read_windows(path, [window], sensor, nodata, bands, scale)
    if not np.isfinite(raster.data).any():
        raise AllNodataError(f"{path}: {ALL_NODATA}")
    return raster


def read_windows(
    path: str | os.PathLike,
    windows: Sequence[Window | None],
    sensor: Sensor = NAIP,
    nodata: float | None = None,
    bands: Sequence[int] | None = None,
    scale: float | None = None,
) -> list[Raster]:
    """Several windows of one image, each read as :func:`read_raster` reads one, through one open file.

    Opening a GeoTIFF costs more Python (hence GIL) time than reading a tile's window from it: readers
    of many tiles of one image (the builder's tilers) should ask for them together. A window
    without a valid pixel comes back all NaN (where :func:`read_raster` raises
    :class:`~sen2naip_hub.errors.AllNodataError`). Raises what :func:`read_raster` raises otherwise.
    """
    stored = read_stored_windows(path, windows, sensor, nodata, bands)
    return [window.to_raster(sensor, scale) for window in stored]


def read_stored_windows(
    path: str | os.PathLike,
    windows: Sequence[Window | None],
    sensor: Sensor = NAIP,
    nodata: float | None = None,
    bands: Sequence[int] | None = None,
) -> list[StoredWindow]:
    """Several windows of one image as stored (:class:`StoredWindow`: values and valid pixels), through
    one open file; :func:`read_windows` is this followed by :meth:`StoredWindow.to_raster`.

    Raises:
        InvalidImageError: not 4 bands (or bad ``bands``), ``nodata`` not a value of the file's dtype.
        UnreadableFileError: the file cannot be opened or a window cannot be decoded.
    """
    info = read_info(path)
    indexes = _band_indexes(info, sensor, bands)
    if nodata is not None:
        _check_nodata_fits(nodata, info)
    found = tuple(info.band_names[i - 1] for i in indexes)
    names = tuple(name or default for name, default in zip(found, sensor.all_bands, strict=True))
    nodata = info.nodata if nodata is None else nodata
    stored = []
    try:
        with _quiet_rasterio_context(), rasterio.open(info.path) as src:
            for window in windows:
                counts = src.read(indexes, window=window)
                transform = (
                    info.transform if window is None else rasterio.windows.transform(window, info.transform)
                )
                valid = _valid_pixels(src, counts, window, nodata)
                stored.append(StoredWindow(counts, valid, info.crs, transform, names, info.path))
    except RasterioError as err:
        raise UnreadableFileError(f"{info.path}: corrupt or truncated ({_first_line(err)})") from err
    return stored


def _valid_pixels(src, counts: np.ndarray, window: Window | None, nodata: float | None) -> np.ndarray | None:
    """``(H, W)`` True where a pixel has data, or None when all have: pixels equal to ``nodata`` in every
    band are nodata; without ``nodata``, the internal per-dataset mask (not an alpha band) decides."""
    if nodata is not None:
        missing = np.isnan(counts) if np.isnan(nodata) else counts == counts.dtype.type(nodata)
        valid = ~missing.all(axis=0)
    else:
        flags = src.mask_flag_enums[0]
        if MaskFlags.per_dataset not in flags or MaskFlags.alpha in flags:
            return None
        valid = src.dataset_mask(window=window) > 0
    return None if valid.all() else valid


def _check_nodata_fits(nodata: float, info: RasterInfo) -> None:
    """Raise unless ``nodata`` is a value ``info``'s dtype can hold (an integer in range for integers)."""
    dtype = np.dtype(info.dtype)
    if dtype.kind not in "ui":
        return
    limits = np.iinfo(dtype)
    if np.isnan(nodata) or nodata != int(nodata) or not limits.min <= nodata <= limits.max:
        raise InvalidImageError(
            f"{info.path}: nodata {nodata:g} is not a {dtype} value (expected an integer in "
            f"[{limits.min}, {limits.max}])"
        )


def _band_indexes(info: RasterInfo, sensor: Sensor, bands: Sequence[int] | None) -> list[int]:
    """The 1-based band numbers to read: ``bands``, checked, or all of a file of exactly 4 bands."""
    expected = f"{N_BANDS} bands ({', '.join(sensor.all_bands)})"
    if bands is None:
        if info.count != N_BANDS:
            raise InvalidImageError(f"{info.path}: expected {expected}, found {info.count}")
        return list(range(1, N_BANDS + 1))
    if len(bands) != N_BANDS:
        raise InvalidImageError(
            f"{info.path}: expected {N_BANDS} band numbers for {expected}, got {list(bands)}"
        )
    for band in bands:
        if not 1 <= band <= info.count:
            raise InvalidImageError(f"{info.path}: band {band} does not exist (the file has {info.count})")
    return [int(band) for band in bands]


def _to_reflectance(counts: np.ndarray, sensor: Sensor, path: str, scale: float | None = None) -> np.ndarray:
    if scale is not None and counts.dtype.kind in "uif":
        if not scale > 0:
            raise InvalidImageError(f"{path}: the DN scale must be > 0, got {scale:g}")
        data = counts.astype(np.float32) * np.float32(scale)
        validate_reflectance(data, name=f"{path} (DN × {scale:g})")
        return data
    if counts.dtype.kind == "f":
        data = counts.astype(np.float32)
        validate_reflectance(data, name=path)
        return data
    if counts.dtype.kind in "ui":
        if counts.dtype.itemsize > np.dtype(sensor.dtype).itemsize:
            raise InvalidImageError(
                f"{path}: {sensor.name} digital numbers are {sensor.dtype} "
                f"(reflectance × {sensor.dn_scale:g}), found {counts.dtype}; "
                "pass the sensor that wrote this file"
            )
        return counts_to_reflectance(counts, sensor)
    raise InvalidImageError(f"{path}: expected integer or float pixels, found dtype {counts.dtype}")


def write_raster(
    path: str | os.PathLike, raster: Raster, sensor: Sensor = SENTINEL2, cog: bool = True
) -> Path:
    """Write reflectance as ``sensor`` integers (band names, nodata, CRS, transform kept).

    The output is a Cloud-Optimized GeoTIFF (deflate, 256 px blocks, overviews) unless ``cog=False``.
    It appears at ``path`` only once complete.
    """
    counts = stored_counts(raster.data, sensor)
    count, height, width = counts.shape
    profile = {
        "driver": "GTiff",
        "count": count,
        "height": height,
        "width": width,
        "dtype": sensor.dtype,
        "crs": raster.crs,
        "transform": raster.transform,
        "nodata": sensor.nodata,
    }
    with _quiet_rasterio_context(), MemoryFile() as memfile, memfile.open(**profile) as mem:
        mem.write(counts)
        for index, name in enumerate(raster.band_names, start=1):
            mem.set_band_description(index, name)
        with atomic_file(path) as tmp:
            options = {"compress": "deflate", "blocksize": 256} if cog else {"compress": "deflate"}
            rasterio.shutil.copy(mem, tmp, driver="COG" if cog else "GTiff", **options)
    return Path(path)


def stored_counts(data: np.ndarray, sensor: Sensor) -> np.ndarray:
    """Reflectance ``(C, H, W)`` as the ``sensor`` integers a file stores: a pixel with nodata (NaN) in
    any band is nodata in every band."""
    whole_pixels = np.where(np.isfinite(data).all(axis=0), data, np.nan)
    return reflectance_to_counts(whole_pixels, sensor)


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
