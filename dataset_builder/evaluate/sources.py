"""The two sides of an evaluation: a folder of S2-like GeoTIFFs or a ``datasets`` split.

Either becomes an :class:`ImageSet`: reflectance images ``(4, H, W)`` float32 (NaN = nodata) with a
name each, so that two sets can be paired by name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sen2naip_hub.errors import Sen2NaipError
from sen2naip_hub.sensors import N_BANDS

__all__ = ["GEOTIFF_SUFFIXES", "EvaluationError", "ImageSet", "pair_by_name", "read_folder", "read_set"]

#: File endings read as GeoTIFFs in a folder.
GEOTIFF_SUFFIXES: tuple[str, ...] = (".tif", ".tiff")


class EvaluationError(Sen2NaipError, ValueError):
    """An evaluation input that cannot be used: empty, wrong band count, mismatched sizes."""


@dataclass(frozen=True)
class ImageSet:
    """Named reflectance images ``(4, H, W)`` (sizes may differ between images)."""

    images: list[np.ndarray]
    names: list[str]
    source: str

    def __post_init__(self) -> None:
        if not self.images:
            raise EvaluationError(f"{self.source}: no images")
        for image, name in zip(self.images, self.names, strict=True):
            if image.ndim != 3 or image.shape[0] != N_BANDS:
                raise EvaluationError(
                    f"{self.source}/{name}: expected {N_BANDS} bands (B04, B03, B02, B08), "
                    f"found an array of shape {image.shape}"
                )

    def __len__(self) -> int:
        return len(self.images)

    def by_name(self) -> dict[str, np.ndarray]:
        return dict(zip(self.names, self.images, strict=True))


def read_folder(folder: str | os.PathLike) -> ImageSet:
    """Every GeoTIFF of ``folder`` (sorted), read with :func:`sen2naip_hub.io.read_raster`: uint16 as
    Sentinel-2 digital numbers (reflectance × 10000), uint8 as NAIP counts (/255), float as reflectance."""
    from sen2naip_hub.io import read_info, read_raster
    from sen2naip_hub.sensors import NAIP, SENTINEL2

    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in GEOTIFF_SUFFIXES and p.is_file())
    if not files:
        raise EvaluationError(f"{folder}: no GeoTIFFs ({', '.join('*' + s for s in GEOTIFF_SUFFIXES)})")
    images = []
    for path in files:
        sensor = NAIP if read_info(path).dtype == "uint8" else SENTINEL2
        images.append(read_raster(path, sensor).data)
    return ImageSet(images, [p.stem for p in files], str(folder))


def read_set(
    source: str | os.PathLike, config: str = "cross_sensor", split: str = "test", column: str = "lr"
):
    """A folder of GeoTIFFs, else a ``datasets`` split (a folder written by the builder or a repo id)
    read through :func:`dataset_builder.fit.pairs.load_pairs`; ``column`` is ``lr`` or ``hr``."""
    path = Path(source)
    if path.is_file():
        raise EvaluationError(f"{path}: expected a folder of GeoTIFFs or a dataset, found a file")
    if path.is_dir() and not any(path.iterdir()):
        raise EvaluationError(f"{path}: empty folder (expected GeoTIFFs or a dataset)")
    if path.is_dir() and any(p.suffix.lower() in GEOTIFF_SUFFIXES for p in path.iterdir()):
        return read_folder(path)
    from dataset_builder.fit.pairs import PairSourceError, load_pairs

    try:
        pairs = load_pairs(str(source), config, split)
    except PairSourceError as err:
        raise EvaluationError(str(err)) from err
    images = getattr(pairs, column).numpy()
    names = pairs.roi_ids if len(set(pairs.roi_ids)) == len(pairs.roi_ids) else None
    names = names or [f"{roi}_{i:06d}" for i, roi in enumerate(pairs.roi_ids)]  # dates share an ROI id
    return ImageSet(list(images), names, pairs.source)


def pair_by_name(first: ImageSet, second: ImageSet) -> list[str]:
    """Names present in both sets, sorted (the files that pair)."""
    return sorted(set(first.names) & set(second.names))
