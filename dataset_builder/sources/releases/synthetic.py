"""The v1 synthetic release: NAIP images only (``ROI_XXXX/{early,late}/NN__<naip-id>.tif``); the LR of each
row is made here by a Degradation model, as ``sen2naip build``'s synthetic stage makes it (the model's
blur, ×4 downsampling and harmonization, then its learned noise seeded per image by
:func:`dataset_builder.synthetic.stage.tile_seed`). The row's ``degradation_model`` names the model.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from dataset_builder.core.records import PairRecord
from dataset_builder.sources.releases.archive import Archive
from dataset_builder.sources.releases.geotiff import date_in, hr_to_builder, read_member
from dataset_builder.sources.releases.v1 import ReleaseRow, RoiMembers, naip_id_of, read_metadata
from dataset_builder.synthetic.stage import tile_seed
from sen2naip_hub.errors import InvalidImageError
from sen2naip_hub.io import lr_transform
from sen2naip_hub.sensors import SENTINEL2, reflectance_to_s2

__all__ = ["DATE_FOLDERS", "synthetic_images", "synthetic_rows"]

#: The two NAIP dates of a synthetic ROI, as folders of the release.
DATE_FOLDERS: tuple[str, str] = ("early", "late")


def synthetic_images(roi: RoiMembers) -> list[str]:
    """The ROI's NAIP members: ``early/*.tif`` and ``late/*.tif`` (sorted)."""
    prefixes = tuple(f"{roi.folder}/{folder}/" for folder in DATE_FOLDERS)
    return [m for m in roi.members if m.startswith(prefixes) and m.endswith(".tif")]


def synthetic_rows(
    archive: Archive, roi: RoiMembers, release: str, model: Any, model_id: str, seed: int
) -> list[ReleaseRow]:
    """One ROI's rows: each NAIP image with its LR made by ``model`` (noise seeded per image)."""
    read_metadata(archive, roi, ())
    images = synthetic_images(roi)
    if not images:
        raise InvalidImageError(f"{roi.folder}: no early/*.tif or late/*.tif NAIP image")
    return [_row(archive, roi, name, release, model, model_id, seed) for name in images]


def _row(
    archive: Archive, roi: RoiMembers, name: str, release: str, model: Any, model_id: str, seed: int
) -> ReleaseRow:
    from affine import Affine

    raster = read_member(archive.read(name), name)
    hr = hr_to_builder(raster, name)
    reflectance = torch.from_numpy(hr.astype(np.float32) / np.float32(SENTINEL2.dn_scale))[None]
    with torch.inference_mode():
        lr = model(reflectance, noise=False).lr
        generator = torch.Generator().manual_seed(tile_seed(seed, name))
        lr = model.noise(lr, generator)
    naip_id = naip_id_of(name)
    record = PairRecord(
        roi_id=roi.roi,
        hr=hr,
        lr=reflectance_to_s2(lr[0].float().numpy()),
        crs=raster.crs,
        hr_transform=raster.transform,
        lr_transform=tuple(lr_transform(Affine.from_gdal(*raster.transform), model.scale).to_gdal()),
        hr_date=date_in(naip_id),
        lr_date=None,
        qa1=math.nan,
        qa2=math.nan,
        shift_x=0.0,
        shift_y=0.0,
        degradation_model=model_id,
        source="real",
    )
    return ReleaseRow(record, release, naip_id, None, roi.roi, raster.bounds)
