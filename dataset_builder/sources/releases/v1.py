"""The v1 release (``isp-uv-es/SEN2NAIP``): ROI folders inside zips, found at any depth.

- cross-sensor: ``…/ROI_XXXX/{hr.tif, lr.tif, metadata.json}``; one row per ROI, the real LR as is.
- synthetic: ``…/ROI_XXXX/{early,late}/NN__<naip-id>.tif`` + ``metadata.json``; one row per NAIP image
  (HR only in the release), its LR made here by a Degradation model (:mod:`.synthetic`).

:func:`find_rois` groups member names by ROI folder; :func:`cross_sensor_row` turns one ROI into one
:class:`ReleaseRow` or raises (the import's fault boundary lists the reason in the manifest).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from dataset_builder.core.records import PairRecord
from dataset_builder.sources.releases.archive import Archive
from dataset_builder.sources.releases.geotiff import date_in, hr_to_builder, lr_to_builder, read_member
from sen2naip_hub.errors import InvalidImageError, Sen2NaipError

__all__ = ["ReleaseRow", "RoiMembers", "cross_sensor_row", "find_rois", "read_metadata"]

_ROI = re.compile(r"^(?P<folder>(?:.*/)?(?P<roi>ROI_\d+))/(?P<rest>.+)$")
#: Keys of a v1 ``metadata.json`` the import reads (the cards list more; none other is relied on).
QA_KEYS: tuple[str, str] = ("QA1", "QA2")


class MetadataError(Sen2NaipError, ValueError):
    """A ROI's ``metadata.json`` is missing, not JSON, or lacks a key the import needs."""


@dataclass(frozen=True)
class RoiMembers:
    """One ROI folder of a release: its id (``ROI_0001``), folder path and member names inside it."""

    roi: str
    folder: str
    members: tuple[str, ...]

    def member(self, relative: str) -> str | None:
        """The full name of ``relative`` (e.g. ``lr.tif``) in this ROI, or None if absent."""
        full = f"{self.folder}/{relative}"
        return full if full in self.members else None


@dataclass(frozen=True)
class ReleaseRow:
    """A :class:`PairRecord` plus the release's provenance columns."""

    record: PairRecord
    release: str
    naip_id: str | None
    s2_id: str | None
    group: str  # footprint key: rows sharing it (or touching footprints) share a split
    bounds: tuple[float, float, float, float]


def find_rois(names: list[str]) -> list[RoiMembers]:
    """ROI folders (``ROI_<digits>``) at any depth, with their members, sorted by folder."""
    groups: dict[tuple[str, str], list[str]] = {}
    for name in names:
        match = _ROI.match(name)
        if match:
            groups.setdefault((match["folder"], match["roi"]), []).append(name)
    return [RoiMembers(roi, folder, tuple(sorted(m))) for (folder, roi), m in sorted(groups.items())]


def read_metadata(archive: Archive, roi: RoiMembers, required: tuple[str, ...]) -> dict[str, Any]:
    """The ROI's ``metadata.json`` as a dict holding ``required`` keys (:class:`MetadataError` if not)."""
    name = roi.member("metadata.json")
    if name is None:
        raise MetadataError(f"{roi.folder}: no metadata.json")
    try:
        meta = json.loads(archive.read(name).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise MetadataError(f"{name}: not readable JSON ({err})") from err
    if not isinstance(meta, dict):
        raise MetadataError(f"{name}: expected a JSON object, found {type(meta).__name__}")
    missing = [key for key in required if key not in meta]
    if missing:
        raise MetadataError(f"{name}: missing key(s) {', '.join(missing)}")
    return meta


def _number(meta: dict[str, Any], key: str, name: str) -> float:
    value = meta.get(key)
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError) as err:
        raise MetadataError(f"{name}: {key} must be a number, found {value!r}") from err


def cross_sensor_row(archive: Archive, roi: RoiMembers, release: str) -> ReleaseRow:
    """One v1 cross-sensor ROI → its row: HR and LR exactly as stored, QA from ``metadata.json``."""
    meta = read_metadata(archive, roi, QA_KEYS)
    names = {key: roi.member(f"{key}.tif") for key in ("hr", "lr")}
    for key, name in names.items():
        if name is None:
            raise InvalidImageError(f"{roi.folder}: no {key}.tif")
    hr_raster = read_member(archive.read(names["hr"]), names["hr"])
    lr_raster = read_member(archive.read(names["lr"]), names["lr"])
    hr = hr_to_builder(hr_raster, names["hr"])
    lr = lr_to_builder(lr_raster, hr.shape, names["lr"])
    s2_id = str(meta["s2_id"]) if meta.get("s2_id") is not None else None
    naip_id = str(meta["naip_id"]) if meta.get("naip_id") is not None else None
    record = PairRecord(
        roi_id=str(meta.get("roi_id") or roi.roi),
        hr=hr,
        lr=lr,
        crs=hr_raster.crs,
        hr_transform=hr_raster.transform,
        lr_transform=lr_raster.transform,
        hr_date=date_in(naip_id),
        lr_date=date_in(s2_id),
        qa1=_number(meta, "QA1", roi.folder),
        qa2=_number(meta, "QA2", roi.folder),
        shift_x=math.nan,
        shift_y=math.nan,
        degradation_model=None,
        source="real",
    )
    return ReleaseRow(record, release, naip_id, s2_id, roi.roi, hr_raster.bounds)


def naip_id_of(member: str) -> str:
    """``NN__<naip-id>.tif`` → ``<naip-id>`` (the synthetic release's file names)."""
    stem = PurePosixPath(member).stem
    return stem.split("__", 1)[1] if "__" in stem else stem
