"""Sentinel-2 L2A digital numbers → surface reflectance, per item and band asset.

Since processing baseline 04.00 (January 2022) DN = reflectance × 10000 + 1000. Catalogs declare it
in the asset's ``raster:bands`` (``scale`` 0.0001, ``offset`` -0.1); Earth Search also sets
``earthsearch:boa_offset_applied`` on the item, and when the two disagree the flag wins (its
maintainers' word): ``true`` means the offset is already in the pixels' favour (DN = reflectance ×
10000), so no offset is applied. Items that declare neither fall back to ``s2:processing_baseline``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from dataset_builder.core.facts import EARTHSEARCH_OFFSET_FLAG, L2A_BOA_OFFSET, L2A_OFFSET_BASELINE
from sen2naip_hub.sensors import SENTINEL2

__all__ = ["BandScaling", "band_scaling", "to_reflectance"]


class BandScaling(NamedTuple):
    """reflectance = DN × ``scale`` + ``offset``; DN ``nodata`` is no reflectance."""

    scale: float
    offset: float
    nodata: float | None


def _baseline_offset(properties: Mapping[str, Any]) -> float:
    baseline = properties.get("s2:processing_baseline")
    if baseline is None:
        return 0.0
    return L2A_BOA_OFFSET if str(baseline) >= L2A_OFFSET_BASELINE else 0.0


def band_scaling(asset: Mapping[str, Any], properties: Mapping[str, Any]) -> BandScaling:
    """The scaling of one band asset of an item (see the module docstring for the precedence).

    >>> band_scaling({"raster:bands": [{"scale": 0.0001, "offset": -0.1, "nodata": 0}]}, {})
    BandScaling(scale=0.0001, offset=-0.1, nodata=0)
    >>> band_scaling({"raster:bands": [{"scale": 0.0001, "offset": -0.1}]}, {EARTHSEARCH_OFFSET_FLAG: True})
    BandScaling(scale=0.0001, offset=0.0, nodata=None)
    """
    bands = asset.get("raster:bands") or [{}]
    declared = bands[0]
    scale = float(declared.get("scale", 1.0 / SENTINEL2.dn_scale))
    if properties.get(EARTHSEARCH_OFFSET_FLAG):
        offset = 0.0
    elif "offset" in declared:
        offset = float(declared["offset"])
    else:
        offset = _baseline_offset(properties)
    return BandScaling(scale, offset, declared.get("nodata", asset.get("nodata")))


def to_reflectance(dn: np.ndarray, scaling: BandScaling) -> np.ndarray:
    """float32 reflectance of a DN array; nodata DNs (and 0, L2A's nodata) become NaN."""
    out = dn.astype(np.float32) * np.float32(scaling.scale) + np.float32(scaling.offset)
    invalid = dn == 0 if scaling.nodata is None else (dn == scaling.nodata) | (dn == 0)
    out[invalid] = np.nan
    return out
