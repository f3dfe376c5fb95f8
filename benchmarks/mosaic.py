"""A large NAIP-like input made of real tiles: mosaics of the sample's NAIP tiles, flipped and rotated.

The benchmarks of the synthetic stage need tens of thousands of tiles; the real sample has ten
images of ~934 × 724 px. :func:`tiles_from_sample` cuts ``n`` real tiles from it (uint8 R, G, B, NIR,
as stored), :func:`make_mosaic` lays them out, in an order, rotation and flip drawn from a seed, as
``n_images`` GeoTIFFs of ``tiles_per_image`` tiles each that the builder reads like NAIP:

* file names ``m_<7 digits>_se_14_1_<YYYYMMDD>.tif`` (NAIP quarter-quad names ending in the
  acquisition date, which :func:`dataset_builder.sources.acquisitions.parse_date` reads);
* 4 bands uint8 named R, G, B, NIR, nodata 0 (as the sample), EPSG:26914 (the sample's UTM zone),
  :data:`PIXEL_SIZE_M` pixels (SEN2NAIP's HR resolution), tiled GeoTIFF, uncompressed by default;
* every image at its own place, its origin on the world grid of ``tile_size`` × pixel size (so the
  builder's tiler, :func:`dataset_builder.core.tiling.grid_origins`, cuts exactly the laid-out tiles).

A tile's pixels are real NAIP; its neighbours are not its real neighbours. Files are written to a
temporary name and renamed.

    python benchmarks/mosaic.py --out .devcarry/tiles.npy        # 16 real 484-px tiles for the GPU machine
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
from pathlib import Path

import numpy as np

__all__ = ["PIXEL_SIZE_M", "load_tiles_npy", "make_mosaic", "mosaic_name", "tiles_from_sample"]

#: SEN2NAIP's HR pixel size (NAIP resampled to 2.5 m, per the SEN2NAIP paper), metres.
PIXEL_SIZE_M: float = 2.5
#: The real sample's CRS (NAD83 / UTM zone 14N, North Dakota; see ../shared/sample/README.md).
MOSAIC_CRS: str = "EPSG:26914"
#: NAIP band order and names (sen2naip_hub.sensors.NAIP.all_bands).
BAND_NAMES: tuple[str, ...] = ("R", "G", "B", "NIR")
#: NAIP's nodata value in the sample files.
NODATA: int = 0
#: GeoTIFF internal block side (a multiple of 16, as GeoTIFF requires).
BLOCK_PX: int = 128
#: First image's date and origin (a valid UTM 14N easting/northing, rounded to the world grid below).
FIRST_DATE: dt.date = dt.date(2020, 6, 1)
ORIGIN_EASTING_M: float = 300_000.0
ORIGIN_NORTHING_M: float = 5_300_000.0
#: Dates cycle over this many days (NAIP is flown in the growing season).
DATE_SPAN_DAYS: int = 90
#: Images per row of the layout; one empty tile between neighbours.
IMAGES_PER_ROW: int = 32


class MosaicError(ValueError):
    """The tiles or the layout asked for cannot make a mosaic."""


def load_tiles_npy(path: str | Path) -> np.ndarray:
    """Tiles saved by :func:`tiles_from_sample` (``np.save``): ``(N, 4, H, W)`` uint8, checked."""
    tiles = np.load(Path(path), allow_pickle=False)
    _check_tiles(tiles, str(path))
    return tiles


def tiles_from_sample(sample_dir: str | Path, n: int, size: int) -> np.ndarray:
    """``n`` real ``size``-px tiles ``(n, 4, size, size)`` uint8 of the sample's NAIP images.

    Images are taken in file-name order; each gives the windows at its four corners in turn
    (top-left, bottom-right, top-right, bottom-left), so up to four distinct tiles per image. Windows
    holding a nodata pixel (0 in every band) are skipped. ``sample_dir`` is the sample folder (its
    ``naip/`` is used) or a folder of NAIP GeoTIFFs.
    """
    import rasterio
    from rasterio.windows import Window

    folder = Path(sample_dir)
    paths = sorted((folder / "naip" if (folder / "naip").is_dir() else folder).glob("*.tif"))
    if not paths:
        raise MosaicError(f"{folder}: no NAIP GeoTIFF (*.tif) found here or in naip/")
    tiles: list[np.ndarray] = []
    for corner in range(4):
        for path in paths:
            with rasterio.open(path) as src:
                if src.height < size or src.width < size:
                    continue
                row = 0 if corner in (0, 2) else src.height - size
                col = 0 if corner in (0, 3) else src.width - size
                tile = src.read(window=Window(col, row, size, size))
            if not (tile == NODATA).all(axis=0).any():
                tiles.append(tile)
            if len(tiles) == n:
                return np.stack(tiles)
    raise MosaicError(f"{folder}: only {len(tiles)} nodata-free {size}-px tiles found, {n} asked for")


def _check_tiles(tiles: np.ndarray, name: str) -> None:
    if tiles.ndim != 4 or tiles.shape[1] != len(BAND_NAMES) or tiles.dtype != np.uint8 or not len(tiles):
        raise MosaicError(f"{name}: expected uint8 tiles (N, 4, H, W), found {tiles.dtype} {tiles.shape}")
    if tiles.shape[2] != tiles.shape[3]:
        raise MosaicError(f"{name}: tiles must be square (they are rotated), found {tiles.shape[2:]}")


def _grid(tiles_per_image: int) -> tuple[int, int]:
    """Rows × columns of tiles in one image: the most nearly square factorisation."""
    rows = max(r for r in range(1, math.isqrt(tiles_per_image) + 1) if tiles_per_image % r == 0)
    return rows, tiles_per_image // rows


def mosaic_name(index: int) -> str:
    """The NAIP-like file name of mosaic image ``index`` (a unique quad id, a date)."""
    date = FIRST_DATE + dt.timedelta(days=index % DATE_SPAN_DAYS)
    return f"m_{index:07d}_se_14_1_{date:%Y%m%d}.tif"


def _image(tiles: np.ndarray, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """One ``(4, rows·size, cols·size)`` image of tiles drawn, rotated and flipped by ``rng``."""
    size = tiles.shape[-1]
    image = np.empty((len(BAND_NAMES), rows * size, cols * size), dtype=np.uint8)
    picks = rng.integers(len(tiles), size=rows * cols)
    turns = rng.integers(4, size=rows * cols)
    flips = rng.integers(2, size=rows * cols).astype(bool)
    for k in range(rows * cols):
        tile = np.rot90(tiles[picks[k]], k=int(turns[k]), axes=(1, 2))
        tile = tile[:, :, ::-1] if flips[k] else tile
        r, c = divmod(k, cols)
        image[:, r * size : (r + 1) * size, c * size : (c + 1) * size] = tile
    return image


def _transform(index: int, rows: int, cols: int, size: int):
    """Image ``index``'s geotransform: its own place, origin on the world grid of ``size`` pixels."""
    from affine import Affine

    step = size * PIXEL_SIZE_M
    x0 = math.ceil(ORIGIN_EASTING_M / step) * step
    y0 = math.floor(ORIGIN_NORTHING_M / step) * step
    row, col = divmod(index, IMAGES_PER_ROW)
    return Affine(
        PIXEL_SIZE_M, 0.0, x0 + col * (cols + 1) * step, 0.0, -PIXEL_SIZE_M, y0 - row * (rows + 1) * step
    )


def make_mosaic(
    tiles: np.ndarray,
    out_dir: Path,
    n_images: int,
    tiles_per_image: int,
    seed: int,
    compress: str | None = None,
) -> list[Path]:
    """Write ``n_images`` NAIP-like GeoTIFFs of ``tiles_per_image`` real tiles each; return their paths.

    ``tiles`` ``(N, 4, H, H)`` uint8 (R, G, B, NIR) are drawn with replacement, each rotated by a
    multiple of 90° and perhaps flipped, all from ``seed``: the same arguments write the same files.
    ``compress`` is a GDAL compression (``"deflate"``, ...) or None (uncompressed). See the module
    docstring for names, dates, CRS and placement.
    """
    import rasterio

    from sen2naip_hub.files import atomic_file

    _check_tiles(tiles, "tiles")
    if n_images <= 0 or tiles_per_image <= 0:
        raise MosaicError(
            f"n_images and tiles_per_image must be positive, found {n_images}, {tiles_per_image}"
        )
    rows, cols = _grid(tiles_per_image)
    size = tiles.shape[-1]
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "GTiff",
        "dtype": "uint8",
        "count": len(BAND_NAMES),
        "height": rows * size,
        "width": cols * size,
        "crs": MOSAIC_CRS,
        "nodata": NODATA,
        "tiled": True,
        "blockxsize": BLOCK_PX,
        "blockysize": BLOCK_PX,
        "interleave": "pixel",
    } | ({"compress": compress} if compress else {})
    paths = []
    for index in range(n_images):
        path = out_dir / mosaic_name(index)
        image = _image(tiles, rows, cols, rng)
        transform = _transform(index, rows, cols, size)
        with atomic_file(path) as tmp, rasterio.open(tmp, "w", transform=transform, **profile) as dst:
            dst.write(image)
            dst.descriptions = BAND_NAMES
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description="Save real NAIP tiles of the sample as .npy")
    parser.add_argument(
        "--sample", type=Path, default=Path(__file__).resolve().parents[1] / ".." / "shared" / "sample"
    )
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--size", type=int, default=484)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    tiles = tiles_from_sample(args.sample, args.n, args.size)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.save(args.out, tiles)
    print(f"{args.out}: {tiles.shape} {tiles.dtype}")


if __name__ == "__main__":
    main()
