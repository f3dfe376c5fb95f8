"""Stage 1, sources: list the NAIP and Sentinel-2 files, date them, and check each one through.

A STAC API source is searched first (:mod:`.stac_api`) and each item's window of ``sources.bbox`` is
read into the work folder (:mod:`.remote`); those local files are then checked like any other, and
their manifest entries carry the item id, the API and the collection. An item that cannot be read is
listed with its reason.

A file is kept only if it is a georeferenced 4-band GeoTIFF of its sensor, in a projected CRS in
metres, with a pixel size that fits the sensor (:data:`~dataset_builder.core.facts.PIXEL_SIZE_RANGE_M`),
that decodes completely and has at least one valid pixel. Anything else (no date, unreadable, corrupt,
truncated, wrong band count or order, no CRS, a degree grid, NAIP at 30 m, all nodata) is left out with
its reason in the manifest; nothing stops the build but having no usable NAIP at all.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rasterio._err import CPLE_BaseError
from rasterio.errors import RasterioError
from rasterio.windows import Window
from tqdm.auto import tqdm

from dataset_builder.core.checkpoints import Checkpoints, atomic_write_text
from dataset_builder.core.config import BuildConfig, FolderSource, expand_env
from dataset_builder.core.errors import BuildError
from dataset_builder.core.facts import PIXEL_SIZE_RANGE_M
from dataset_builder.core.plan import failure_reason
from dataset_builder.sources.acquisitions import Acquisition, parse_date
from dataset_builder.sources.remote import NaipRequest, S2Request, fetch_naip, fetch_s2, local_name
from dataset_builder.sources.signing import make_modifier, redact
from dataset_builder.sources.stac_api import SearchRequest, item_date, search_items
from dataset_builder.sources.stac_catalog import acquisitions_from_stac
from sen2naip_hub.errors import AllNodataError, InvalidImageError, Sen2NaipError, UnreadableFileError
from sen2naip_hub.io import ALL_NODATA, RasterInfo, read_info, read_raster
from sen2naip_hub.sensors import N_BANDS, NAIP, SENTINEL2, Sensor

__all__ = ["CHECKPOINT", "check_grid", "check_input_file", "stage_sources", "usable_acquisitions"]

#: The stage's checkpoint: the manifest entry of every input file.
CHECKPOINT: str = "sources/files.json"
#: Files checked at once, in threads (rasterio releases the GIL while it decodes); entries keep file order.
MAX_SCREEN_WORKERS: int = 16
#: Rows read at once when checking that an input file decodes completely.
CHECK_STRIP_ROWS: int = 1024
_FILE_ERRORS = (Sen2NaipError, RasterioError, CPLE_BaseError, OSError)


def check_grid(info: RasterInfo, sensor: Sensor) -> None:
    """Raise :class:`InvalidImageError` unless the grid is projected, in metres, at ``sensor``'s scale."""
    if info.crs is None:
        raise InvalidImageError(f"{info.path}: no CRS; a georeferenced GeoTIFF is needed")
    if not info.crs.is_projected:
        raise InvalidImageError(
            f"{info.path}: CRS {info.crs.to_string()} is not projected (degrees); reproject it to its "
            "UTM zone in metres first (e.g. gdalwarp -t_srs EPSG:326NN)"
        )
    units = (info.crs.linear_units or "").lower()
    if units not in ("metre", "meter", "m"):
        raise InvalidImageError(f"{info.path}: CRS units are {units or 'unknown'!r}, expected metres")
    low, high = PIXEL_SIZE_RANGE_M[sensor.name]
    size = max(abs(info.transform.a), abs(info.transform.e))
    if not low <= size <= high:
        raise InvalidImageError(
            f"{info.path}: pixel size {size:g} m does not fit {sensor.name} (expected {low:g}-{high:g} m)"
        )


def check_input_file(path: Path, sensor: Sensor) -> None:
    """Raise a typed error unless ``path`` is a usable image of ``sensor`` (see the module docstring)."""
    info = read_info(path)
    if info.count != N_BANDS:
        raise InvalidImageError(
            f"{path}: expected {N_BANDS} bands ({', '.join(sensor.all_bands)}), found {info.count}"
        )
    if any(info.band_names) and tuple(info.band_names) != sensor.all_bands:
        found = ", ".join(str(n) for n in info.band_names)
        raise InvalidImageError(f"{path}: expected bands {', '.join(sensor.all_bands)}, found {found}")
    check_grid(info, sensor)
    if not _has_valid_pixel(path, sensor, info):
        raise InvalidImageError(f"{path}: {ALL_NODATA}")


def _has_valid_pixel(path: Path, sensor: Sensor, info: RasterInfo) -> bool:
    """Read the file strip by strip (so a truncated file fails here); True once a valid pixel is seen."""
    found = False
    for row in range(0, info.height, CHECK_STRIP_ROWS):
        window = Window(0, row, info.width, min(CHECK_STRIP_ROWS, info.height - row))
        try:
            read_raster(path, sensor, window=window)
            found = True
        except AllNodataError:
            continue
        except (RasterioError, CPLE_BaseError) as err:
            raise UnreadableFileError(f"{path}: corrupt or truncated ({err})") from err
    return found


#: One input file to screen: its path, its ISO date (None: parse it) and facts for its manifest entry.
Candidate = tuple[Path, str | None, dict[str, Any]]


def _candidate_files(source: FolderSource, sensor: Sensor) -> list[Candidate]:
    """Every file of a folder or static-catalog source (STAC items carry their date)."""
    if source.stac:
        acquisitions = acquisitions_from_stac(expand_env(source.stac), sensor, source.asset_key)
        return [(acq.path, acq.date.isoformat(), {}) for acq in acquisitions]
    if not source.folder:
        return []
    folder = Path(expand_env(source.folder))
    if not folder.is_dir():
        raise BuildError(f"{folder}: no such folder ({sensor.name} source)")
    return [(path, None, {}) for path in sorted(folder.glob(source.pattern))]


def _cached_fetch(out: Path, fetch: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``fetch()`` once: its facts are saved beside ``out`` (``<stem>.fetched.json``) after the file."""
    done = out.with_name(out.stem + ".fetched.json")
    if done.is_file():
        return json.loads(done.read_text(encoding="utf-8"))
    facts = fetch()
    atomic_write_text(done, json.dumps(facts))
    return facts


def _remote_files(
    config: BuildConfig, source: FolderSource, sensor: Sensor, store: Checkpoints
) -> tuple[list[Candidate], list[dict[str, Any]]]:
    """Search a STAC API source and read each item's window; returns candidates and rejected entries."""
    remote = config.sources
    api = expand_env(str(source.stac_api))
    request = SearchRequest(
        api, str(source.collection), remote.bbox or [], remote.datetime, source.max_cloud_cover
    )
    items = search_items(request, make_modifier(remote.signing))
    folder = store.path(f"sources/{'naip' if sensor is NAIP else 's2'}")
    candidates, rejected = [], []
    for item in items:
        out = folder / local_name(item.id)
        base = {"item": item.id, "api": redact(api), "collection": source.collection}
        if sensor is NAIP:
            hr_resolution = config.cross_sensor.hr_resolution_m
            hr = NaipRequest(str(source.asset), remote.bbox, hr_resolution, remote.hr_resampling)
            fetch = functools.partial(fetch_naip, item, hr, out)
        else:
            fetch = functools.partial(
                fetch_s2, item, S2Request(dict(source.bands or {}), source.scl, remote.bbox), out
            )
        try:
            facts = _cached_fetch(out, fetch)
        except _FILE_ERRORS as err:
            entry = {"stage": "sources", "sensor": sensor.name, "id": item.id, "path": None} | base
            rejected.append(entry | {"status": "rejected", "reason": redact(failure_reason(err))})
            continue
        candidates.append((out, item_date(item).isoformat(), base | facts))
    return candidates, rejected


def _screen_file(path: Path, date: str | None, sensor: Sensor, facts: dict[str, Any]) -> dict[str, Any]:
    """The manifest entry of one input file: ``status`` ok (with its date) or rejected (with why)."""
    entry: dict[str, Any] = {"stage": "sources", "sensor": sensor.name, "id": path.name, "path": str(path)}
    entry |= facts
    try:
        date = date or parse_date(path).isoformat()
        check_input_file(path, sensor)
    except _FILE_ERRORS as err:
        return entry | {"status": "rejected", "reason": failure_reason(err)}
    return entry | {"status": "ok", "date": date}


def _inputs(
    config: BuildConfig, store: Checkpoints
) -> tuple[list[tuple[Path, str | None, dict, Sensor]], list]:
    """Every file to screen (with its sensor), and the STAC API items already rejected."""
    files, rejected = [], []
    for source, sensor in ((config.sources.naip, NAIP), (config.sources.s2, SENTINEL2)):
        if source.stac_api:
            found, failed = _remote_files(config, source, sensor, store)
            rejected += failed
        else:
            found = _candidate_files(source, sensor)
        files += [(p, d, f, sensor) for p, d, f in found]
    return files, rejected


def stage_sources(config: BuildConfig, store: Checkpoints, progress: bool) -> list[dict[str, Any]]:
    """Stage 1; returns the manifest entries of every input file (checkpoint :data:`CHECKPOINT`)."""
    if store.has(CHECKPOINT):
        return store.load_json(CHECKPOINT)
    files, entries = _inputs(config, store)
    with ThreadPoolExecutor(
        min(MAX_SCREEN_WORKERS, os.cpu_count() or 1), thread_name_prefix="screen"
    ) as pool:
        screened = pool.map(lambda file: _screen_file(file[0], file[1], file[3], file[2]), files)
        entries += list(tqdm(screened, total=len(files), desc="sources", unit="file", disable=not progress))
    if not any(e["sensor"] == NAIP.name and e["status"] == "ok" for e in entries):
        where = config.sources.naip.folder or config.sources.naip.stac or config.sources.naip.stac_api
        raise BuildError(
            f"{expand_env(str(where))}: no usable NAIP GeoTIFF (found {len(entries)} file(s)); point "
            "sources.naip at a folder of 4-band NAIP GeoTIFFs (the sample: set SEN2NAIP_SAMPLE_DIR)"
        )
    store.save_json(CHECKPOINT, entries)
    return entries


def acquisition(entry: dict[str, Any], sensor: Sensor) -> Acquisition:
    """The :class:`Acquisition` of a kept file's manifest entry (header read again)."""
    info = read_info(entry["path"])
    left, top = info.transform @ (0, 0)
    right, bottom = info.transform @ (info.width, info.height)
    bounds = (min(left, right), min(top, bottom), max(left, right), max(top, bottom))
    date = dt.date.fromisoformat(entry["date"])
    scl = Path(entry["scl"]) if entry.get("scl") else None
    return Acquisition(
        Path(entry["path"]), sensor, date, info.crs, bounds, scl=scl, item_id=entry.get("item")
    )


def usable_acquisitions(entries: list[dict[str, Any]], sensor: Sensor) -> list[Acquisition]:
    """The kept files of ``sensor``, as acquisitions sorted by date and name."""
    chosen = [e for e in entries if e["sensor"] == sensor.name and e["status"] == "ok"]
    return sorted((acquisition(e, sensor) for e in chosen), key=lambda a: (a.date, a.path.name))
