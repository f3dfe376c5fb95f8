"""One reflectance → DN rule for every writer: nodata (NaN) → 0, valid reflectance → DN >= 1."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from sen2naip_hub.io import Raster, write_raster
from sen2naip_hub.sensors import NAIP, SENTINEL2, reflectance_to_naip, reflectance_to_s2, s2_to_reflectance

NAN = float("nan")


def test_reflectance_zero_and_nan_are_distinguishable_in_s2_dn():
    values = np.array([NAN, 0.0, 0.00004, 0.00005, 0.0001, 0.5, 1.0, 7.0, -0.2, np.inf])
    assert reflectance_to_s2(values).tolist() == [0, 1, 1, 1, 1, 5000, 10000, 65535, 1, 0]


def test_naip_dn_follows_the_same_rule():
    assert reflectance_to_naip(np.array([NAN, 0.0, 0.5, 1.0, 2.0])).tolist() == [0, 1, 128, 255, 255]


def test_valid_dn_round_trip():
    dn = np.array([1, 2, 9999, 10000, 65535], dtype=np.uint16)
    assert np.array_equal(reflectance_to_s2(s2_to_reflectance(dn)), dn)


@pytest.mark.parametrize("sensor", [SENTINEL2, NAIP])
def test_write_raster_and_the_array_functions_write_the_same_dn(tmp_path, sensor):
    rng = np.random.default_rng(0)
    data = rng.random((4, 8, 8)).astype(np.float32)
    data[:, 0, :3] = 0.0  # dark, valid
    data[:, 1, 0] = NAN  # nodata pixel
    data[2, 1, 1] = NAN  # one band missing: the whole pixel is nodata in the file
    raster = Raster(data, None, rasterio.Affine.identity(), ("a",) * 4)
    path = write_raster(tmp_path / "x.tif", raster, sensor)
    with rasterio.open(path) as src:
        written = src.read()
    convert = reflectance_to_s2 if sensor is SENTINEL2 else reflectance_to_naip
    expected = convert(np.where(np.isfinite(data).all(axis=0), data, NAN))
    assert np.array_equal(written, expected)
    assert (written[:, 0, :3] == 1).all() and (written[:, 1, :2] == 0).all()
