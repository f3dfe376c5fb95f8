"""Windows of Cloud-Optimized GeoTIFFs over HTTP: range requests through GDAL's ``/vsicurl/``.

:func:`read_window` warps the part of one asset under a target grid (GDAL reads only the COG blocks
under it: HTTP 206 range requests, never the whole file), with a timeout per request and retries with
exponential back-off on anything that fails (5xx, timeouts, a cut connection, a body shorter than
announced). GDAL never returns a short read silently: a block it cannot fetch raises, so a window is
either complete or an :class:`UnreadableFileError` naming the asset (its URL's query string, where a
signature would be, redacted). :func:`read_windows` reads several assets at once, at most
:data:`HTTP_MAX_CONCURRENCY` at a time.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import rasterio
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.warp import reproject

from dataset_builder.core.facts import HTTP_BACKOFF_S, HTTP_MAX_CONCURRENCY, HTTP_MAX_RETRIES, HTTP_TIMEOUT_S
from dataset_builder.core.plan import first_line
from dataset_builder.sources.signing import redact
from sen2naip_hub.errors import UnreadableFileError

T = TypeVar("T")

__all__ = [
    "AssetHeader",
    "Grid",
    "HttpSettings",
    "gdal_http_env",
    "gdal_path",
    "read_header",
    "read_window",
    "read_windows",
]


@dataclass(frozen=True)
class Grid:
    """A target grid: ``crs``, ``transform`` and ``(height, width)``."""

    crs: CRS
    transform: Affine
    shape: tuple[int, int]


@dataclass(frozen=True)
class AssetHeader:
    """What an asset's header says: CRS, transform, size and band count."""

    crs: CRS | None
    transform: Affine
    width: int
    height: int
    count: int

    @property
    def resolution(self) -> float:
        """The pixel size (the larger of the two axes), in the CRS's units."""
        return max(abs(self.transform.a), abs(self.transform.e))


@dataclass(frozen=True)
class HttpSettings:
    """Timeout per request (s), retries after a failure, first back-off (s, doubled), assets at once."""

    timeout_s: float = HTTP_TIMEOUT_S
    retries: int = HTTP_MAX_RETRIES
    backoff_s: float = HTTP_BACKOFF_S
    max_concurrency: int = HTTP_MAX_CONCURRENCY


def gdal_http_env(settings: HttpSettings) -> dict[str, str]:
    """GDAL options for COG reads: no directory listing on open, no whole-file fallback, a timeout;
    GDAL's own retries are off (:func:`read_window` retries, so every failure kind is handled alike)."""
    timeout = str(max(1, round(settings.timeout_s)))
    return {
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF",
        "GDAL_HTTP_TIMEOUT": timeout,
        "GDAL_HTTP_CONNECTTIMEOUT": timeout,
        "GDAL_HTTP_MAX_RETRY": "0",
    }


@functools.cache
def _partial_clear_cache() -> Callable[[bytes], None] | None:
    """GDAL's ``VSICurlPartialClearCache`` (not exposed by rasterio), from the libgdal rasterio loaded.

    ``/vsicurl/`` remembers a failed request (a 503, a timeout) as "file does not exist" for the whole
    process, so a retry must forget it first. ``None`` where no libgdal is found (retries then still
    run, but may see the remembered failure).
    """
    bundled = sorted((Path(rasterio.__file__).parent.parent / "rasterio.libs").glob("libgdal*"))
    name = str(bundled[0]) if bundled else ctypes.util.find_library("gdal")
    if name is None:
        return None
    try:
        function = ctypes.CDLL(name).VSICurlPartialClearCache
    except (OSError, AttributeError):
        return None
    function.argtypes, function.restype = [ctypes.c_char_p], None
    return function


def _forget(href: str) -> None:
    """Drop what ``/vsicurl/`` cached about ``href`` (its size, its blocks, a remembered failure)."""
    clear = _partial_clear_cache()
    if clear is not None and href.startswith(("http://", "https://")):
        clear(gdal_path(href).encode())


def gdal_path(href: str) -> str:
    """``/vsicurl/`` + ``href`` for an http(s) URL, else ``href`` (a local path or a GDAL path)."""
    return f"/vsicurl/{href}" if href.startswith(("http://", "https://")) else href


def _warp(href: str, grid: Grid, bands: Sequence[int], resampling: Resampling, dtype: str) -> np.ndarray:
    out = np.zeros((len(bands), *grid.shape), dtype=dtype)
    with rasterio.open(gdal_path(href)) as src:
        nodata = src.nodata if src.nodata is not None else 0
        reproject(
            source=rasterio.band(src, list(bands)),
            destination=out,
            src_nodata=nodata,
            dst_transform=grid.transform,
            dst_crs=grid.crs,
            dst_nodata=0,
            resampling=resampling,
        )
    return out


def _header(href: str) -> AssetHeader:
    with rasterio.open(gdal_path(href)) as src:
        return AssetHeader(src.crs, src.transform, src.width, src.height, src.count)


def _with_retries(href: str, read: Callable[[], T], settings: HttpSettings) -> T:
    """``read()`` under the HTTP settings, retried with back-off; one typed error once retries run out."""
    error: Exception | None = None
    for attempt in range(settings.retries + 1):
        if attempt:
            _forget(href)
            time.sleep(settings.backoff_s * 2 ** (attempt - 1))
        try:
            with rasterio.Env(**gdal_http_env(settings)):
                return read()
        except (RasterioError, CPLE_BaseError, OSError) as err:
            error = err
    raise UnreadableFileError(
        f"{redact(href)}: unreadable after {settings.retries + 1} attempts ({redact(first_line(error))})"
    )


def read_header(href: str, settings: HttpSettings = HttpSettings()) -> AssetHeader:
    """The header of asset ``href`` (one or two range requests for a COG).

    Raises:
        UnreadableFileError: still failing after ``settings.retries`` retries.
    """
    return _with_retries(href, lambda: _header(href), settings)


def read_window(
    href: str,
    grid: Grid,
    bands: Sequence[int] = (1,),
    resampling: Resampling = Resampling.nearest,
    dtype: str = "uint16",
    settings: HttpSettings = HttpSettings(),
) -> np.ndarray:
    """``(len(bands), h, w)`` of asset ``href`` warped onto ``grid`` (0 where the asset has no data).

    Raises:
        UnreadableFileError: still failing after ``settings.retries`` retries.
    """
    return _with_retries(href, lambda: _warp(href, grid, bands, resampling, dtype), settings)


def read_windows(
    jobs: Sequence[tuple[str, Grid, Sequence[int], Resampling]],
    dtype: str = "uint16",
    settings: HttpSettings = HttpSettings(),
) -> list[np.ndarray | UnreadableFileError]:
    """:func:`read_window` of every ``(href, grid, bands, resampling)`` job, at most
    ``settings.max_concurrency`` at once; a failed job gives its error in place of the array."""

    def run(job: tuple[str, Grid, Sequence[int], Resampling]) -> np.ndarray | UnreadableFileError:
        try:
            return read_window(*job, dtype=dtype, settings=settings)
        except UnreadableFileError as err:
            return err

    with ThreadPoolExecutor(max_workers=max(1, settings.max_concurrency)) as pool:
        return list(pool.map(run, jobs))
