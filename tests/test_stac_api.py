"""Real sources end to end: a real STAC API on localhost (``rustac serve``) whose items point at per-band
COGs on a local range-capable HTTP server (tests/http_range_server.py), made by the seeded fixture
script tests/data/stac/make_fixtures.py from the real sample NAIP. Every Sentinel-2 image there is
**simulated** from the NAIP (no co-located pair exists offline); the items say so.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from http_range_server import RangeServer
from rasterio.enums import Resampling
from rasterio.warp import reproject
from stac_servers import rustac_executable, rustac_serve

from dataset_builder.build import build_dataset
from dataset_builder.core.checkpoints import Checkpoints
from dataset_builder.core.config import ConfigError, from_dict
from dataset_builder.sources import stac_api
from dataset_builder.sources.cog import Grid, HttpSettings, read_window
from dataset_builder.sources.signing import make_modifier, redact
from dataset_builder.sources.stac_api import SearchRequest, search_items
from dataset_builder.sources.stage import stage_sources
from dataset_builder.write.output import MANIFEST_NAME

sys.path.insert(0, str(Path(__file__).parent / "data" / "stac"))
from make_fixtures import CLOUD, write_fixtures

pytestmark = pytest.mark.skipif(
    rustac_executable() is None, reason="rustac (pip install rustac) not installed"
)

ROI = 128
S2_KEPT = {"S2A-20190904-b0214", "S2B-20190904-b0500", "S2A-20180716-b0214", "S2A-20190904-truncated"}
NAIP_KEPT = {"naip-20190904-0p6m", "naip-20180716-1p0m"}
FAST = HttpSettings(timeout_s=1, retries=2, backoff_s=0.05)


@pytest.fixture(scope="module")
def servers(tmp_path_factory, sample_dir):
    """The file server, the fixtures written against it, and two STAC APIs (Planetary Computer-style
    and Earth Search-style catalogs)."""
    root = tmp_path_factory.mktemp("stac")
    (root / "files").mkdir()
    with RangeServer(root / "files", slow_s=2.5) as files:
        facts = write_fixtures(root, files.url(""), sample_dir)
        with (
            rustac_serve(root / "items.json", root / "rustac.log") as api,
            rustac_serve(root / "earth_search.json", root / "rustac_es.log") as es_api,
        ):
            yield {"root": root, "files": files, "api": api, "es_api": es_api} | facts


def _config(servers, out: Path, model: Path | None = None, **sources) -> dict:
    config = {
        "out": str(out),
        "device": "cpu",
        "sources": {
            "naip": {"stac_api": servers["api"]},
            "s2": {"stac_api": servers["api"], "max_cloud_cover": 50},
            "bbox": servers["bbox"],
            "datetime": servers["datetime"],
            "preset": "planetary_computer",
        }
        | sources,
        "cross_sensor": {"roi_size": ROI},
        "synthetic": {"tile_size": ROI, "size": 4, "n_clusters": 2, "clip_model": "ViT-S-32"},
    }
    if model is not None:
        config["degradation_model"] = str(model)
    return config


@pytest.fixture(scope="module")
def built(servers, reference_dir):
    out = servers["root"] / "build" / "sen2naip"
    config = from_dict(_config(servers, out, reference_dir / "sen2naip-degradation"))
    before = len(servers["files"].log)
    build_dataset(config, progress=False, echo=lambda *_: None)
    manifest = [json.loads(line) for line in (out / MANIFEST_NAME).read_text().splitlines()]
    return {"out": out, "config": config, "manifest": manifest, "log": servers["files"].log[before:]}


def _rows(out: Path, config: str) -> list[dict]:
    import datasets

    ds = datasets.load_dataset(str(out), config, split=None)
    return [dict(row, split=name) for name, split in ds.items() for row in split.with_format("numpy")]


# ------------------------------------------------------------------------------------- search
def test_search_pages_and_filters_on_the_client(servers, monkeypatch) -> None:
    monkeypatch.setattr(stac_api, "STAC_PAGE_SIZE", 2)  # 10 items: several pages through `next` links
    request = SearchRequest(servers["api"], "sentinel-2-l2a", servers["bbox"], servers["datetime"], 50)
    found = [item.id for item in search_items(request)]
    assert set(found) == S2_KEPT  # not the late one, the far one, nor the overcast (80 % > 50 %)
    assert found == sorted(found, key=lambda i: ("2018" not in i, i))  # by date, then id
    naip = search_items(SearchRequest(servers["api"], "naip", servers["bbox"], servers["datetime"]))
    assert {item.id for item in naip} == NAIP_KEPT


def test_the_server_ignores_query_so_it_is_never_sent(servers) -> None:
    from pystac_client import Client

    client = Client.open(servers["api"])
    query = {"eo:cloud_cover": {"lte": 50}}
    assert not list(client.search(collections=["sentinel-2-l2a"], query=query).items())  # rustac's quirk
    assert not client.conforms_to("QUERY")


# ------------------------------------------------------------------------------------- the build
def test_build_from_a_stac_api_makes_both_splits_from_items_in_bbox_and_dates(built) -> None:
    cross, synthetic = _rows(built["out"], "cross_sensor"), _rows(built["out"], "synthetic")
    assert cross and synthetic
    assert {r["naip_id"] for r in cross} == NAIP_KEPT
    assert {r["s2_id"] for r in cross} == {"S2A-20190904-b0214", "S2B-20190904-b0500", "S2A-20180716-b0214"}
    assert {r["naip_id"] for r in synthetic} <= {"naip-20190904-0p6m", "naip-20180716-1p0m"}
    for row in cross:
        assert row["hr_transform"][1] == pytest.approx(2.5) and row["lr_transform"][1] == pytest.approx(10)
    listed = {e.get("item") for e in built["manifest"] if e["stage"] == "sources"}
    assert listed == NAIP_KEPT | S2_KEPT


def test_native_resolution_and_resampling_are_recorded(built) -> None:
    naip = {e["item"]: e for e in built["manifest"] if e["stage"] == "sources" and e["sensor"] == "NAIP"}
    assert naip["naip-20190904-0p6m"]["native_resolution_m"] == pytest.approx(0.6)
    assert naip["naip-20180716-1p0m"]["native_resolution_m"] == pytest.approx(1.0)
    assert {e["resampling"] for e in naip.values()} == {"average"}
    card = (built["out"] / "README.md").read_text()
    assert "collection `naip`" in card and "resampled to 2.5 m by average" in card


def test_naip_is_area_averaged_from_its_native_pixels(built, servers) -> None:
    """The cached 2.5 m HR equals GDAL's area average of the full-resolution 0.6 m file (no overview
    used), and keeps the mean of the native pixels under it."""
    cached = Path(next(e["path"] for e in built["manifest"] if e.get("item") == "naip-20190904-0p6m"))
    native_path = servers["root"] / "files" / "naip_0p6.tif"
    with rasterio.open(cached) as hr, rasterio.open(native_path, OVERVIEW_LEVEL="NONE") as native:
        assert hr.res == (2.5, 2.5) and native.res == pytest.approx((0.6, 0.6))
        coarse = hr.read()
        expected = np.zeros_like(coarse)
        reproject(
            rasterio.band(native, [1, 2, 3, 4]),
            expected,
            dst_transform=hr.transform,
            dst_crs=hr.crs,
            resampling=Resampling.average,
        )
        fine = native.read(window=native.window(*hr.bounds)).astype(np.float64)
    np.testing.assert_array_equal(coarse, expected)
    assert np.abs(fine.mean(axis=(1, 2)) - coarse.mean(axis=(1, 2))).max() < 1.0  # uint8 counts


def test_cloudy_rois_are_rejected_by_the_scl_with_the_reason(built) -> None:
    rejected = [e for e in built["manifest"] if e["stage"] == "cross_sensor" and e["status"] == "rejected"]
    cloudy = [e for e in rejected if "S2B-20190904-b0500" in e["id"]]
    assert (
        len(cloudy) == 1 and "cloud (high)" in cloudy[0]["reason"] and "cloud shadow" in cloudy[0]["reason"]
    )
    assert "scl:" in cloudy[0]["reason"]
    clear = [e for e in rejected if "b0214" in e["id"]]
    assert not clear


def test_both_processing_baselines_give_the_same_reflectance(built, servers) -> None:
    rows = _rows(built["out"], "cross_sensor")
    by_s2 = {(r["roi_id"], r["s2_id"]): r["lr"] for r in rows}
    shared = [roi for roi, s2 in by_s2 if s2 == "S2B-20190904-b0500"]
    assert shared
    for roi in shared:
        np.testing.assert_array_equal(by_s2[(roi, "S2B-20190904-b0500")], by_s2[(roi, "S2A-20190904-b0214")])
    cache = Path(next(e["path"] for e in built["manifest"] if e.get("item") == "S2B-20190904-b0500"))
    with rasterio.open(cache) as src:
        dn = src.read().astype(np.float64)
        col, row = (~src.transform) * (servers["s2_transform"].c, servers["s2_transform"].f)
    truth = servers["reflectance_2019"] * 10000
    r0, c0 = -round(row), -round(col)
    truth = truth[:, r0 : r0 + dn.shape[1], c0 : c0 + dn.shape[2]]
    clear = np.ones(dn.shape[1:], bool)
    with rasterio.open(cache) as src:
        rows_, cols_ = np.mgrid[0 : dn.shape[1], 0 : dn.shape[2]]
        x, y = src.transform * (cols_ + 0.5, rows_ + 0.5)
    clear &= ~((x >= CLOUD[0]) & (x <= CLOUD[2]) & (y >= CLOUD[1]) & (y <= CLOUD[3]))
    assert np.abs(dn - truth)[:, clear].max() <= 1.0  # the +1000 offset is gone


def test_the_file_server_saw_only_window_reads(built, servers) -> None:
    gets = [(path, status) for method, path, status, _ in built["log"] if method == "GET"]
    assert gets and all(status in (206, 416) for _, status in gets)  # 416: reads past the truncated file
    for name in ("naip_0p6.tif", "naip_1p0.tif", "s2_2018_b0214/B04.tif"):
        size = (servers["root"] / "files" / name).stat().st_size
        served = sum(n for method, path, _, n in built["log"] if path == f"/{name}")
        assert 0 < served < size / 2, name


def test_unreadable_asset_is_listed_not_fatal(built) -> None:
    entry = next(e for e in built["manifest"] if e.get("item") == "S2A-20190904-truncated")
    assert (
        entry["status"] == "rejected" and "asset B08" in entry["reason"] and "unreadable" in entry["reason"]
    )


def test_a_resumed_sources_stage_reads_nothing_again(built, servers) -> None:
    """Only the item that failed is tried again (its other assets are shared with S2A-20190904-b0214)."""
    store = Checkpoints(built["config"].work_path)
    store.remove("sources/files.json")

    def cached_reads() -> int:
        shared = ("/truncated_B08.tif", "/s2_2019_b0214/")
        return sum(m == "GET" and not p.startswith(shared) for m, p, _, _ in servers["files"].log)

    before = cached_reads()
    entries = stage_sources(built["config"], store, progress=False)
    assert cached_reads() == before
    assert sum(e["status"] == "ok" for e in entries) == 5


# ------------------------------------------------------------------------------------- Earth Search
def test_earth_search_preset_reads_the_same_reflectance(built, servers, tmp_path) -> None:
    es = {"naip": {"stac_api": servers["es_api"]}, "s2": {"stac_api": servers["es_api"]}}
    config = from_dict(_config(servers, tmp_path / "es", **es, preset="earth_search"))
    assert config.sources.s2.bands == {"B04": "red", "B03": "green", "B02": "blue", "B08": "nir"}
    entries = stage_sources(config, Checkpoints(tmp_path / "work"), progress=False)
    es_s2 = next(e for e in entries if e.get("item") == "S2A-20190904-es")
    assert es_s2["status"] == "ok" and es_s2["offsets"]["B04"] == 0.0  # the flag beats raster:bands' -0.1
    pc_s2 = next(e for e in built["manifest"] if e.get("item") == "S2A-20190904-b0214")
    with rasterio.open(es_s2["path"]) as a, rasterio.open(pc_s2["path"]) as b:
        np.testing.assert_array_equal(a.read(), b.read())


# ------------------------------------------------------------------------------------- HTTP faults
@pytest.fixture(scope="module")
def grid(servers) -> Grid:
    with rasterio.open(servers["root"] / "files" / "s2_2019_b0214" / "B04.tif") as src:
        return Grid(src.crs, src.transform, (src.height, src.width))


def _truth(servers) -> np.ndarray:
    with rasterio.open(servers["root"] / "files" / "s2_2019_b0214" / "B04.tif") as src:
        return src.read()


def test_503_then_success_is_retried(servers, grid) -> None:
    files = servers["files"]
    out = read_window(files.url("s2_2019_b0214/B04.tif", "503once"), grid, settings=FAST)
    np.testing.assert_array_equal(out, _truth(servers))
    statuses = [s for _, p, s, _ in files.log if p.startswith("/503once/s2_2019_b0214/B04.tif")]
    assert statuses[0] == 503 and 206 in statuses


@pytest.mark.parametrize("fault", ["cut", "length"])
def test_short_bodies_are_never_a_silently_short_read(servers, grid, fault) -> None:
    """A connection cut mid-body, or a Content-Length larger than the body: GDAL asks again for the
    missing bytes; the window is exact, or the read fails (never partly zero)."""
    files = servers["files"]
    try:
        out = read_window(files.url("s2_2019_b0214/B04.tif", fault), grid, settings=FAST)
    except Exception as err:
        assert "B04.tif" in str(err)
    else:
        np.testing.assert_array_equal(out, _truth(servers))


def test_timeouts_and_truncated_files_raise_after_retries(servers, grid) -> None:
    from sen2naip_hub.errors import UnreadableFileError

    files = servers["files"]
    slow = re.escape("slow/s2_2019_b0214/B04.tif: unreadable after 3 attempts")
    with pytest.raises(UnreadableFileError, match=slow):
        read_window(files.url("s2_2019_b0214/B04.tif", "slow"), grid, settings=FAST)
    truncated = re.escape("truncated_B08.tif: unreadable after 3 attempts")
    with pytest.raises(UnreadableFileError, match=truncated):
        read_window(files.url("truncated_B08.tif"), grid, settings=FAST)


# ------------------------------------------------------------------------------------- config, signing
def test_config_of_stac_api_sources(servers, tmp_path) -> None:
    base = _config(servers, tmp_path / "x")
    config = from_dict(base)
    assert config.sources.naip.asset == "image" and config.sources.s2.scl == "SCL"
    no_bbox = {**base, "sources": {**base["sources"], "bbox": None}}
    with pytest.raises(ConfigError, match=re.escape("needs sources.bbox")):
        from_dict(no_bbox)
    bad = {**base, "sources": {**base["sources"], "bbox": [10, 47, 9, 48]}}
    with pytest.raises(ConfigError, match="bbox"):
        from_dict(bad)
    both = {**base, "sources": {**base["sources"], "naip": {"stac_api": "http://x", "folder": "/tmp"}}}
    with pytest.raises(ConfigError, match="not folder and stac_api"):
        from_dict(both)
    bands = {**base, "sources": {**base["sources"], "s2": {"stac_api": "http://x", "bands": {"B04": "red"}}}}
    with pytest.raises(ConfigError, match="bands must map exactly B04, B03, B02, B08"):
        from_dict(bands)


def test_signing_is_off_by_default_and_redacts_tokens() -> None:
    assert make_modifier("none") is None
    text = redact("GET https://x.blob.core.windows.net/c/B04.tif?st=1&sig=SECRET failed")
    assert "SECRET" not in text and "B04.tif?<redacted>" in text
    try:
        import planetary_computer  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="planetary-computer"):
            make_modifier("planetary_computer")
    else:
        assert callable(make_modifier("planetary_computer"))


def test_the_hr_pixel_size_is_part_of_the_stac_api_sources_fingerprint(servers, tmp_path) -> None:
    from dataset_builder.core.fingerprint import stage_fingerprints

    def sources_print(config: dict, hr: float) -> dict:
        return stage_fingerprints(from_dict(config | {"cross_sensor": {"hr_resolution_m": hr}}))["sources"]

    remote = _config(servers, tmp_path / "x")
    assert sources_print(remote, 2.5) != sources_print(remote, 2.0)  # the cached windows differ
    folder = {"out": str(tmp_path / "y"), "sources": {"naip": {"folder": str(tmp_path)}}}
    assert sources_print(folder, 2.5) == sources_print(folder, 2.0)
