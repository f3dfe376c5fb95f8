"""HR/LR pairs for fitting, as float32 reflectance tensors ``(N, 4, H, W)`` / ``(N, 4, H/4, W/4)``.

Three sources, one result (:class:`Pairs`):

- a folder of SEN2NAIP-layout ROI folders, ``ROI_0001/hr.tif`` (NAIP R, G, B, NIR; uint8 = DN/255 or
  uint16 = reflectance × 10000) + ``lr.tif`` (Sentinel-2 B04, B03, B02, B08, DN = reflectance × 10000)
  + ``metadata.json`` (read with ``sen2naip_hub.io``, rasterio imported lazily);
- a ``datasets`` split (a folder written by ``dataset_builder.write.shards`` or a Hub repo id), through
  :mod:`sen2naip_hub.data`;
- an ``.npz`` with ``hr``, ``lr`` (float reflectance) and ``roi_ids`` (:func:`save_npz`): torch + numpy
  only, for machines without rasterio or ``datasets`` (the GPU machine).

ROIs with nodata (NaN) in either image are skipped and counted, since every fitting loss here needs
complete tiles. Train / validation splits are by ROI (:func:`split_by_roi`, a stable hash of the id).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dataset_builder.core.splits import roi_unit_interval
from sen2naip_hub.errors import Sen2NaipError

__all__ = [
    "DEFAULT_VALIDATION_FRACTION",
    "PairSourceError",
    "Pairs",
    "load_pairs",
    "read_roi_folders",
    "save_npz",
    "split_by_roi",
    "write_roi_folders",
]

#: Share of ROIs held out for validation in fitting (the project's choice, as the builder's 10 %
#: validation share would leave too few ROIs in small folders).
DEFAULT_VALIDATION_FRACTION: float = 0.2
#: Salt of the ROI hash (independent of the dataset builder's train/validation/test salt, so fitting
#: on a builder split re-splits it independently).
SPLIT_SALT: str = "sen2naip-fit"


class PairSourceError(Sen2NaipError, ValueError):
    """A pair source that does not exist, is empty, or holds arrays of the wrong shape."""


@dataclass
class Pairs:
    """HR/LR reflectance pairs with their ROI ids (several pairs may share an ROI: dates)."""

    hr: torch.Tensor
    lr: torch.Tensor
    roi_ids: list[str]
    skipped: int = 0
    source: str = ""
    metadata: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.hr.ndim != 4 or self.lr.ndim != 4 or self.hr.shape[:2] != self.lr.shape[:2]:
            raise PairSourceError(
                f"{self.source}: expected hr (N, 4, H, W) and lr (N, 4, h, w), "
                f"got {tuple(self.hr.shape)} and {tuple(self.lr.shape)}"
            )
        if len(self.roi_ids) != self.hr.shape[0]:
            raise PairSourceError(f"{self.source}: {len(self.roi_ids)} ROI ids for {self.hr.shape[0]} pairs")

    def __len__(self) -> int:
        return self.hr.shape[0]

    def subset(self, index: list[int] | torch.Tensor) -> Pairs:
        index = torch.as_tensor(index, dtype=torch.long)
        meta = [self.metadata[i] for i in index.tolist()] if self.metadata else []
        return Pairs(
            self.hr[index], self.lr[index], [self.roi_ids[i] for i in index.tolist()], 0, self.source, meta
        )


def split_by_roi(
    roi_ids: list[str], validation_fraction: float = DEFAULT_VALIDATION_FRACTION, salt: str = SPLIT_SALT
) -> tuple[list[int], list[int]]:
    """Train and validation indices: every pair of an ROI on the same side (hash of the ROI id).

    If the hash leaves one side empty while there are ≥ 2 ROIs, the ROI with the smallest hash value
    moves to validation (or the largest to train), so both sides are non-empty.
    """
    if not 0.0 < validation_fraction < 1.0:
        raise PairSourceError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    unique = sorted(set(roi_ids))
    if len(unique) < 2:
        raise PairSourceError(f"need at least 2 ROIs to split by ROI, found {unique}")
    value = {roi: roi_unit_interval(roi, salt) for roi in unique}
    val_rois = {roi for roi in unique if value[roi] < validation_fraction}
    if not val_rois:
        val_rois = {min(unique, key=value.get)}
    if len(val_rois) == len(unique):
        val_rois.discard(max(unique, key=value.get))
    train = [i for i, roi in enumerate(roi_ids) if roi not in val_rois]
    val = [i for i, roi in enumerate(roi_ids) if roi in val_rois]
    return train, val


# ----------------------------------------------------------------------------- ROI folders
def _read_image(path: Path, hr: bool) -> np.ndarray:
    from sen2naip_hub.io import read_info, read_raster
    from sen2naip_hub.sensors import NAIP, SENTINEL2

    sensor = NAIP if hr and read_info(path).dtype == "uint8" else SENTINEL2
    return read_raster(path, sensor).data


def read_roi_folders(folder: str | os.PathLike, limit: int | None = None) -> Pairs:
    """Read ``folder/ROI_*/{hr,lr}.tif`` (+ ``metadata.json``, optional) in sorted order."""
    folder = Path(folder)
    rois = sorted(p for p in folder.iterdir() if p.is_dir() and (p / "hr.tif").is_file())
    if not rois:
        raise PairSourceError(f"{folder}: no ROI folders holding hr.tif and lr.tif")
    hrs, lrs, ids, metas, skipped = [], [], [], [], 0
    for roi in rois[:limit]:
        if not (roi / "lr.tif").is_file():
            raise PairSourceError(f"{roi}: hr.tif without lr.tif")
        hr, lr = _read_image(roi / "hr.tif", True), _read_image(roi / "lr.tif", False)
        if not (np.isfinite(hr).all() and np.isfinite(lr).all()):
            skipped += 1
            continue
        meta_path = roi / "metadata.json"
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        hrs.append(hr)
        lrs.append(lr)
        ids.append(str(meta.get("roi_id", roi.name)))
        metas.append(meta)
    if not hrs:
        raise PairSourceError(f"{folder}: all {len(rois)} ROIs hold nodata")
    _check_same_shapes(hrs, lrs, folder)
    return Pairs(
        torch.from_numpy(np.stack(hrs)), torch.from_numpy(np.stack(lrs)), ids, skipped, str(folder), metas
    )


def _check_same_shapes(hrs: list[np.ndarray], lrs: list[np.ndarray], where: Path) -> None:
    shapes = {(h.shape, lr.shape) for h, lr in zip(hrs, lrs, strict=True)}
    if len(shapes) != 1:
        raise PairSourceError(f"{where}: ROIs of different sizes {sorted(shapes)}; expected one tile size")


def write_roi_folders(
    folder: str | os.PathLike, hr: torch.Tensor, lr: torch.Tensor, roi_ids: list[str], metadata: dict
) -> Path:
    """Write pairs in the SEN2NAIP layout: ``ROI_0001/hr.tif`` (NAIP uint8), ``lr.tif`` (S2 uint16),
    ``metadata.json`` (``metadata`` plus the ROI id). No georeferencing: for tests and examples."""
    from affine import Affine

    from sen2naip_hub.io import Raster, write_raster
    from sen2naip_hub.sensors import NAIP, SENTINEL2

    folder = Path(folder)
    for index, roi in enumerate(roi_ids):
        out = folder / f"ROI_{index + 1:04d}"
        out.mkdir(parents=True, exist_ok=True)
        write_raster(out / "hr.tif", Raster(hr[index].numpy(), None, Affine.identity(), NAIP.all_bands), NAIP)
        write_raster(out / "lr.tif", Raster(lr[index].numpy(), None, Affine.scale(4), SENTINEL2.all_bands))
        (out / "metadata.json").write_text(json.dumps({**metadata, "roi_id": roi}, indent=2))
    return folder


# ----------------------------------------------------------------------------- npz and datasets
def save_npz(pairs: Pairs, path: str | os.PathLike) -> Path:
    """Write ``hr``, ``lr`` (float32) and ``roi_ids`` to one ``.npz`` (torch + numpy to read back)."""
    from sen2naip_hub.files import atomic_file

    path = Path(path)
    with atomic_file(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, hr=pairs.hr.numpy(), lr=pairs.lr.numpy(), roi_ids=np.asarray(pairs.roi_ids))
    return path


def _read_npz(path: Path) -> Pairs:
    with np.load(path, allow_pickle=False) as data:
        missing = {"hr", "lr"} - set(data.files)
        if missing:
            raise PairSourceError(f"{path}: missing arrays {sorted(missing)} (found {data.files})")
        ids = [str(r) for r in data["roi_ids"]] if "roi_ids" in data.files else None
        hr, lr = (
            torch.from_numpy(data["hr"].astype(np.float32)),
            torch.from_numpy(data["lr"].astype(np.float32)),
        )
    return Pairs(hr, lr, ids or [f"pair_{i:06d}" for i in range(hr.shape[0])], 0, str(path))


def _read_split(source: str, config: str, split: str, limit: int | None) -> Pairs:
    from sen2naip_hub.data import load_pairs as load_split
    from sen2naip_hub.data import to_torch_batches

    try:
        dataset = load_split(source, config, split)
    except (FileNotFoundError, ValueError, ConnectionError) as err:
        raise PairSourceError(
            f"{source}: not a folder of ROI folders (ROI_*/hr.tif), an .npz, nor a loadable dataset "
            f"[{config}/{split}] ({str(err).splitlines()[0] if str(err) else type(err).__name__})"
        ) from err
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    hrs, lrs = [], []
    for batch in to_torch_batches(dataset, batch_size=64):
        hrs.append(batch["hr"])
        lrs.append(batch["lr"])
    if not hrs:
        raise PairSourceError(f"{source} [{config}/{split}]: the split is empty")
    names = dataset.column_names
    ids = (
        [str(r) for r in dataset["roi_id"]]
        if "roi_id" in names
        else [f"row_{i}" for i in range(len(dataset))]
    )
    return Pairs(torch.cat(hrs), torch.cat(lrs), ids, 0, f"{source} [{config}/{split}]")


def load_pairs(
    source: str | os.PathLike, config: str = "cross_sensor", split: str = "train", limit: int | None = None
) -> Pairs:
    """Pairs from a folder of ROI folders, an ``.npz``, or a ``datasets`` split (folder or repo id).

    A folder counts as ROI folders when it holds ``*/hr.tif``; any other folder or a repo id is opened
    with ``datasets`` as ``config``/``split``. ``limit`` keeps the first pairs only.
    """
    path = Path(source)
    if path.suffix == ".npz":
        if not path.is_file():
            raise PairSourceError(f"{path}: no such file")
        pairs = _read_npz(path)
        return pairs if limit is None else pairs.subset(list(range(min(limit, len(pairs)))))
    if path.is_dir() and any(path.glob("*/hr.tif")):
        return read_roi_folders(path, limit)
    if path.is_dir() or not path.exists():
        return _read_split(str(source), config, split, limit)
    raise PairSourceError(f"{path}: expected a folder of ROI folders, an .npz or a dataset, found a file")
