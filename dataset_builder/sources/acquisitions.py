"""Where NAIP and Sentinel-2 acquisitions come from, and how they are paired in time and space.

Two sources give the same :class:`Acquisition` records:

* a local folder of GeoTIFFs (:func:`acquisitions_from_folder`): the date comes from the file name
  (the first ``YYYYMMDD`` in it, as in NAIP's ``m_4709963_se_14_1_20090818.tif`` or Sentinel-2's
  ``..._20230615T...``), else from a JSON sidecar ``<stem>.json`` with a ``datetime`` or ``date``
  key, else from the GeoTIFF's ``ACQUISITION_DATE`` or ``TIFFTAG_DATETIME`` tag;
* a static STAC catalog on disk (:func:`dataset_builder.sources.stac_catalog.acquisitions_from_stac`).

Headers that cannot be read do not stop the listing: the acquisition is returned with ``crs`` and
``bounds`` set to ``None``, and the cross-sensor pipeline rejects it with the reason.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import rasterio
from rasterio.crs import CRS
from rasterio.errors import RasterioError
from rasterio.warp import transform_bounds

from dataset_builder.core.facts import SEN2NAIP_MAX_DAYS
from sen2naip_hub.errors import InvalidImageError, Sen2NaipError, UnreadableFileError
from sen2naip_hub.io import read_info
from sen2naip_hub.sensors import Sensor

__all__ = [
    "Acquisition",
    "acquisitions_from_folder",
    "pair_acquisitions",
    "parse_date",
]


_DATE_IN_NAME = re.compile(r"(?<!\d)((?:19|20)\d{2})(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])(?!\d)")
_DATE_TAGS: tuple[str, ...] = ("ACQUISITION_DATE", "TIFFTAG_DATETIME")
_SIDECAR_KEYS: tuple[str, ...] = ("datetime", "date")


@dataclass(frozen=True)
class Acquisition:
    """One image of one sensor on one date.

    ``bounds`` are ``(left, bottom, right, top)`` in ``crs``; both are ``None`` when the file's
    header could not be read (the pipeline then rejects it). ``scl`` is the Sentinel-2 scene
    classification beside the image (STAC API sources), ``item_id`` the STAC item it came from.
    """

    path: Path
    sensor: Sensor
    date: dt.date
    crs: CRS | None
    bounds: tuple[float, float, float, float] | None
    scl: Path | None = None
    item_id: str | None = None

    @property
    def id(self) -> str:
        """The file name without extension."""
        return self.path.stem

    @property
    def source_id(self) -> str:
        """What a row records as its provenance: the STAC item id, else the file name without extension."""
        return self.item_id or self.path.stem


def _date_from_text(text: str) -> dt.date | None:
    """The first date written as ``YYYYMMDD``, ``YYYY-MM-DD`` or ``YYYY:MM:DD`` in ``text``."""
    compact = re.sub(r"(?<=\d)[-:](?=\d)", "", text)
    match = _DATE_IN_NAME.search(compact)
    if match is None:
        return None
    try:
        return dt.date(*(int(group) for group in match.groups()))
    except ValueError:
        return None


def _date_from_sidecar(path: Path) -> dt.date | None:
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        return None
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UnreadableFileError(f"{sidecar}: not readable JSON ({err})") from err
    for key in _SIDECAR_KEYS:
        if isinstance(meta, dict) and isinstance(meta.get(key), str):
            date = _date_from_text(meta[key])
            if date is not None:
                return date
    return None


def _date_from_tags(path: Path) -> dt.date | None:
    try:
        with rasterio.open(path) as src:
            tags = src.tags()
    except RasterioError:
        return None
    for key in _DATE_TAGS:
        if key in tags:
            date = _date_from_text(tags[key])
            if date is not None:
                return date
    return None


def parse_date(path: str | os.PathLike) -> dt.date:
    """The acquisition date of a file: its name, else its JSON sidecar, else its GeoTIFF tags.

    >>> parse_date("m_4709963_se_14_1_20090818.tif")
    datetime.date(2009, 8, 18)

    Raises:
        InvalidImageError: no date found in any of the three places.
    """
    path = Path(path)
    date = _date_from_text(path.name) or _date_from_sidecar(path) or _date_from_tags(path)
    if date is None:
        raise InvalidImageError(
            f"{path}: no acquisition date found; put YYYYMMDD in the file name, or write "
            f"{path.with_suffix('.json').name} with a 'datetime' key, or set an ACQUISITION_DATE tag"
        )
    return date


def _header(path: Path) -> tuple[CRS | None, tuple[float, float, float, float] | None]:
    try:
        info = read_info(path)
    except Sen2NaipError:
        return None, None
    height, width = info.height, info.width
    left, top = info.transform @ (0, 0)
    right, bottom = info.transform @ (width, height)
    return info.crs, (min(left, right), min(top, bottom), max(left, right), max(top, bottom))


def acquisitions_from_folder(
    folder: str | os.PathLike, sensor: Sensor, pattern: str = "*.tif"
) -> list[Acquisition]:
    """Every GeoTIFF matching ``pattern`` in ``folder``, dated (see :func:`parse_date`), sorted by date.

    Raises:
        UnreadableFileError: ``folder`` does not exist.
        InvalidImageError: a file has no date anywhere (the message says how to give it one).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UnreadableFileError(f"{folder}: no such folder")
    acquisitions = []
    for path in sorted(folder.glob(pattern)):
        crs, bounds = _header(path)
        acquisitions.append(Acquisition(path, sensor, parse_date(path), crs, bounds))
    return sorted(acquisitions, key=lambda acq: (acq.date, acq.path.name))


def _overlap(a: Acquisition, b: Acquisition) -> bool:
    """True if the footprints intersect, or if either is unknown (the pipeline decides later)."""
    if a.bounds is None or b.bounds is None or a.crs is None or b.crs is None:
        return True
    b_bounds = b.bounds if b.crs == a.crs else transform_bounds(b.crs, a.crs, *b.bounds)
    return not (
        b_bounds[2] <= a.bounds[0]
        or b_bounds[0] >= a.bounds[2]
        or b_bounds[3] <= a.bounds[1]
        or b_bounds[1] >= a.bounds[3]
    )


def pair_acquisitions(
    naip: Iterable[Acquisition], s2: Sequence[Acquisition], max_days: int = SEN2NAIP_MAX_DAYS
) -> list[tuple[Acquisition, Acquisition]]:
    """Each NAIP acquisition with every Sentinel-2 acquisition within ``max_days`` that overlaps it.

    Pairs are ordered by NAIP, then by the date gap (closest first). Footprints that are unknown
    (unreadable headers) count as overlapping, so the pipeline can reject the pair with a reason.
    """
    if max_days < 0:
        raise ValueError(f"max_days must be >= 0, found {max_days}")
    pairs = []
    for hr in naip:
        close = [lr for lr in s2 if abs((lr.date - hr.date).days) <= max_days and _overlap(hr, lr)]
        close.sort(key=lambda lr: (abs((lr.date - hr.date).days), lr.path.name))
        pairs.extend((hr, lr) for lr in close)
    return pairs
