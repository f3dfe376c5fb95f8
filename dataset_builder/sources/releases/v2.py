"""The v2 release (``tacofoundation/SEN2NAIPv2``): one sample per footer row, a nested tortilla of ``lr`` and
``hr`` GeoTIFFs, with the release's own ``tortilla:data_split`` kept."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from dataset_builder.core.records import SPLIT_NAMES, PairRecord
from dataset_builder.sources.releases.geotiff import hr_to_builder, lr_to_builder, read_member
from dataset_builder.sources.releases.taco import Tortilla
from dataset_builder.sources.releases.v1 import ReleaseRow

__all__ = ["sample_row"]


def _date(row: dict[str, Any]) -> dt.date | None:
    value = row.get("stac:time_start")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, dt.datetime | dt.date):
        return value if isinstance(value, dt.date) and not isinstance(value, dt.datetime) else value.date()
    return dt.datetime.fromtimestamp(float(value), tz=dt.UTC).date()


def _text(row: dict[str, Any], *keys: str) -> str | None:
    for key in keys:
        if row.get(key) is not None:
            return str(row[key])
    return None


def sample_row(taco: Tortilla, index: int, release: str) -> tuple[ReleaseRow, str | None]:
    """Sample ``index`` of a TACO file → its row and the release's split of it (None when absent)."""
    outer = taco.rows[index]
    inner = taco.nested(index)
    members = {row["tortilla:id"]: row for row in inner.rows}
    hr_raster = read_member(inner.member("hr"), f"{inner.name}/hr")
    lr_raster = read_member(inner.member("lr"), f"{inner.name}/lr")
    hr = hr_to_builder(hr_raster, f"{inner.name}/hr")
    lr = lr_to_builder(lr_raster, hr.shape, f"{inner.name}/lr")
    record = PairRecord(
        roi_id=str(outer["tortilla:id"]),
        hr=hr,
        lr=lr,
        crs=hr_raster.crs,
        hr_transform=hr_raster.transform,
        lr_transform=lr_raster.transform,
        hr_date=_date(members.get("hr", {})) or _date(outer),
        lr_date=_date(members.get("lr", {})),
        qa1=math.nan,
        qa2=math.nan,
        shift_x=math.nan,
        shift_y=math.nan,
        degradation_model=None,
        source="real",
    )
    split = outer.get("tortilla:data_split")
    naip_id = _text(outer, "naip_id", "naip:id")
    s2_id = _text(outer, "s2_id", "s2:id", "s2_full_id")
    row = ReleaseRow(record, release, naip_id, s2_id, record.roi_id, hr_raster.bounds)
    return row, split if split in SPLIT_NAMES else None
