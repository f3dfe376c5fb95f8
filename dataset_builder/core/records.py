"""The row every split of the dataset is made of, shared by both pipelines and the writer."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

import numpy as np

CONFIG_NAMES: tuple[str, ...] = ("cross_sensor", "synthetic")
SPLIT_NAMES: tuple[str, ...] = ("train", "validation", "test")
Source = Literal["real", "simulated"]


@dataclass(frozen=True)
class PairRecord:
    """One ROI of one config: an HR NAIP tile and its LR (real or degraded) Sentinel-2 counterpart.

    ``hr`` and ``lr`` are uint16 arrays ``(4, H, W)`` / ``(4, h, w)`` holding reflectance × 10000 in the
    band order R, G, B, NIR ↔ B04, B03, B02, B08. Geotransforms are GDAL-ordered 6-tuples
    (``Affine.to_gdal()``) in ``crs`` (WKT).
    """

    roi_id: str
    hr: np.ndarray
    lr: np.ndarray
    crs: str
    hr_transform: tuple[float, ...]
    lr_transform: tuple[float, ...]
    hr_date: dt.date
    lr_date: dt.date | None
    #: residual misalignment after co-registration, LR pixels (NaN for synthetic rows)
    qa1: float
    #: spectral angle between degraded HR and LR, degrees (NaN for synthetic rows)
    qa2: float
    #: estimated (and removed) shift of the LR against the degraded HR, LR pixels (x = columns, y = rows)
    shift_x: float
    shift_y: float
    #: Hub id or path of the degradation model that made ``lr`` (None for real LR)
    degradation_model: str | None
    source: Source
    #: provenance: the STAC item ids of the HR and LR (else their file names without extension)
    naip_id: str | None = None
    s2_id: str | None = None
