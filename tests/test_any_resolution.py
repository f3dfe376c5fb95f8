"""``sen2naip degrade`` on any input resolution, band order and DN scale: finer than 2.5 m is area-averaged
to 2.5 m first (one line says so), coarser is refused unless ``--allow-coarse``; ``--bands`` and
``--scale`` read other HR sensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from sen2naip_hub.cli import main
from sen2naip_hub.models import Degradation, HarmonizationModel

CRS_UTM = CRS.from_epsg(32614)
ORIGIN = (500_000.0, 5_200_000.0)
EXTENT_M = (300.0, 240.0)  # width, height: whole 10 m pixels at every resolution used here


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("res") / "model"
    Degradation(harmonization=HarmonizationModel(mode="none")).save_pretrained(folder)
    return folder


def _write(path: Path, resolution: float, data=None, bands: int = 4, dtype="uint8", **profile) -> Path:
    width, height = round(EXTENT_M[0] / resolution), round(EXTENT_M[1] / resolution)
    if data is None:
        y, x = np.mgrid[0:height, 0:width] * resolution  # the same smooth scene at every resolution
        scene = 100 + 40 * np.sin(x / 37.0) + 30 * np.cos(y / 23.0)
        data = np.stack([scene + 10 * b for b in range(bands)]).astype(dtype)
    transform = Affine(resolution, 0, ORIGIN[0], 0, -resolution, ORIGIN[1])
    with rasterio.open(
        path, "w", driver="GTiff", count=data.shape[0], height=height, width=width, dtype=data.dtype,
        crs=CRS_UTM, transform=transform, **profile,
    ) as dst:  # fmt: skip
        dst.write(data)
    return path


def _degrade(capfd, model: Path, *args) -> tuple[int, list[str], list[str]]:
    capfd.readouterr()
    code = main(["degrade", *map(str, args), "--model", str(model), "--no-noise"])
    captured = capfd.readouterr()
    return code, captured.out.strip().splitlines(), captured.err.strip().splitlines()


def test_finer_inputs_give_10_m_pixels_over_the_same_bounds(tmp_path, model, capfd):
    outputs = {}
    for resolution in (0.6, 1.0, 2.5):
        source = _write(tmp_path / f"in_{resolution}.tif", resolution)
        out = tmp_path / f"lr_{resolution}.tif"
        code, lines, err = _degrade(capfd, model, source, out)
        assert code == 0, err
        resampled = [line for line in lines if "area averaging" in line]
        assert len(resampled) == (resolution != 2.5), lines
        with rasterio.open(out) as lr:
            assert lr.res == (10.0, 10.0) and lr.crs == CRS_UTM
            assert lr.bounds == (ORIGIN[0], ORIGIN[1] - EXTENT_M[1], ORIGIN[0] + EXTENT_M[0], ORIGIN[1])
            outputs[resolution] = lr.read().astype(float)
    assert outputs[0.6].shape == outputs[1.0].shape == (4, 24, 30)
    # the same scene sampled finer: the 10 m outputs agree closely (up to the 8-bit rounding of the input)
    assert np.abs(outputs[0.6] - outputs[1.0]).mean() < 0.01 * outputs[1.0].mean()


def test_coarser_input_is_refused_unless_allowed(tmp_path, model, capfd):
    source, out = _write(tmp_path / "in.tif", 5.0), tmp_path / "lr.tif"
    code, _, err = _degrade(capfd, model, source, out)
    assert code == 1 and len(err) == 1 and "--allow-coarse" in err[0] and "5 m" in err[0]
    assert not out.exists()
    code, lines, _ = _degrade(capfd, model, source, out, "--allow-coarse")
    assert code == 0 and any("20 m" in line for line in lines)
    with rasterio.open(out) as lr:
        assert lr.res == (20.0, 20.0)


def test_hr_resolution_option(tmp_path, model, capfd):
    source, out = _write(tmp_path / "in.tif", 1.0), tmp_path / "lr.tif"
    assert _degrade(capfd, model, source, out, "--hr-resolution", "5")[0] == 0
    with rasterio.open(out) as lr:
        assert lr.res == (20.0, 20.0) and lr.width == 15


def test_nodata_of_a_fine_input_covers_the_hr_pixels_it_touches(tmp_path, model, capfd):
    data = np.full((4, 240, 300), 90, np.uint8)
    data[:, 100:120, 100:120] = 0  # 20 m × 20 m hole at 1 m
    source, out = _write(tmp_path / "in.tif", 1.0, data, nodata=0), tmp_path / "lr.tif"
    assert _degrade(capfd, model, source, out)[0] == 0
    with rasterio.open(out) as lr:
        nodata = lr.read(1) == 0
    assert nodata[10:12, 10:12].all() and not nodata[:5].any() and not nodata[16:].any()


def test_band_order_and_dn_scale_of_another_sensor(tmp_path, model, capfd):
    bands = np.stack([np.full((200, 300), 1000 * (b + 1), np.uint16) for b in range(5)])  # 12-bit DN
    source = _write(tmp_path / "in.tif", 2.5, bands[:, :96, :120], dtype="uint16")
    out = tmp_path / "lr.tif"
    code, _, err = _degrade(capfd, model, source, out)
    assert code == 1 and "expected 4 bands" in err[0]
    code, _, err = _degrade(capfd, model, source, out, "--bands", "3,2,1,5", "--scale", "0.0001")
    assert code == 0, err
    with rasterio.open(out) as lr:
        means = lr.read().reshape(4, -1).mean(axis=1)
    assert np.allclose(means, [3000, 2000, 1000, 5000], atol=2)
    for bad, message in (("1,2,3", "4 band numbers"), ("1,2,3,9", "band 9"), ("a,b,c,d", "band numbers")):
        code, _, err = _degrade(capfd, model, source, out, "--bands", bad, "--scale", "0.0001")
        assert code == 1 and len(err) == 1 and message in err[0], err
    code, _, err = _degrade(capfd, model, source, out, "--bands", "1,2,3,4", "--scale", "0.001")
    assert code == 1 and len(err) == 1 and "[0, 1]" in err[0], err
