"""benchmarks/mosaic.py: NAIP-like mosaics of real tiles that the builder's listing and tiler read back."""

from __future__ import annotations

import hashlib
import sys

import numpy as np
import pytest
import rasterio
from build_helpers import REPO_ROOT
from conftest import SAMPLE_DIR

from dataset_builder.core.tiling import grid_origins
from dataset_builder.sources.acquisitions import parse_date
from dataset_builder.sources.stage import check_input_file
from sen2naip_hub.sensors import NAIP

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
mosaic = pytest.importorskip("mosaic")

SIZE = 96


@pytest.fixture(scope="module")
def tiles() -> np.ndarray:
    if not (SAMPLE_DIR / "naip").is_dir():
        pytest.skip("no real NAIP sample")
    return mosaic.tiles_from_sample(SAMPLE_DIR, 6, SIZE)


def _variants(tile: np.ndarray) -> list[np.ndarray]:
    turns = [np.rot90(tile, k, axes=(1, 2)) for k in range(4)]
    return turns + [t[:, :, ::-1] for t in turns]


def test_mosaics_are_naip_inputs_made_of_the_real_tiles(tiles, tmp_path) -> None:
    assert tiles.shape == (6, 4, SIZE, SIZE) and tiles.dtype == np.uint8
    paths = mosaic.make_mosaic(tiles, tmp_path / "a", n_images=3, tiles_per_image=6, seed=1)
    assert len({parse_date(p) for p in paths}) == 3
    for path in paths:
        check_input_file(path, NAIP)  # 4 bands R, G, B, NIR, projected, NAIP pixel size, decodes
        origins = list(grid_origins(path, SIZE))
        assert len(origins) == 6  # the world grid cuts exactly the laid-out tiles
        with rasterio.open(path) as src:
            assert src.profile["tiled"] and src.res == (mosaic.PIXEL_SIZE_M, mosaic.PIXEL_SIZE_M)
            image = src.read()
        for row, col in origins:
            cut = image[:, row : row + SIZE, col : col + SIZE]
            assert any(np.array_equal(cut, v) for t in tiles for v in _variants(t))


def test_the_seed_decides_the_files(tiles, tmp_path) -> None:
    def digest(folder: str, seed: int) -> list[str]:
        paths = mosaic.make_mosaic(tiles, tmp_path / folder, 2, 4, seed=seed)
        return [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]

    assert digest("a", 0) == digest("b", 0) != digest("c", 1)
    np.save(tmp_path / "t.npy", tiles)
    np.testing.assert_array_equal(mosaic.load_tiles_npy(tmp_path / "t.npy"), tiles)
    with pytest.raises(mosaic.MosaicError, match="uint8 tiles"):
        mosaic.make_mosaic(tiles.astype(np.float32), tmp_path / "d", 1, 1, seed=0)
