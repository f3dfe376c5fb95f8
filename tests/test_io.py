"""sensors and io: scaling, georeferencing kept, COG output, windowed reads, bad files."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from conftest import NAIP_FILES, write_geotiff
from rasterio.windows import Window

from sen2naip_hub.errors import InvalidImageError, UnreadableFileError
from sen2naip_hub.io import Raster, lr_transform, read_raster, write_raster
from sen2naip_hub.sensors import NAIP, SENTINEL2, naip_to_reflectance, reflectance_to_s2, s2_to_reflectance


def test_scaling_round_trips():
    dn = np.arange(256, dtype=np.uint8)
    assert np.allclose(naip_to_reflectance(dn) * 255, dn)
    s2 = np.array([1, 2, 9999, 10000], dtype=np.uint16)  # DN 0 is nodata: valid reflectance gives >= 1
    assert np.array_equal(reflectance_to_s2(s2_to_reflectance(s2)), s2)
    with pytest.raises(InvalidImageError, match="integer"):
        naip_to_reflectance(np.zeros(3, dtype=np.float32))


def test_read_real_naip_keeps_georeferencing(sample_dir):
    raster = read_raster(NAIP_FILES[0])
    with rasterio.open(NAIP_FILES[0]) as src:
        assert raster.crs == src.crs and raster.transform == src.transform
        assert np.allclose(raster.data * 255, src.read().astype(np.float32), atol=1e-3)
    assert raster.band_names == NAIP.all_bands and raster.data.dtype == np.float32


def test_windowed_read_equals_slice_of_full_read(sample_dir):
    full = read_raster(NAIP_FILES[0])
    part = read_raster(NAIP_FILES[0], window=Window(100, 50, 64, 32))
    assert np.array_equal(part.data, full.data[:, 50:82, 100:164])
    assert part.transform == full.transform * Affine.translation(100, 50)


def test_write_s2_cog_with_band_names_nodata_and_lr_grid(tmp_path, sample_dir):
    hr = read_raster(NAIP_FILES[0], window=Window(0, 0, 400, 400))
    lr = Raster(
        data=hr.data[:, ::4, ::4].copy(),
        crs=hr.crs,
        transform=lr_transform(hr.transform),
        band_names=SENTINEL2.all_bands,
    )
    lr.data[:, 0, 0] = np.nan
    path = write_raster(tmp_path / "lr.tif", lr, SENTINEL2)
    with rasterio.open(path) as src:
        assert src.descriptions == ("B04", "B03", "B02", "B08")
        assert src.dtypes[0] == "uint16" and src.nodata == 0
        assert src.res == (hr.transform.a * 4, -hr.transform.e * 4)
        assert src.bounds.left == pytest.approx(hr.transform.c) and src.bounds.top == pytest.approx(
            hr.transform.f
        )
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert (src.read()[:, 0, 0] == 0).all() and (src.read()[:, 1:, 1:] > 0).all()
    back = read_raster(path, SENTINEL2)
    assert np.isnan(back.data[:, 0, 0]).all()
    assert np.allclose(back.data[:, 1:, 1:], lr.data[:, 1:, 1:], atol=0.5e-4 + 1e-7)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


@pytest.mark.parametrize("bands", [1, 3])
def test_wrong_band_count(tmp_path, bands):
    path = write_geotiff(tmp_path / "x.tif", np.ones((bands, 8, 8), dtype=np.uint8))
    with pytest.raises(InvalidImageError, match=f"expected 4 bands .* found {bands}"):
        read_raster(path)


def test_truncated_and_non_tiff_files(tmp_path, sample_dir):
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(NAIP_FILES[0].read_bytes()[:40_000])
    with pytest.raises(UnreadableFileError, match=r"truncated\.tif"):
        read_raster(truncated)
    text = tmp_path / "notes.tif"
    text.write_text("not an image")
    with pytest.raises(UnreadableFileError, match="not a readable GeoTIFF"):
        read_raster(text)
    png = tmp_path / "image.png"
    with rasterio.open(png, "w", driver="PNG", count=4, height=8, width=8, dtype="uint8") as dst:
        dst.write(np.ones((4, 8, 8), dtype=np.uint8))
    with pytest.raises(UnreadableFileError, match="expected a GeoTIFF, found a PNG"):
        read_raster(png)
    with pytest.raises(UnreadableFileError, match="no such file"):
        read_raster(tmp_path / "missing.tif")


def test_all_nodata_and_out_of_range_float(tmp_path):
    nodata = write_geotiff(tmp_path / "nodata.tif", np.zeros((4, 8, 8), dtype=np.uint8), nodata=0)
    with pytest.raises(InvalidImageError, match="every pixel is nodata"):
        read_raster(nodata)
    bright = write_geotiff(tmp_path / "float.tif", np.full((4, 8, 8), 1.7, dtype=np.float32))
    with pytest.raises(InvalidImageError, match=r"\[0, 1\].*1\.7"):
        read_raster(bright)


def test_integer_dtype_must_fit_the_sensor(tmp_path):
    """A uint16 (×10000) file read as NAIP (uint8, ×255) would be mis-scaled: refuse it."""
    path = write_geotiff(tmp_path / "hr16.tif", np.full((4, 8, 8), 1200, dtype=np.uint16))
    with pytest.raises(InvalidImageError, match=r"NAIP digital numbers are uint8.*found uint16"):
        read_raster(path, NAIP)
    assert np.allclose(read_raster(path, SENTINEL2).data, 0.12)
