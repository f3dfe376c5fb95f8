"""A static STAC catalog on disk as a source: one item per acquisition, one asset holding the image."""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pystac
from rasterio.crs import CRS

from dataset_builder.sources.acquisitions import Acquisition
from sen2naip_hub.errors import InvalidImageError, UnreadableFileError
from sen2naip_hub.sensors import Sensor

__all__ = ["acquisitions_from_stac", "item_crs"]


def item_crs(properties: Mapping[str, Any]) -> CRS | None:
    """The CRS of a STAC item or asset from ``proj:code`` (``"EPSG:32614"``, projection extension 2.0,
    what pystac 1.15 migrates old items to) or ``proj:epsg`` (extension 1.x); None when neither is set.

    >>> item_crs({"proj:epsg": 26914}) == item_crs({"proj:code": "EPSG:26914"}) == CRS.from_epsg(26914)
    True
    """
    code = properties.get("proj:code")
    if code:
        return CRS.from_user_input(code)
    epsg = properties.get("proj:epsg")
    return CRS.from_epsg(int(epsg)) if epsg is not None else None


def _item_date(item: pystac.Item) -> dt.date:
    moment = item.datetime or item.common_metadata.start_datetime
    if moment is None:
        raise InvalidImageError(f"STAC item {item.id}: neither datetime nor start_datetime is set")
    return moment.date()


def _item_asset(item: pystac.Item, asset_key: str | None) -> pystac.Asset:
    if asset_key is not None:
        if asset_key not in item.assets:
            raise InvalidImageError(
                f"STAC item {item.id}: no asset {asset_key!r}; it has {sorted(item.assets)}"
            )
        return item.assets[asset_key]
    for asset in item.assets.values():
        if asset.media_type and "tiff" in asset.media_type:
            return asset
    raise InvalidImageError(
        f"STAC item {item.id}: no GeoTIFF asset; pass asset_key= one of {sorted(item.assets)}"
    )


def _item_footprint(item: pystac.Item) -> tuple[CRS | None, tuple[float, float, float, float] | None]:
    crs = item_crs(item.properties)
    proj_bbox = item.properties.get("proj:bbox")
    if crs is not None and proj_bbox is not None and len(proj_bbox) == 4:
        return crs, tuple(float(v) for v in proj_bbox)
    if item.bbox is not None and len(item.bbox) == 4:
        return CRS.from_epsg(4326), tuple(float(v) for v in item.bbox)
    return None, None


def acquisitions_from_stac(
    catalog: str | os.PathLike, sensor: Sensor, asset_key: str | None = None
) -> list[Acquisition]:
    """Every item of a static STAC catalog (searched recursively), sorted by date.

    The date is the item's ``datetime`` (or ``start_datetime``); the file is the asset ``asset_key``,
    or the first asset whose media type is a TIFF; the footprint is ``proj:epsg`` + ``proj:bbox`` when
    present, else the item's WGS84 ``bbox``.

    Raises:
        UnreadableFileError: the catalog file cannot be read.
        InvalidImageError: an item has no date or no usable asset.
    """
    try:
        root = pystac.Catalog.from_file(str(catalog))
    except (OSError, pystac.STACError, json.JSONDecodeError) as err:
        raise UnreadableFileError(f"{catalog}: not a readable STAC catalog ({err})") from err
    acquisitions = []
    for item in root.get_items(recursive=True):
        href = _item_asset(item, asset_key).get_absolute_href()
        crs, bounds = _item_footprint(item)
        acquisitions.append(Acquisition(Path(href), sensor, _item_date(item), crs, bounds))
    return sorted(acquisitions, key=lambda acq: (acq.date, acq.path.name))
