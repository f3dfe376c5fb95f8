"""Sentinel-2 scene classification (SCL): the reason an LR window is too cloudy (or snowy, or empty)."""

from __future__ import annotations

import os

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import reproject

from dataset_builder.core.facts import SCL_MAX_FRACTION, SCL_REJECTED_CLASSES

__all__ = ["read_scl", "scl_fractions", "scl_rejection"]


def scl_fractions(scl: np.ndarray) -> dict[str, float]:
    """Share of the window in each rejected SCL class present (see :data:`SCL_REJECTED_CLASSES`).

    >>> scl_fractions(np.array([[4, 4], [9, 3]]))
    {'cloud shadow': 0.25, 'cloud (high)': 0.25}
    """
    total = max(scl.size, 1)
    return {
        name: float(np.count_nonzero(scl == value) / total)
        for value, name in SCL_REJECTED_CLASSES.items()
        if np.any(scl == value)
    }


def scl_rejection(scl: np.ndarray, max_fraction: float = SCL_MAX_FRACTION) -> str | None:
    """``None`` if at most ``max_fraction`` of the window is in rejected classes, else the reason.

    >>> scl_rejection(np.array([[4, 4], [9, 8]]))
    'scl: cloud (medium) 25%, cloud (high) 25% > 0%'
    """
    fractions = scl_fractions(scl)
    if sum(fractions.values()) <= max_fraction:
        return None
    listed = ", ".join(f"{name} {share:.0%}" for name, share in fractions.items())
    return f"scl: {listed} > {max_fraction:.0%}"


def read_scl(path: str | os.PathLike, crs: CRS, transform: Affine, shape: tuple[int, int]) -> np.ndarray:
    """The SCL file at ``path`` on a target grid (nearest neighbour; 0, SCL's nodata, where it has none)."""
    out = np.zeros(shape, dtype=np.uint8)
    with rasterio.open(path) as src:
        reproject(
            source=rasterio.band(src, 1),
            destination=out,
            src_nodata=None,
            dst_transform=transform,
            dst_crs=crs,
            dst_nodata=0,
            resampling=Resampling.nearest,
        )
    return out
