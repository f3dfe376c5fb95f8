"""The cross-sensor pipeline on simulated pairs made from the real NAIP in ../shared/sample.

No co-located NAIP + Sentinel-2 pair exists offline: the LR files are simulated
(dataset_builder.cross_sensor.simulate) with a known sub-pixel shift, a known gain/offset, and for the bad
candidates a shift beyond the aligner's bound (QA1) or strong spectral noise (QA2). Corrupt,
truncated and wrong-band files are written beside them and must become rejections.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
import torch
import torch.nn.functional as F
from conftest import SAMPLE_DIR
from rasterio.windows import Window

from dataset_builder.cross_sensor.pairs import (
    CrossSensorConfig,
    CrossSensorResult,
    build_cross_sensor_pairs,
    cloud_fraction,
    roi_grid,
    screen,
)
from dataset_builder.cross_sensor.qa import check_qa1, check_qa2, spectral_angle
from dataset_builder.cross_sensor.simulate import SimulatedCandidate, simulate_candidates
from dataset_builder.sources.acquisitions import acquisitions_from_folder, pair_acquisitions, parse_date
from dataset_builder.sources.stac_catalog import acquisitions_from_stac
from sen2naip_hub.errors import InvalidImageError
from sen2naip_hub.sensors import NAIP, SENTINEL2

SAMPLE = SAMPLE_DIR
NAIP_DIR = SAMPLE / "naip"
#: 256 HR px (64 LR px) ROIs: six per sample NAIP, fast enough for CI. SEN2NAIP uses 484.
ROI = 256
SEED = 0
#: Test degradation: Gaussian blur (σ in HR pixels) then 4 × 4 mean (a stand-in for the team's model).
BLUR_SIGMA_HR_PX = 1.5

pytestmark = pytest.mark.skipif(not NAIP_DIR.is_dir(), reason=f"sample NAIP not found at {NAIP_DIR}")


def blur_downsample(x: torch.Tensor, sigma: float = BLUR_SIGMA_HR_PX, scale: int = 4) -> torch.Tensor:
    """``(B, C, H, W)`` → ``(B, C, H/scale, W/scale)``: separable Gaussian blur (reflect pad), mean pool."""
    radius = int(3 * sigma)
    taps = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = x.shape[1]
    x = F.pad(x, (radius,) * 4, mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    x = F.conv2d(x, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)
    return F.avg_pool2d(x, scale)


def _write_bad_files(s2_dir: Path, naip_dir: Path, good: SimulatedCandidate) -> dict[str, str]:
    """Corrupt inputs dated like ``good``'s NAIP; returns {file stem: expected reason prefix}."""
    date = f"{parse_date(good.naip_path):%Y%m%d}"
    content = good.s2_path.read_bytes()
    (s2_dir / f"S2BAD_{date}_truncated.tif").write_bytes(content[: len(content) // 2])
    (s2_dir / f"S2BAD_{date}_garbage.tif").write_bytes(np.random.default_rng(SEED).bytes(4096))
    with rasterio.open(good.s2_path) as src:
        profile = src.profile | {"driver": "GTiff"}
        data = src.read()
    with rasterio.open(s2_dir / f"S2BAD_{date}_threeband.tif", "w", **(profile | {"count": 3})) as dst:
        dst.write(data[:3])
    with rasterio.open(s2_dir / f"S2BAD_{date}_wrongorder.tif", "w", **profile) as dst:
        dst.write(data[[2, 1, 0, 3]])
        for index, name in enumerate(("B02", "B03", "B04", "B08"), start=1):
            dst.set_band_description(index, name)
    naip_bytes = good.naip_path.read_bytes()
    (naip_dir / f"m_bad_{date}.tif").write_bytes(naip_bytes[: len(naip_bytes) // 3])
    return {
        f"S2BAD_{date}_truncated": "unreadable:",
        f"S2BAD_{date}_garbage": "unreadable:",
        f"S2BAD_{date}_threeband": "invalid:",
        f"S2BAD_{date}_wrongorder": "invalid:",
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Simulate 4 candidates + corrupt files, pair them by date, run the pipeline once."""
    root = tmp_path_factory.mktemp("cross_sensor")
    s2_dir, bad_naip_dir = root / "s2", root / "naip_bad"
    bad_naip_dir.mkdir()
    naip_paths = sorted(NAIP_DIR.glob("*.tif"))[:4]
    candidates = simulate_candidates(naip_paths, s2_dir, blur_downsample, seed=SEED)
    bad = _write_bad_files(s2_dir, bad_naip_dir, candidates[0])
    naip = acquisitions_from_folder(NAIP_DIR, NAIP) + acquisitions_from_folder(bad_naip_dir, NAIP)
    s2 = acquisitions_from_folder(s2_dir, SENTINEL2)
    pairs = pair_acquisitions(naip, s2, max_days=1)
    config = CrossSensorConfig(roi_size=ROI, hr_resolution_m=None)
    result = build_cross_sensor_pairs(pairs, blur_downsample, source="simulated", config=config)
    return {"candidates": candidates, "bad": bad, "pairs": pairs, "result": result, "s2_dir": s2_dir}


def _pair_of(candidate_id: str) -> str:
    """``<naip>__<s2>[__r..._c...]`` → ``<s2>`` stem."""
    return candidate_id.split("__")[1]


def _naip_of(candidate_id: str) -> str:
    return candidate_id.split("__")[0]


def _rois_per_naip() -> int:
    with rasterio.open(sorted(NAIP_DIR.glob("*.tif"))[0]) as src:
        return len(roi_grid(src.height, src.width, ROI))


def test_qa_keeps_good_and_rejects_exactly_the_bad_candidates(run: dict) -> None:
    result: CrossSensorResult = run["result"]
    by_kind = {c.s2_path.stem: c.kind for c in run["candidates"]}
    kept = {_pair_of(r.roi_id) for r in result.records}
    assert kept == {stem for stem, kind in by_kind.items() if kind == "good"}
    assert len(result.records) == 2 * _rois_per_naip()
    reasons: dict[tuple[str, str], set[str]] = {}
    for rejection in result.rejections:
        key = (_naip_of(rejection.candidate_id), _pair_of(rejection.candidate_id))
        reasons.setdefault(key, set()).add(rejection.reason.split(":")[0])
    naip_of = {c.s2_path.stem: c.naip_path.stem for c in run["candidates"]}
    expected = {
        (naip_of[stem], stem): {kind.split("_")[0]} for stem, kind in by_kind.items() if kind != "good"
    }
    good_naip = run["candidates"][0].naip_path.stem
    expected |= {(good_naip, stem): {prefix.rstrip(":")} for stem, prefix in run["bad"].items()}
    real = {key: value for key, value in reasons.items() if not key[0].startswith("m_bad_")}
    assert real == expected
    # The truncated NAIP is rejected with every Sentinel-2 of its date, good or bad, and never kept.
    from_bad_naip = {key: value for key, value in reasons.items() if key[0].startswith("m_bad_")}
    assert {key[1] for key in from_bad_naip} == {run["candidates"][0].s2_path.stem, *run["bad"]}
    assert from_bad_naip[(next(iter(from_bad_naip))[0], run["candidates"][0].s2_path.stem)] == {"unreadable"}
    assert all(value <= {"unreadable", "invalid"} for value in from_bad_naip.values())


def test_qa_rejections_name_the_measured_value(run: dict) -> None:
    qa_rejections = [r for r in run["result"].rejections if r.reason.startswith(("qa1", "qa2"))]
    assert len(qa_rejections) == 2 * _rois_per_naip()
    for rejection in qa_rejections:
        if rejection.reason.startswith("qa1"):
            assert rejection.reason.endswith("LR px > 1.0")
            assert float(rejection.reason.split()[2]) > 1.0
        else:
            assert rejection.reason.endswith("° > 2.0°")
            assert float(rejection.reason.split()[3].rstrip("°")) > 2.0


def test_kept_records_recover_the_true_shift_and_pass_qa(run: dict) -> None:
    truth = {}
    for sidecar in run["s2_dir"].glob("S2SIM_*.json"):
        meta = json.loads(sidecar.read_text())
        assert meta["simulated"] is True
        truth[sidecar.stem] = (meta["shift_lr_px"]["dy"], meta["shift_lr_px"]["dx"])
    for record in run["result"].records:
        dy, dx = truth[_pair_of(record.roi_id)]
        assert record.shift_y == pytest.approx(dy, abs=0.1)
        assert record.shift_x == pytest.approx(dx, abs=0.1)
        assert record.qa1 <= 1.0 and record.qa2 <= 2.0


def test_kept_records_have_the_sen2naip_geometry(run: dict) -> None:
    for record in run["result"].records:
        assert record.hr.shape == (4, ROI, ROI) and record.lr.shape == (4, ROI // 4, ROI // 4)
        assert record.hr.dtype == np.uint16 and record.lr.dtype == np.uint16
        hr_t, lr_t = record.hr_transform, record.lr_transform
        assert (lr_t[0], lr_t[3], lr_t[1], lr_t[5]) == (hr_t[0], hr_t[3], 4 * hr_t[1], 4 * hr_t[5])
        assert record.source == "simulated" and record.degradation_model is None
        assert record.hr_date == record.lr_date
        # HR now has S2-like radiometry: its band means sit near the LR's.
        hr_mean = record.hr.reshape(4, -1).mean(axis=1)
        lr_mean = record.lr.reshape(4, -1).mean(axis=1)
        np.testing.assert_allclose(hr_mean, lr_mean, rtol=0.05)


def test_corrupt_truncated_and_wrong_band_inputs_are_rejections(run: dict) -> None:
    rejections = run["result"].rejections
    for stem, prefix in run["bad"].items():
        mine = [r for r in rejections if _pair_of(r.candidate_id) == stem and "m_bad_" not in r.candidate_id]
        assert mine, f"{stem} produced no rejection"
        assert all(r.reason.startswith(prefix) for r in mine), mine
    wrong_order = next(r for r in rejections if "wrongorder" in r.candidate_id)
    assert "expected bands B04, B03, B02, B08" in wrong_order.reason
    three = next(r for r in rejections if "threeband" in r.candidate_id)
    assert "found 3" in three.reason
    bad_naip = [r for r in rejections if r.candidate_id.startswith("m_bad_")]
    assert bad_naip and all(r.reason.startswith(("unreadable:", "invalid:")) for r in bad_naip)
    with_good_s2 = [r for r in bad_naip if "S2SIM" in r.candidate_id]
    assert with_good_s2 and all(
        "m_bad_" in r.reason and "corrupt or truncated" in r.reason for r in with_good_s2
    )


def test_hr_pixel_size_is_checked_by_default(run: dict) -> None:
    naip, s2 = run["pairs"][0]
    result = build_cross_sensor_pairs([(naip, s2)], blur_downsample, config=CrossSensorConfig(roi_size=ROI))
    assert not result.records
    assert result.rejections[0].reason.startswith("invalid:")
    assert "HR pixel is 5 m, expected 2.5 m" in result.rejections[0].reason


def test_pairing_by_date_window(run: dict) -> None:
    pairs = run["pairs"]
    for naip, s2 in pairs:
        assert abs((naip.date - s2.date).days) <= 1
    sim_pairs = {(n.id, s.id) for n, s in pairs if s.id.startswith("S2SIM") and not n.id.startswith("m_bad")}
    assert sim_pairs == {(c.naip_path.stem, c.s2_path.stem) for c in run["candidates"]}
    naip = acquisitions_from_folder(NAIP_DIR, NAIP)
    assert [a.date for a in naip][:2] == [dt.date(2009, 8, 18), dt.date(2010, 6, 29)]
    s2 = [a for a in acquisitions_from_folder(run["s2_dir"], SENTINEL2) if a.id.startswith("S2SIM")]
    assert pair_acquisitions(naip, s2, max_days=0) and len(pair_acquisitions(naip, s2, max_days=0)) == 4
    assert pair_acquisitions(naip[:1], s2[1:], max_days=300) == []
    assert len(pair_acquisitions(naip[:1], s2, max_days=400)) == 2  # 2009-08-18 and 2010-06-29


def test_dates_from_sidecar_and_missing_dates(tmp_path: Path, run: dict) -> None:
    source = next(run["s2_dir"].glob("S2SIM_*good.tif"))
    undated = tmp_path / "scene.tif"
    undated.write_bytes(source.read_bytes())
    with pytest.raises(InvalidImageError, match="no acquisition date"):
        parse_date(undated)
    (tmp_path / "scene.json").write_text(json.dumps({"datetime": "2021-07-04T17:02:11Z"}))
    assert parse_date(undated) == dt.date(2021, 7, 4)
    [acq] = acquisitions_from_folder(tmp_path, SENTINEL2)
    assert acq.crs is not None and acq.bounds is not None


def test_static_stac_catalog(tmp_path: Path, run: dict) -> None:
    catalog = pystac.Catalog(id="sim-s2", description="simulated Sentinel-2 (test)")
    for candidate in run["candidates"]:
        date = parse_date(candidate.naip_path)
        item = pystac.Item(
            id=candidate.s2_path.stem,
            geometry=None,
            bbox=None,
            datetime=dt.datetime(date.year, date.month, date.day, 17, tzinfo=dt.UTC),
            properties={},
        )
        item.add_asset("visual", pystac.Asset(str(candidate.s2_path), media_type=pystac.MediaType.COG))
        catalog.add_item(item)
    catalog.normalize_and_save(str(tmp_path / "stac"), catalog_type=pystac.CatalogType.SELF_CONTAINED)
    acquisitions = acquisitions_from_stac(tmp_path / "stac" / "catalog.json", SENTINEL2)
    assert [a.path for a in acquisitions] == [c.s2_path for c in run["candidates"]]
    assert [a.date for a in acquisitions] == [parse_date(c.naip_path) for c in run["candidates"]]
    with pytest.raises(InvalidImageError, match="no asset 'B04'"):
        acquisitions_from_stac(tmp_path / "stac" / "catalog.json", SENTINEL2, asset_key="B04")


def test_screening_reasons() -> None:
    hr = np.full((4, 8, 8), 0.1, dtype=np.float32)
    lr = np.full((4, 10, 10), 0.05, dtype=np.float32)
    assert screen(hr, lr) is None
    holed = lr.copy()
    holed[:, :3, :] = np.nan
    holed[:, 3, :7] = np.nan
    assert screen(hr, holed) == "nodata 37% > 10%"
    cloudy = lr.copy()
    cloudy[:, :2, :] = 0.4
    assert screen(hr, cloudy) == "cloud 20% > 5%"


def test_cloud_screen_on_real_l1c_dates() -> None:
    scenes = np.load(SAMPLE / "s2" / "REFERENCE_SCENES.npy")
    fractions = [cloud_fraction(np.moveaxis(scenes[d][..., [3, 2, 1, 7]], -1, 0)) for d in range(5)]
    assert fractions[0] > 0.5  # date 0: cloudy
    assert fractions[2:] == [0.0, 0.0, 0.0]  # dates 2-4: clear


def test_qa_helpers() -> None:
    a = np.random.default_rng(SEED).uniform(0.05, 0.4, size=(4, 16, 16))
    assert spectral_angle(a, a) == pytest.approx(0.0, abs=1e-6)
    assert spectral_angle(a, 3 * a) == pytest.approx(0.0, abs=1e-6)  # a gain changes no angle
    swapped = a[[3, 1, 2, 0]]
    assert spectral_angle(swapped, a) > 2.0
    assert check_qa1(0.99) is None and check_qa1(1.43) == "qa1: residual 1.43 LR px > 1.0"
    assert check_qa2(1.9) is None and check_qa2(float("nan")).startswith("qa2:")


def test_roi_grid_is_centred_and_on_the_lr_grid() -> None:
    windows = roi_grid(724, 934, 484)
    assert windows == [Window(224, 120, 484, 484)]
    assert all(w.row_off % 4 == 0 and w.col_off % 4 == 0 for w in roi_grid(723, 934, 256, stride=128))
    with pytest.raises(ValueError, match="multiples of scale"):
        CrossSensorConfig(roi_size=482)


def test_a_degrade_of_the_wrong_shape_stops_the_run(run: dict) -> None:
    good = run["candidates"][0]
    pair = next((n, s) for n, s in run["pairs"] if s.path == good.s2_path and n.path == good.naip_path)
    config = CrossSensorConfig(roi_size=ROI, hr_resolution_m=None)
    with pytest.raises(ValueError, match="degrade returned shape"):
        build_cross_sensor_pairs([pair], lambda x: F.avg_pool2d(x, 2), config=config)
