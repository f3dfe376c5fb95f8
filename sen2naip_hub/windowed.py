"""Windowed GeoTIFF input and output for images larger than memory.

:class:`HrWindowReader` reads any window of an input on its HR grid (the file's own grid, or the
2.5 m grid that :mod:`sen2naip_hub.resample` area-averages a finer input to, window by window);
:func:`streamed_cog` writes windows into a tiled GeoTIFF beside the destination and turns it into the
final Cloud-Optimized GeoTIFF only once every window is in (nothing half-written).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.windows import Window

from sen2naip_hub.errors import AllNodataError
from sen2naip_hub.files import atomic_file
from sen2naip_hub.io import Raster, read_info, read_raster, stored_counts
from sen2naip_hub.resample import HR_RESOLUTION_M, area_average, resampled_grid, resolution_plan
from sen2naip_hub.sensors import N_BANDS, NAIP, Sensor

__all__ = ["SOURCE_MARGIN", "HrWindowReader", "WindowWriter", "streamed_cog"]

#: Source pixels read beyond a window's footprint when area-averaging a finer input: one covers the
#: partial pixels of a non-integer ratio, the second the rounding of the window's bounds.
SOURCE_MARGIN: int = 2
#: Block size (px) of the temporary tiled GeoTIFF the windows are written into: uncompressed, so a
#: window rewrites its blocks in place.
PART_BLOCK: int = 64
#: Side (px) of the window :meth:`HrWindowReader.check` reads.
CHECK_WINDOW: int = 16
#: Side (px) of the source windows :meth:`HrWindowReader.has_data` scans.
SCAN_WINDOW: int = 1024
#: Options of the final COG (as :func:`sen2naip_hub.io.write_raster` writes it).
COG_OPTIONS: dict[str, object] = {"compress": "deflate", "blocksize": 256}


@dataclass
class HrWindowReader:
    """Windows of a 4-band input as reflectance ``(4, h, w)`` float32 (NaN = nodata) on its HR grid.

    Args:
        path: the GeoTIFF.
        nodata, bands, scale: as :func:`sen2naip_hub.io.read_raster`.
        target_m, allow_coarse: as :func:`sen2naip_hub.resample.resolution_plan`.

    Attributes ``transform``, ``height``, ``width`` and ``crs`` describe the HR grid, ``note`` says
    whether it was resampled, ``reads`` counts the windows read from the file.
    """

    path: str
    nodata: float | None = None
    bands: Sequence[int] | None = None
    scale: float | None = None
    target_m: float = HR_RESOLUTION_M
    allow_coarse: bool = False

    def __post_init__(self) -> None:
        info = read_info(self.path)
        self.crs, self.source_transform = info.crs, info.transform
        self.source_shape = (info.height, info.width)
        self.source_m, self.note = resolution_plan(
            info.crs, info.transform, self.path, self.target_m, self.allow_coarse
        )
        if self.source_m is None:
            self.transform, self.height, self.width = info.transform, info.height, info.width
        else:
            self.transform, self.height, self.width = resampled_grid(
                info.transform, info.height, info.width, self.source_m, self.target_m
            )
        self.reads = 0

    def check(self) -> None:
        """Fail early on what :func:`~sen2naip_hub.io.read_raster` checks (bands, dtype, ``nodata``,
        a corrupt file) by reading one small window; every window is checked again when read."""
        height, width = self.source_shape
        self._read(Window(0, 0, min(width, CHECK_WINDOW), min(height, CHECK_WINDOW)))

    def has_data(self) -> bool:
        """Whether any source pixel is valid, reading windows of :data:`SCAN_WINDOW` px until one is
        found (the first, for almost any image): an image of nodata only is refused before any work."""
        height, width = self.source_shape
        for row in range(0, height, SCAN_WINDOW):
            for col in range(0, width, SCAN_WINDOW):
                window = Window(col, row, min(SCAN_WINDOW, width - col), min(SCAN_WINDOW, height - row))
                if np.isfinite(self._read(window)).all(axis=0).any():
                    return True
        return False

    def read(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """Rows ``r0:r1`` and columns ``c0:c1`` of the HR grid."""
        if self.source_m is None:
            return self._read(Window(c0, r0, c1 - c0, r1 - r0))
        grid = self.transform * Affine.translation(c0, r0)
        inverse = ~self.source_transform
        corners = [inverse * (self.transform * (c, r)) for c in (c0, c1) for r in (r0, r1)]
        cols, rows = [x for x, _ in corners], [y for _, y in corners]
        height, width = self.source_shape
        sr0 = max(math.floor(min(rows)) - SOURCE_MARGIN, 0)
        sr1 = min(math.ceil(max(rows)) + SOURCE_MARGIN, height)
        sc0 = max(math.floor(min(cols)) - SOURCE_MARGIN, 0)
        sc1 = min(math.ceil(max(cols)) + SOURCE_MARGIN, width)
        window = Window(sc0, sr0, sc1 - sc0, sr1 - sr0)
        data = self._read(window)
        transform = rasterio.windows.transform(window, self.source_transform)
        source = Raster(data=data, crs=self.crs, transform=transform, band_names=NAIP.all_bands)
        return area_average(source, grid, r1 - r0, c1 - c0)

    def _read(self, window: Window) -> np.ndarray:
        self.reads += 1
        try:
            raster = read_raster(
                self.path, NAIP, window=window, nodata=self.nodata, bands=self.bands, scale=self.scale
            )
        except AllNodataError:  # a window of nodata only is fine; the whole image is checked later
            return np.full((N_BANDS, int(window.height), int(window.width)), np.nan, np.float32)
        return raster.data


class WindowWriter:
    """Writes reflectance windows into an open dataset as ``sensor`` integers."""

    def __init__(self, dataset, sensor: Sensor) -> None:
        self.dataset, self.sensor = dataset, sensor

    def write(self, data: np.ndarray, row: int, col: int) -> None:
        """Write ``data`` ``(C, h, w)`` reflectance (NaN = nodata) with its top-left pixel at ``row, col``."""
        window = Window(col, row, data.shape[2], data.shape[1])
        self.dataset.write(stored_counts(data, self.sensor), window=window)


@contextmanager
def streamed_cog(
    path: str | os.PathLike,
    sensor: Sensor,
    crs,
    transform: Affine,
    height: int,
    width: int,
    band_names: Sequence[str],
) -> Iterator[WindowWriter]:
    """A :class:`WindowWriter` into a temporary tiled GeoTIFF beside ``path``; when the block ends
    without error, it becomes the COG at ``path`` (written to another temporary name, then renamed).
    On error, or an interruption, neither the output nor a temporary file is left."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, part = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part.tif", dir=path.parent)
    os.close(fd)
    profile = {
        "driver": "GTiff",
        "count": len(band_names),
        "height": height,
        "width": width,
        "dtype": sensor.dtype,
        "crs": crs,
        "transform": transform,
        "nodata": sensor.nodata,
        "tiled": True,
        "blockxsize": PART_BLOCK,
        "blockysize": PART_BLOCK,
    }
    try:
        with rasterio.open(part, "w", **profile) as dst:
            for index, name in enumerate(band_names, start=1):
                dst.set_band_description(index, name)
            yield WindowWriter(dst, sensor)
        with atomic_file(path) as tmp:
            rasterio.shutil.copy(part, tmp, driver="COG", **COG_OPTIONS)
    finally:
        Path(part).unlink(missing_ok=True)
