"""Seeded fixture writer: a NAIP + Sentinel-2 L2A STAC catalog of per-band COGs for the STAC API tests.

Made from the real sample NAIP (``../shared/sample/naip``, 5 m, EPSG:26914). Everything Sentinel-2 here
is **simulated** from that NAIP (blurred and area-averaged to 10 m on EPSG:32614; labelled
``"sen2naip:simulated": true`` in every S2 item): no co-located NAIP + Sentinel-2 pair exists offline.

Written under ``out``:

* ``files/``: COGs. NAIP ``image`` assets (4 bands uint8) at 0.6 m and 1.0 m (nearest-neighbour
  upsampled from the 5 m sample, NAD83 / UTM 14N); Sentinel-2 per-band assets ``B04.tif`` … and an
  ``SCL.tif`` at 20 m (WGS84 / UTM 14N); one truncated COG;
* ``items.json``: a Planetary-Computer-style FeatureCollection (asset keys ``image``, ``B04`` … ``SCL``)
  with S2 items of baseline 02.14 (DN = reflectance × 10000) and 05.00 (+1000, declared in
  ``raster:bands`` offset -0.1), one with clouds in its SCL, one outside the date range, one outside the
  bbox, one above ``max_cloud_cover``, one whose B08 asset is truncated;
* ``earth_search.json``: an Earth-Search-style FeatureCollection (asset keys ``red``, ``green``,
  ``blue``, ``nir``, ``scl``; ``earthsearch:boa_offset_applied: true`` while ``raster:bands`` still
  declares the -0.1 offset: the flag is the truth).

Run it by hand with ``python tests/data/stac/make_fixtures.py OUT http://127.0.0.1:PORT``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import reproject, transform_bounds, transform_geom
from scipy.ndimage import gaussian_filter

SEED = 14
NAIP_CRS, S2_CRS = CRS.from_epsg(26914), CRS.from_epsg(32614)
#: NAIP assets' extent (EPSG:26914), the S2 assets' extent (EPSG:32614, 10 m), the search bbox (26914).
NAIP_EXTENT = (486300.0, 5207000.0, 487500.0, 5208200.0)
S2_EXTENT = (486000.0, 5206400.0, 488400.0, 5208800.0)
BBOX_EXTENT = (486500.0, 5207200.0, 487300.0, 5208000.0)
#: A cloud (SCL 9) and its shadow (SCL 3) over the bbox's top-left ROI only (EPSG:32614).
CLOUD = (486600.0, 5207800.0, 486740.0, 5207940.0)
SHADOW = (486600.0, 5207740.0, 486740.0, 5207800.0)
DATETIME = "2018-06-01/2019-09-30"
BLUR_SIGMA_5M_PX = 1.0
S2_BANDS = ("B04", "B03", "B02", "B08")
ES_KEYS = {"B04": "red", "B03": "green", "B02": "blue", "B08": "nir", "SCL": "scl"}
NAIP_SAMPLE = "m_4709963_se_14_1_{}.tif"


def wgs84_bbox(extent=BBOX_EXTENT, crs=NAIP_CRS) -> list[float]:
    """``extent`` (in ``crs``) as a WGS84 ``[west, south, east, north]``."""
    return [round(v, 7) for v in transform_bounds(crs, CRS.from_epsg(4326), *extent)]


def _grid(extent, res: float) -> tuple[Affine, tuple[int, int]]:
    west, south, east, north = extent
    return Affine(res, 0, west, 0, -res, north), (round((north - south) / res), round((east - west) / res))


def _write_cog(path: Path, data: np.ndarray, crs: CRS, transform: Affine, blocksize: int, names=()) -> None:
    count, height, width = data.shape
    profile = dict(driver="COG", count=count, height=height, width=width, dtype=data.dtype.name, crs=crs)
    profile |= dict(transform=transform, nodata=0, compress="deflate", blocksize=blocksize)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for index, name in enumerate(names, start=1):
            dst.set_band_description(index, name)


def _naip_reflectance(sample: Path) -> tuple[np.ndarray, Affine]:
    with rasterio.open(sample) as src:
        counts = src.read()
        transform = src.transform
    data = counts.astype(np.float32) / 255.0
    data[:, (counts == 0).all(axis=0)] = np.nan
    return data, transform


def write_naip(sample: Path, path: Path, res: float) -> None:
    """The sample NAIP on a ``res`` grid over :data:`NAIP_EXTENT` (nearest neighbour: the same ground)."""
    transform, shape = _grid(NAIP_EXTENT, res)
    out = np.zeros((4, *shape), dtype=np.uint8)
    with rasterio.open(sample) as src:
        reproject(
            rasterio.band(src, [1, 2, 3, 4]),
            out,
            dst_transform=transform,
            dst_crs=NAIP_CRS,
            resampling=Resampling.nearest,
        )
    _write_cog(path, out, NAIP_CRS, transform, 256, ("R", "G", "B", "NIR"))


def simulated_s2_reflectance(sample: Path) -> tuple[np.ndarray, Affine]:
    """``(4, h, w)`` B04, B03, B02, B08 reflectance on the S2 grid: NAIP blurred, area-averaged to 10 m."""
    data, naip_transform = _naip_reflectance(sample)
    filled = np.where(np.isfinite(data), data, np.nanmean(data, axis=(1, 2), keepdims=True))
    blurred = np.stack([gaussian_filter(band, BLUR_SIGMA_5M_PX) for band in filled]).astype(np.float32)
    transform, shape = _grid(S2_EXTENT, 10.0)
    out = np.zeros((4, *shape), dtype=np.float32)
    reproject(
        blurred,
        out,
        src_transform=naip_transform,
        src_crs=NAIP_CRS,
        dst_transform=transform,
        dst_crs=S2_CRS,
        resampling=Resampling.average,
    )
    return out, transform


def _mask(transform: Affine, shape: tuple[int, int], extent) -> np.ndarray:
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    x, y = transform * (cols + 0.5, rows + 0.5)
    west, south, east, north = extent
    return (x >= west) & (x <= east) & (y >= south) & (y <= north)


def write_s2(reflectance, transform, folder: Path, offset_dn: int, cloudy: bool, seed: int) -> None:
    """Per-band uint16 COGs (DN = reflectance × 10000 + ``offset_dn``) and a 20 m SCL COG in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    scl_transform, scl_shape = (
        transform * Affine.scale(2),
        (reflectance.shape[1] // 2, reflectance.shape[2] // 2),
    )
    scl = rng.choice(np.array([4, 5], dtype=np.uint8), size=scl_shape)  # vegetation / bare soil
    data = reflectance.copy()
    if cloudy:
        scl[_mask(scl_transform, scl_shape, CLOUD)] = 9
        scl[_mask(scl_transform, scl_shape, SHADOW)] = 3
        data[:, _mask(transform, reflectance.shape[1:], CLOUD)] = 0.6
    dn = np.clip(np.rint(data * 10000) + offset_dn, 1, 65535).astype(np.uint16)
    for index, band in enumerate(S2_BANDS):
        _write_cog(folder / f"{band}.tif", dn[index : index + 1], S2_CRS, transform, 64, (band,))
    _write_cog(folder / "SCL.tif", scl[None], S2_CRS, scl_transform, 64, ("SCL",))


def _footprint(extent, crs):
    west, south, east, north = extent
    ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
    return transform_geom(crs, "EPSG:4326", {"type": "Polygon", "coordinates": [ring]})


def _item(item_id, collection, date, extent, crs, assets, properties, shift_deg=0.0) -> dict:
    geometry = _footprint(extent, crs)
    ring = [[x + shift_deg, y] for x, y in geometry["coordinates"][0]]
    xs, ys = [p[0] for p in ring], [p[1] for p in ring]
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": [
            "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
            "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
            "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
        ],
        "id": item_id,
        "collection": collection,
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "bbox": [min(xs), min(ys), max(xs), max(ys)],
        "properties": {"datetime": f"{date}T17:30:00Z"} | properties,
        "assets": assets,
        "links": [],
    }


def _naip_item(item_id, date, href, res, proj_key) -> dict:
    proj = {"proj:code": "EPSG:26914"} if proj_key == "code" else {"proj:epsg": 26914}
    asset = {
        "href": href,
        "type": "image/tiff; application=geotiff; profile=cloud-optimized",
        "roles": ["data"],
    }
    return _item(item_id, "naip", date, NAIP_EXTENT, NAIP_CRS, {"image": asset}, proj | {"gsd": res})


def _s2_item(item_id, date, base, baseline, cloud, keys=None, flag=None, shift_deg=0.0, broken=None) -> dict:
    keys = keys or {k: k for k in (*S2_BANDS, "SCL")}
    offset = -0.1 if baseline >= "04.00" or flag is not None else None
    assets = {}
    for band in (*S2_BANDS, "SCL"):
        href = f"{base}/{band}.tif" if band != broken else broken_href(base)
        raster = {"nodata": 0, "data_type": "uint16" if band != "SCL" else "uint8"}
        if band != "SCL":
            raster |= {"scale": 0.0001} | ({"offset": offset} if offset is not None else {})
        assets[keys[band]] = {
            "href": href,
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "roles": ["data"],
            "raster:bands": [raster],
        }
    properties = {
        "eo:cloud_cover": cloud,
        "s2:processing_baseline": baseline,
        "proj:code": "EPSG:32614",
        "sen2naip:simulated": True,
    }
    if flag is not None:
        properties["earthsearch:boa_offset_applied"] = flag
    return _item(item_id, "sentinel-2-l2a", date, S2_EXTENT, S2_CRS, assets, properties, shift_deg)


def broken_href(base: str) -> str:
    return f"{base.rsplit('/', 1)[0]}/truncated_B08.tif"


def write_fixtures(out: Path, base_url: str, sample_dir: Path) -> dict:
    """Write every file and both catalogs under ``out`` (assets served from ``base_url``); returns facts."""
    files = out / "files"
    files.mkdir(parents=True, exist_ok=True)
    naip = sample_dir / "naip"
    for name, date, res in (
        ("naip_0p6", "20190904", 0.6),
        ("naip_1p0", "20180716", 1.0),
        ("naip_2020", "20200831", 1.0),
    ):
        write_naip(naip / NAIP_SAMPLE.format(date), files / f"{name}.tif", res)
    ref_2019, transform = simulated_s2_reflectance(naip / NAIP_SAMPLE.format("20190904"))
    ref_2018, _ = simulated_s2_reflectance(naip / NAIP_SAMPLE.format("20180716"))
    write_s2(ref_2019, transform, files / "s2_2019_b0214", 0, False, SEED)
    write_s2(ref_2019, transform, files / "s2_2019_b0500", 1000, True, SEED + 1)
    write_s2(ref_2019, transform, files / "s2_2019_es", 0, False, SEED + 2)
    write_s2(ref_2018, transform, files / "s2_2018_b0214", 0, False, SEED + 3)
    whole = (files / "s2_2019_b0214" / "B08.tif").read_bytes()
    (files / "truncated_B08.tif").write_bytes(whole[: len(whole) // 8])
    url = base_url.rstrip("/")
    items = [
        _naip_item("naip-20190904-0p6m", "2019-09-04", f"{url}/naip_0p6.tif", 0.6, "code"),
        _naip_item("naip-20180716-1p0m", "2018-07-16", f"{url}/naip_1p0.tif", 1.0, "epsg"),
        _naip_item("naip-20200831-late", "2020-08-31", f"{url}/naip_2020.tif", 1.0, "epsg"),
        _s2_item("S2A-20190904-b0214", "2019-09-04", f"{url}/s2_2019_b0214", "02.14", 3.0),
        _s2_item("S2B-20190904-b0500", "2019-09-04", f"{url}/s2_2019_b0500", "05.00", 20.0),
        _s2_item("S2A-20180716-b0214", "2018-07-16", f"{url}/s2_2018_b0214", "02.14", 1.0),
        _s2_item("S2A-20200831-late", "2020-08-31", f"{url}/s2_2019_b0214", "02.14", 1.0),
        _s2_item("S2A-20190904-far", "2019-09-04", f"{url}/s2_2019_b0214", "02.14", 1.0, shift_deg=3.0),
        _s2_item("S2A-20190904-overcast", "2019-09-04", f"{url}/s2_2019_b0214", "02.14", 80.0),
        _s2_item("S2A-20190904-truncated", "2019-09-04", f"{url}/s2_2019_b0214", "02.14", 2.0, broken="B08"),
    ]
    earth_search = [
        _naip_item("naip-20190904-0p6m", "2019-09-04", f"{url}/naip_0p6.tif", 0.6, "code"),
        _s2_item("S2A-20190904-es", "2019-09-04", f"{url}/s2_2019_es", "05.00", 3.0, ES_KEYS, flag=True),
    ]
    for name, features in (("items.json", items), ("earth_search.json", earth_search)):
        (out / name).write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return {
        "bbox": wgs84_bbox(),
        "datetime": DATETIME,
        "reflectance_2019": ref_2019,
        "s2_transform": transform,
    }


if __name__ == "__main__":
    write_fixtures(
        Path(sys.argv[1]), sys.argv[2], Path(__file__).resolve().parents[3].parent / "shared" / "sample"
    )
