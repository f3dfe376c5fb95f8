"""SEN2NAIP pairs for training: a ``datasets`` split → float32 reflectance tensors ``(B, 4, H, W)``.

The dataset stores ``hr`` and ``lr`` as ``uint16`` reflectance × 10000 (Sentinel-2 DN convention,
NAIP converted the same way). Here they become float32 reflectance with one vectorized division
per batch (:func:`sen2naip_hub.sensors.s2_to_reflectance`), never through Python lists:

* :func:`load_pairs` opens a split (local folder or Hub repo id) in ``numpy`` format, ``uint16``
  preserved (the numpy formatter would otherwise upcast integers to int64);
* :func:`to_torch_batches` iterates any split (map-style or streaming) in batches of torch tensors;
* :class:`PairTorchDataset` wraps a map-style split for a ``torch.utils.data.DataLoader``.

This module imports ``datasets`` lazily and never imports ``dataset_builder``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from sen2naip_hub.errors import Sen2NaipError
from sen2naip_hub.sensors import s2_to_reflectance

__all__ = [
    "ARRAY_COLUMNS",
    "DatasetFormatError",
    "PairTorchDataset",
    "batch_to_reflectance",
    "load_pairs",
    "to_torch_batches",
]

#: The raster columns of every config (uint16 reflectance × 10000, ``(4, H, W)``).
ARRAY_COLUMNS: tuple[str, ...] = ("hr", "lr")
#: Default batch size of :func:`to_torch_batches`.
DEFAULT_BATCH_SIZE: int = 16


class DatasetFormatError(Sen2NaipError, ValueError):
    """A split lacks the ``hr`` / ``lr`` columns or holds arrays of an unexpected dtype or shape."""


def load_pairs(
    path_or_repo: str | os.PathLike, config: str, split: str, streaming: bool = False, **load_kwargs: Any
):
    """Open one split of one config, formatted for fast array access.

    Args:
        path_or_repo: a local dataset folder (as ``dataset_builder.write.shards`` writes it) or a Hub repo id.
        config: ``"cross_sensor"`` or ``"synthetic"``.
        split: ``"train"``, ``"validation"`` or ``"test"``.
        streaming: return an ``IterableDataset`` reading shards lazily.
        **load_kwargs: passed to ``datasets.load_dataset`` (``revision``, ``cache_dir``, ``token``, ...).

    Returns:
        A ``datasets.Dataset`` in ``numpy`` format whose ``hr`` / ``lr`` come back as ``uint16``
        ``(B, 4, H, W)`` arrays (other columns as Python values), or, when streaming, an
        ``IterableDataset`` in ``arrow`` format. Either goes into :func:`to_torch_batches`, which gives
        float32 reflectance.
    """
    from datasets import load_dataset

    dataset = load_dataset(str(path_or_repo), config, split=split, streaming=streaming, **load_kwargs)
    _check_columns(dataset.column_names or ARRAY_COLUMNS)
    if streaming:
        return dataset.with_format("arrow")
    return dataset.with_format("numpy", columns=list(ARRAY_COLUMNS), dtype=np.uint16, output_all_columns=True)


def _check_columns(columns: Sequence[str]) -> None:
    missing = [c for c in ARRAY_COLUMNS if c not in columns]
    if missing:
        raise DatasetFormatError(
            f"expected columns {ARRAY_COLUMNS}, missing {missing} (found {list(columns)})"
        )


def batch_to_reflectance(batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """``{"hr", "lr"}`` uint16 DN arrays ``(B, 4, H, W)`` (numpy or arrow) → float32 reflectance tensors."""
    out: dict[str, torch.Tensor] = {}
    for key in ARRAY_COLUMNS:
        counts = _as_numpy(batch[key], key)
        if counts.ndim != 4:
            raise DatasetFormatError(f"{key}: expected a (B, 4, H, W) batch, found shape {counts.shape}")
        out[key] = torch.from_numpy(s2_to_reflectance(counts, name=key))
    return out


def _as_numpy(column: Any, key: str) -> np.ndarray:
    """A batch column as one numpy array: numpy passes through, arrow (extension arrays) converts."""
    if isinstance(column, np.ndarray):
        array = column
    elif hasattr(column, "combine_chunks"):  # pyarrow ChunkedArray of Array3D
        array = column.combine_chunks().to_numpy(zero_copy_only=False)
    elif hasattr(column, "to_numpy"):
        array = column.to_numpy(zero_copy_only=False)
    else:
        raise DatasetFormatError(f"{key}: expected a numpy or arrow column, found {type(column).__name__}")
    if array.dtype == object:
        raise DatasetFormatError(f"{key}: arrays of different shapes in one batch")
    return array


def to_torch_batches(
    dataset, batch_size: int = DEFAULT_BATCH_SIZE, drop_last: bool = False
) -> Iterator[dict]:
    """Yield ``{"hr": (B, 4, H, W), "lr": (B, 4, h, w)}`` float32 reflectance tensors, in dataset order.

    ``dataset`` is a ``datasets.Dataset`` or ``IterableDataset`` (e.g. from :func:`load_pairs`); it is
    read in ``arrow`` format, so pixels never pass through Python lists. Shuffle the dataset first
    (``dataset.shuffle(seed=...)``) for training.
    """
    if batch_size <= 0:
        raise DatasetFormatError(f"batch_size must be positive, found {batch_size}")
    arrow = dataset.with_format("arrow")
    for table in arrow.iter(batch_size=batch_size, drop_last_batch=drop_last):
        yield batch_to_reflectance(table)


class PairTorchDataset(torch.utils.data.Dataset):
    """A map-style split as a torch ``Dataset`` of float32 reflectance ``hr`` / ``lr``.

    Indexing one item gives ``(4, H, W)`` tensors; the DataLoader's batched fetch (``__getitems__``)
    reads a whole batch in one arrow slice and returns its items, which a ``DataLoader``'s default
    collate (or :meth:`collate`) stacks into ``(B, 4, H, W)`` batches::

        loader = DataLoader(PairTorchDataset(ds), batch_size=16, shuffle=True,
                            generator=torch.Generator().manual_seed(0))
    """

    def __init__(self, dataset) -> None:
        _check_columns(dataset.column_names)
        self.dataset = dataset.with_format("arrow", columns=list(ARRAY_COLUMNS))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        batch = batch_to_reflectance(self.dataset[int(index) : int(index) + 1])
        return {key: value[0] for key, value in batch.items()}

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, torch.Tensor]]:
        """The items at ``indices``, read in one arrow slice (a list, as any collate_fn expects)."""
        batch = batch_to_reflectance(self.dataset[[int(i) for i in indices]])
        return [{key: value[i] for key, value in batch.items()} for i in range(len(indices))]

    @staticmethod
    def collate(
        batch: dict[str, torch.Tensor] | Sequence[dict[str, torch.Tensor]],
    ) -> dict[str, torch.Tensor]:
        """Stack a list of single items (as ``__getitems__`` returns them); pass a batch dict through."""
        if isinstance(batch, Mapping):
            return dict(batch)
        return {key: torch.stack([item[key] for item in batch]) for key in ARRAY_COLUMNS}
