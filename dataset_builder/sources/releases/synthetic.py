"""The v1 synthetic release: NAIP images only (``ROI_XXXX/{early,late}/NN__<naip-id>.tif``); the LR of each
row is made here by a Degradation model, as ``sen2naip build``'s synthetic stage makes it (the model's
blur, ×4 downsampling and harmonization, then its learned noise seeded per image by
:func:`dataset_builder.synthetic.stage.tile_seed`), or with the release's own ``sim_histograms`` method
in place of the learned harmonization (:mod:`.sim_histograms`). The row's ``degradation_model`` names
the model (and the method).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from dataset_builder.core.records import PairRecord
from dataset_builder.sources.releases.archive import Archive
from dataset_builder.sources.releases.geotiff import date_in, hr_to_builder, read_member
from dataset_builder.sources.releases.sim_histograms import SIM_PREFIX, method_table, reference_quantiles
from dataset_builder.sources.releases.v1 import ReleaseRow, RoiMembers, naip_id_of, read_metadata
from dataset_builder.synthetic.stage import tile_seed
from sen2naip_hub.errors import InvalidImageError
from sen2naip_hub.io import lr_transform
from sen2naip_hub.models.histogram import match_histograms
from sen2naip_hub.sensors import SENTINEL2, counts_to_reflectance, reflectance_to_s2

__all__ = ["DATE_FOLDERS", "Maker", "make_lr", "synthetic_images", "synthetic_rows"]

#: The two NAIP dates of a synthetic ROI, as folders of the release.
DATE_FOLDERS: tuple[str, str] = ("early", "late")


def synthetic_images(roi: RoiMembers) -> list[str]:
    """The ROI's NAIP members: ``early/*.tif`` and ``late/*.tif`` (sorted)."""
    prefixes = tuple(f"{roi.folder}/{folder}/" for folder in DATE_FOLDERS)
    return [m for m in roi.members if m.startswith(prefixes) and m.endswith(".tif")]


@dataclass(frozen=True)
class Maker:
    """How the LR is made: ``model`` (its id ``model_id``), a ``sim:<method>`` or None (the model's
    own harmonization), and the noise seed."""

    model: Any
    model_id: str
    harmonization: str | None
    seed: int

    @property
    def label(self) -> str:
        """The ``degradation_model`` column: the model, and the release's method when one was used."""
        return self.model_id if self.harmonization is None else f"{self.model_id} + {self.harmonization}"


def synthetic_rows(archive: Archive, roi: RoiMembers, release: str, maker: Maker) -> list[ReleaseRow]:
    """One ROI's rows: each NAIP image with its LR made by ``maker`` (noise seeded per image)."""
    meta = read_metadata(archive, roi, ("sim_histograms",) if maker.harmonization else ())
    target = None
    if maker.harmonization:
        method = maker.harmonization.removeprefix(SIM_PREFIX)
        target = method_table(meta["sim_histograms"], method, f"{roi.folder}/metadata.json")
    images = synthetic_images(roi)
    if not images:
        raise InvalidImageError(f"{roi.folder}: no early/*.tif or late/*.tif NAIP image")
    return [_row(archive, roi, name, release, maker, target) for name in images]


def make_lr(hr: torch.Tensor, maker: Maker, target: tuple | None, noise_key: str) -> torch.Tensor:
    """``(1, 4, H, W)`` reflectance → LR: the model (or its blur + downsampling and the release's
    method's histogram), then the model's noise seeded by ``noise_key``."""
    model = maker.model
    with torch.inference_mode():
        if target is None:
            lr = model(hr, noise=False).lr
        else:
            lr = model(hr, harmonization="none", noise=False).lr
            reference = reference_quantiles(*target, lr.shape[-2] * lr.shape[-1])
            lr = match_histograms(lr, reference.reshape(1, 4, 1, -1))
        generator = torch.Generator().manual_seed(tile_seed(maker.seed, noise_key))
        return model.noise(lr, generator)


def _row(
    archive: Archive, roi: RoiMembers, name: str, release: str, maker: Maker, target: tuple | None
) -> ReleaseRow:
    from affine import Affine

    raster = read_member(archive.read(name), name)
    hr = hr_to_builder(raster, name)
    reflectance = torch.from_numpy(counts_to_reflectance(hr, SENTINEL2))[None]
    lr = make_lr(reflectance, maker, target, name)
    model = maker.model
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
        degradation_model=maker.label,
        source="real",
    )
    return ReleaseRow(record, release, naip_id, None, roi.roi, raster.bounds)
