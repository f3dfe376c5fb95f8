"""A STAC API as a source: search with pystac-client (paging through ``next`` links), check what the
server conforms to, and filter on the client side whatever the server may not have done.

Servers differ: some ignore ``sortby``, some answer ``query`` / ``filter`` with no items at all (HTTP 200).
So :func:`search_items` sends ``query`` only to an API that declares the Query conformance class, never
sends ``sortby``, and then checks every returned item itself (collection, bbox, datetime,
``eo:cloud_cover``) and sorts by date and id.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import pystac
from pystac_client import Client, ConformanceClasses
from pystac_client.exceptions import APIError

from dataset_builder.core.errors import BuildError
from dataset_builder.core.facts import STAC_PAGE_SIZE
from dataset_builder.sources.signing import Modifier, redact

__all__ = ["SearchRequest", "date_range", "item_date", "search_items"]


@dataclass(frozen=True)
class SearchRequest:
    """One search: ``bbox`` WGS84 ``[west, south, east, north]``, ``datetime`` ``start/end`` (ISO dates)."""

    api: str
    collection: str
    bbox: Sequence[float]
    datetime: str | None = None
    max_cloud_cover: float | None = None


def date_range(text: str | None) -> tuple[dt.date | None, dt.date | None]:
    """``"2019-06-01/2019-09-30"`` → both dates; ``..`` or a missing end is open (``None``).

    >>> date_range("2019-06-01/..")
    (datetime.date(2019, 6, 1), None)
    """
    if not text:
        return None, None
    start, _, end = text.partition("/")
    end = end or start

    def parse(part: str) -> dt.date | None:
        return None if part in ("", "..") else dt.date.fromisoformat(part)

    return parse(start), parse(end)


def item_date(item: pystac.Item) -> dt.date:
    """The item's ``datetime`` (or ``start_datetime``) as a date."""
    moment = item.datetime or item.common_metadata.start_datetime
    if moment is None:
        raise BuildError(f"STAC item {item.id}: neither datetime nor start_datetime is set")
    return moment.date()


def _inside(item: pystac.Item, request: SearchRequest) -> bool:
    """The client-side filter: collection, bbox overlap, date range, cloud cover."""
    if item.collection_id not in (None, request.collection):
        return False
    if item.bbox is not None and len(item.bbox) >= 4:
        west, south, east, north = item.bbox[0], item.bbox[1], item.bbox[-2], item.bbox[-1]
        w, s, e, n = request.bbox
        if east <= w or west >= e or north <= s or south >= n:
            return False
    start, end = date_range(request.datetime)
    date = item_date(item)
    if (start is not None and date < start) or (end is not None and date > end):
        return False
    cloud = item.properties.get("eo:cloud_cover")
    return request.max_cloud_cover is None or cloud is None or float(cloud) <= request.max_cloud_cover


def _open(api: str, modifier: Modifier | None) -> Client:
    try:
        client = Client.open(api, modifier=modifier, timeout=60)
    except (APIError, OSError, pystac.STACError, ValueError) as err:
        raise BuildError(
            f"{redact(api)}: not a reachable STAC API ({redact(str(err).splitlines()[0])})"
        ) from err
    if not client.conforms_to(ConformanceClasses.ITEM_SEARCH):
        raise BuildError(f"{redact(api)}: the STAC API does not declare item-search conformance")
    return client


def search_items(request: SearchRequest, modifier: Modifier | None = None) -> list[pystac.Item]:
    """Every item of ``request`` (all pages), checked on the client side, sorted by date then id.

    Raises:
        BuildError: the API cannot be reached, does not conform to item-search, or fails a search.
    """
    client = _open(request.api, modifier)
    query = None
    if request.max_cloud_cover is not None and client.conforms_to(ConformanceClasses.QUERY):
        query = {"eo:cloud_cover": {"lte": request.max_cloud_cover}}
    search = client.search(
        collections=[request.collection],
        bbox=list(request.bbox),
        datetime=request.datetime,
        query=query,
        limit=STAC_PAGE_SIZE,
    )
    try:
        items = list(search.items())
    except (APIError, OSError) as err:
        raise BuildError(
            f"{redact(request.api)}: search failed ({redact(str(err).splitlines()[0])})"
        ) from err
    kept = [item for item in items if _inside(item, request)]
    return sorted(kept, key=lambda item: (item_date(item), item.id))
