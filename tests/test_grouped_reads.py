"""Reading many windows of one image through one open file gives what one read per window gives."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from conftest import write_geotiff
from rasterio.windows import Window

from dataset_builder.core import tiling
from dataset_builder.synthetic.reads import read_hr_s2
from sen2naip_hub.errors import AllNodataError
from sen2naip_hub.io import ALL_NODATA, read_raster, read_windows
from sen2naip_hub.sensors import reflectance_to_s2

SIZE = 8


def _image(tmp_path, nodata_block: bool = True):
    """A 4-band uint8 NAIP-like image, 3 × 4 tiles of SIZE px; one tile all nodata, one constant."""
    data = np.random.default_rng(3).integers(1, 255, (4, 3 * SIZE, 4 * SIZE), dtype=np.uint8)
    if nodata_block:
        data[:, SIZE : 2 * SIZE, :SIZE] = 0  # tile (1, 0): every pixel nodata
    data[:, :SIZE, 3 * SIZE :] = 77  # tile (0, 3): constant, blank
    transform = Affine(2.5, 0, 300_000.0, 0, -2.5, 5_000_000.0)
    return write_geotiff(tmp_path / "m_1_20200601.tif", data, nodata=0, crs="EPSG:26914", transform=transform)


def test_read_windows_equals_one_read_raster_per_window(tmp_path) -> None:
    path = _image(tmp_path)
    windows = [Window(c, r, SIZE, SIZE) for r in (0, SIZE) for c in (SIZE, 2 * SIZE, 3 * SIZE)]
    windows.append(Window(3, 5, 11, 6))  # any window, not only grid tiles
    for window, raster in zip(windows, read_windows(path, windows), strict=True):
        one = read_raster(path, window=window)
        np.testing.assert_array_equal(raster.data, one.data)
        assert raster.transform == one.transform and raster.crs == one.crs
        assert raster.band_names == one.band_names


def test_a_window_without_data_comes_back_nan_where_read_raster_raises(tmp_path) -> None:
    path = _image(tmp_path)
    window = Window(0, SIZE, SIZE, SIZE)
    (raster,) = read_windows(path, [window])
    assert np.isnan(raster.data).all()
    with pytest.raises(AllNodataError, match=ALL_NODATA):
        read_raster(path, window=window)


def test_read_tiles_equals_read_tile_with_the_same_reasons(tmp_path) -> None:
    path = _image(tmp_path)
    origins = list(tiling.grid_origins(path, SIZE))
    rows = tiling.grid_rows(origins)
    assert [len(r) for r in rows] == [4, 4, 4] and [o for r in rows for o in r] == origins
    grouped = [t for row in rows for t in tiling.read_tiles(path, row, SIZE)]
    for (row, col), tile in zip(origins, grouped, strict=True):
        alone = tiling.read_tile(path, row, col, SIZE)
        if isinstance(alone, str):
            assert tile == alone
        else:
            np.testing.assert_array_equal(tile.data, alone.data)
            assert (tile.tile_id, tile.transform) == (alone.tile_id, alone.transform)
    reasons = [t for t in grouped if isinstance(t, str)]
    assert len(reasons) == 2 and reasons[0].startswith("blank: near-constant")  # tile (0, 3) comes first
    assert reasons[1] == f"blank: {ALL_NODATA}"  # tile (1, 0): the reason read_raster's error gave


def test_read_hr_s2_keeps_the_order_of_tiles_from_several_images(tmp_path) -> None:
    first = _image(tmp_path)
    other_dir = tmp_path / "b"
    other_dir.mkdir()
    second = _image(other_dir, nodata_block=False)
    tiles = [
        {"path": str(path), "row": row, "col": col}
        for row, col in [(0, 0), (2 * SIZE, SIZE), (0, 2 * SIZE)]
        for path in (first, second)
    ] * 7  # more than one READ_GROUP of one image
    for tile, hr in zip(tiles, read_hr_s2(tiles, SIZE), strict=True):
        alone = read_raster(tile["path"], window=Window(tile["col"], tile["row"], SIZE, SIZE))
        np.testing.assert_array_equal(hr, reflectance_to_s2(alone.data))
