"""HR sources for :class:`~sen2naip_hub.training.TrainingPairs`: a ``datasets`` split, a folder of
GeoTIFFs, or any ``DataLoader``.

* :class:`PairTransform` makes pairs where the HR batch is assembled: as a ``datasets`` transform
  (``split.with_transform(PairTransform(pairs, seed=0))``) or as a DataLoader's ``collate_fn``. Each
  call draws from :func:`~sen2naip_hub.training.step_generator` ``(seed, call, worker)`` where ``call``
  counts this copy's calls since :meth:`PairTransform.set_epoch` (DataLoader workers each hold a copy
  and get their batches in a fixed order, so a seeded run is reproducible with any number of workers);
  call ``set_epoch(epoch)`` before each epoch, or every epoch repeats the first one's draws.
* :class:`GeoTiffTiles` is a map-style dataset of complete HR tiles cut from a folder of 4-band NAIP
  GeoTIFFs (read through :mod:`sen2naip_hub.io`, so rasterio is imported only here).
* For a GPU, make the pairs in the training loop instead: move the HR batch to the device and call
  ``pairs(hr, step_generator(seed, step, device=hr.device))``.

Integer HR (a ``datasets`` split stores reflectance × 10000 as uint16; NAIP GeoTIFFs hold uint8) is
converted with :func:`~sen2naip_hub.sensors.counts_to_reflectance` of the sensor given.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sen2naip_hub.errors import InvalidImageError, UnreadableFileError
from sen2naip_hub.sensors import NAIP, SENTINEL2, Sensor, counts_to_reflectance
from sen2naip_hub.training import TrainingPairError, TrainingPairs, step_generator

__all__ = ["GeoTiffTiles", "PairTransform", "hr_to_tensor"]

#: Default HR tile side, px: SEN2NAIP's ROI size (484 px at 2.5 m = 121 Sentinel-2 pixels).
DEFAULT_TILE: int = 484


def hr_to_tensor(value: Any, sensor: Sensor = SENTINEL2, name: str = "hr") -> torch.Tensor:
    """HR rasters (a tensor, numpy array or nested lists, any shape) as float reflectance:
    floats pass through (as float32 unless already a float tensor), integers are divided by
    ``sensor.dn_scale``."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point():
            return value
        value = value.numpy()
    array = np.asarray(value)
    if array.dtype.kind in "ui":
        array = counts_to_reflectance(array, sensor)
    elif array.dtype.kind != "f":
        raise InvalidImageError(f"{name}: expected numbers (B, 4, H, W), found dtype {array.dtype}")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


class PairTransform:
    """Turn HR batches into training pairs where they are assembled (a ``datasets`` transform or a
    DataLoader ``collate_fn``).

    Args:
        pairs: the :class:`~sen2naip_hub.training.TrainingPairs` (kept on the CPU in workers).
        seed: base seed of every draw.
        column: the HR column of a ``datasets`` batch (or key of dict items).
        sensor: scaling of integer HR (default: the dataset's reflectance × 10000).

    As a transform, a batch ``{column: ...}`` becomes the same dict with ``column`` as float reflectance
    and ``"lr"`` added; as a collate function, a list of ``(4, H, W)`` tensors or of dicts becomes
    ``{"lr": ..., "hr": ...}``.
    """

    def __init__(
        self, pairs: TrainingPairs, seed: int = 0, column: str = "hr", sensor: Sensor = SENTINEL2
    ) -> None:
        self.pairs, self.seed, self.column, self.sensor = pairs, seed, column, sensor
        self.epoch, self.calls = 0, 0

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch``: restart the call count under a seed of its own."""
        self.epoch, self.calls = epoch, 0

    def generator(self) -> torch.Generator:
        """The generator of the next call: (seed, epoch, call) for this worker (then counts the call)."""
        step = self.epoch * (1 << 32) + self.calls
        self.calls += 1
        return step_generator(self.seed, step)

    def __call__(self, batch: Mapping[str, Any] | Sequence[Any]) -> dict[str, Any]:
        if isinstance(batch, Mapping):
            if self.column not in batch:
                raise TrainingPairError(f"batch has no HR column {self.column!r} (found {sorted(batch)})")
            out = dict(batch)
            hr = hr_to_tensor(batch[self.column], self.sensor, self.column)
        else:
            out = {}
            items = [item[self.column] if isinstance(item, Mapping) else item for item in batch]
            hr = torch.stack([hr_to_tensor(item, self.sensor, self.column) for item in items])
        pair = self.pairs(hr, self.generator())
        out[self.column], out["lr"] = pair.hr, pair.lr
        return out


class GeoTiffTiles(torch.utils.data.Dataset):
    """Complete ``tile``×``tile`` HR tiles (float32 reflectance ``(4, tile, tile)``) from every ``*.tif``
    under ``folder`` (4-band NAIP R, G, B, NIR), on a grid of step ``stride``.

    Each file is read once at construction to keep only windows without nodata; items are read
    window by window. Tiles are ordered by file name, then row, then column.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        tile: int = DEFAULT_TILE,
        stride: int | None = None,
        sensor: Sensor = NAIP,
    ) -> None:
        from sen2naip_hub.io import read_raster

        self.folder, self.tile, self.sensor = Path(folder), tile, sensor
        stride = stride or tile
        if tile <= 0 or stride <= 0:
            raise TrainingPairError(f"tile and stride must be positive, got {tile} and {stride}")
        self.windows: list[tuple[Path, int, int]] = []
        files = sorted(self.folder.glob("*.tif"))
        if not files:
            raise UnreadableFileError(f"{self.folder}: no *.tif files (expected 4-band NAIP GeoTIFFs)")
        for path in files:
            valid = read_raster(path, sensor).valid
            height, width = valid.shape
            for row in range(0, height - tile + 1, stride):
                for col in range(0, width - tile + 1, stride):
                    if valid[row : row + tile, col : col + tile].all():
                        self.windows.append((path, row, col))

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> torch.Tensor:
        from rasterio.windows import Window

        from sen2naip_hub.io import read_raster

        path, row, col = self.windows[index]
        raster = read_raster(path, self.sensor, window=Window(col, row, self.tile, self.tile))
        return torch.from_numpy(raster.data)
