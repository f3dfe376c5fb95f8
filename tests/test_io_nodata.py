"""Where nodata comes from: the nodata tag, an internal (per-dataset) mask or an explicit value; never
from an alpha band (NAIP's 4th band is NIR, even when a TIFF's ExtraSamples calls it alpha)."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from conftest import write_geotiff
from rasterio.windows import Window

from sen2naip_hub.cli import main
from sen2naip_hub.errors import InvalidImageError
from sen2naip_hub.io import read_raster, read_stored_windows
from sen2naip_hub.models import Degradation, HarmonizationModel


def _naip(nir_zero_at=(2, 2)) -> np.ndarray:
    data = np.random.default_rng(0).integers(1, 255, (4, 16, 16), dtype=np.uint8)
    data[3][nir_zero_at] = 0  # a dark NIR pixel: valid
    data[:, 10, 10] = 0  # all bands zero
    return data


def _rgb_alpha(path, data, **profile):
    """A GeoTIFF GDAL reads as RGB + alpha (photometric RGB, ExtraSamples = alpha)."""
    path = write_geotiff(path, data, photometric="RGB", alpha="YES", **profile)
    with rasterio.open(path) as src:
        assert src.colorinterp[3] == rasterio.enums.ColorInterp.alpha
    return path


def test_alpha_band_is_nir_not_a_mask(tmp_path):
    path = _rgb_alpha(tmp_path / "alpha.tif", _naip())
    raster = read_raster(path)
    assert np.isfinite(raster.data).all()
    assert raster.data[3, 2, 2] == 0.0 and raster.data[:, 10, 10].tolist() == [0.0] * 4


def test_alpha_band_with_a_nodata_tag_uses_the_tag(tmp_path):
    path = _rgb_alpha(tmp_path / "alpha.tif", _naip(), nodata=0)
    raster = read_raster(path)
    assert np.isnan(raster.data[:, 10, 10]).all() and raster.data[3, 2, 2] == 0.0
    assert int(np.isnan(raster.data[0]).sum()) == 1


def test_internal_mask_is_nodata(tmp_path):
    data = _naip()
    path = tmp_path / "masked.tif"
    profile = dict(driver="GTiff", count=4, height=16, width=16, dtype="uint8")
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        mask = np.full((16, 16), 255, np.uint8)
        mask[:4, :4] = 0
        dst.write_mask(mask)
    raster = read_raster(path)
    assert np.isnan(raster.data[:, :4, :4]).all()
    assert np.isfinite(raster.data[:, 4:, :]).all() and raster.data[:, 10, 10].tolist() == [0.0] * 4
    masked, whole = read_stored_windows(path, [Window(0, 0, 8, 8), Window(8, 8, 8, 8)])
    assert masked.valid is not None and not masked.valid[:4, :4].any() and masked.valid[4:, 4:].all()
    assert whole.valid is None  # every pixel of the window has data, as with a nodata tag


def test_explicit_nodata_overrides_the_file(tmp_path):
    data = _naip()
    data[:, 5, 6] = 7
    path = _rgb_alpha(tmp_path / "alpha.tif", data, nodata=0)
    raster = read_raster(path, nodata=7)
    assert np.isnan(raster.data[:, 5, 6]).all() and int(np.isnan(raster.data[0]).sum()) == 1
    assert raster.data[:, 10, 10].tolist() == [0.0] * 4
    with pytest.raises(InvalidImageError, match=r"nodata 300.*uint8"):
        read_raster(path, nodata=300)


def test_float_file_with_a_nodata_value_outside_0_1(tmp_path):
    data = np.full((4, 8, 8), 0.25, np.float32)
    data[:, 0, 0] = -9999
    raster = read_raster(write_geotiff(tmp_path / "f.tif", data, nodata=-9999))
    assert np.isnan(raster.data[:, 0, 0]).all() and np.isfinite(raster.data[:, 1:]).all()


def test_cli_nodata_option(tmp_path, capfd):
    model = tmp_path / "model"
    Degradation(harmonization=HarmonizationModel(mode="none")).save_pretrained(model)
    data = np.full((4, 64, 64), 100, np.uint8)
    data[:, :16, :16] = 9
    path = _rgb_alpha(tmp_path / "in.tif", data)
    out = tmp_path / "lr.tif"
    args = ["degrade", str(path), str(out), "--model", str(model), "--no-noise"]
    assert main([*args, "--nodata", "9"]) == 0
    with rasterio.open(out) as lr:
        nodata = lr.read(1) == lr.nodata
    assert nodata[:4, :4].all() and not nodata[8:, 8:].any()
    assert main([*args]) == 0
    with rasterio.open(out) as lr:
        assert not (lr.read(1) == lr.nodata).any()
