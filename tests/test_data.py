"""sen2naip_hub.data: a written dataset folder → float32 reflectance tensors equal to DN / 10000."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SAMPLE_DIR, block_mean_record

from dataset_builder.core.records import PairRecord
from dataset_builder.core.splits import RoiSplitter
from dataset_builder.core.tiling import iter_tiles
from dataset_builder.write.repo import write_dataset
from sen2naip_hub.data import (
    DatasetFormatError,
    PairTorchDataset,
    batch_to_reflectance,
    load_pairs,
    to_torch_batches,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
NAIP_DIR = SAMPLE_DIR / "naip"
TILE = 64
#: Every ROI in train, so the expected row order is simply the records' order.
ALL_TRAIN = RoiSplitter((1.0, 0.0, 0.0))


def _records(n_images: int = 2) -> list[PairRecord]:
    paths = sorted(NAIP_DIR.glob("*.tif"))[:n_images]
    if len(paths) < n_images:
        pytest.skip(f"real NAIP sample not found in {NAIP_DIR}")
    return [
        block_mean_record(t, dt.datetime.strptime(t.date, "%Y%m%d").date()) for t in iter_tiles(paths, TILE)
    ]


@pytest.fixture(scope="module")
def records() -> list[PairRecord]:
    return _records()


@pytest.fixture
def folder(records, tmp_path: Path) -> Path:
    out = tmp_path / "sen2naip"
    write_dataset({"synthetic": records}, out, splitter=ALL_TRAIN)
    return out


def _expected(records: list[PairRecord], key: str) -> torch.Tensor:
    return torch.from_numpy(np.stack([getattr(r, key) for r in records]).astype(np.float32) / 10000)


def test_load_pairs_numpy_keeps_uint16(folder: Path, records) -> None:
    ds = load_pairs(folder, "synthetic", "train")
    batch = ds[:5]
    assert isinstance(batch["hr"], np.ndarray) and batch["hr"].dtype == np.uint16
    assert batch["hr"].shape == (5, 4, TILE, TILE) and batch["lr"].shape == (5, 4, TILE // 4, TILE // 4)
    assert batch["roi_id"] == [r.roi_id for r in records[:5]]  # other columns still there


def test_to_torch_batches_equal_dn_over_10000(folder: Path, records) -> None:
    batches = list(to_torch_batches(load_pairs(folder, "synthetic", "train"), batch_size=64))
    assert sum(len(b["hr"]) for b in batches) == len(records)
    for key in ("hr", "lr"):
        got = torch.cat([b[key] for b in batches])
        assert got.dtype == torch.float32 and got.ndim == 4 and got.shape[1] == 4
        torch.testing.assert_close(got, _expected(records, key), rtol=0, atol=0)


def test_streaming_batches(folder: Path, records) -> None:
    stream = load_pairs(folder, "synthetic", "train", streaming=True)
    first = next(to_torch_batches(stream, batch_size=8))
    assert first["hr"].shape == (8, 4, TILE, TILE) and first["hr"].dtype == torch.float32
    torch.testing.assert_close(first["hr"], _expected(records[:8], "hr"), rtol=0, atol=0)


def test_torch_dataloader(folder: Path, records) -> None:
    dataset = PairTorchDataset(load_pairs(folder, "synthetic", "train"))
    assert len(dataset) == len(records)
    item = dataset[3]
    torch.testing.assert_close(item["lr"], _expected(records[3:4], "lr")[0], rtol=0, atol=0)
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0)).tolist()
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=6, sampler=order, collate_fn=PairTorchDataset.collate
    )
    batch = next(iter(loader))
    assert batch["hr"].shape == (6, 4, TILE, TILE) and batch["hr"].dtype == torch.float32
    torch.testing.assert_close(batch["hr"], _expected([records[i] for i in order[:6]], "hr"), rtol=0, atol=0)
    stacked = PairTorchDataset.collate([dataset[0], dataset[1]])
    assert stacked["hr"].shape == (2, 4, TILE, TILE)


def test_bad_batches_raise_typed_errors() -> None:
    with pytest.raises(DatasetFormatError, match="shape"):
        batch_to_reflectance({"hr": np.zeros((4, 8, 8), np.uint16), "lr": np.zeros((4, 2, 2), np.uint16)})
    with pytest.raises(DatasetFormatError, match="batch_size"):
        next(to_torch_batches(None, batch_size=0))


def test_library_never_imports_dataset_builder() -> None:
    code = "import sys, sen2naip_hub.data; assert 'dataset_builder' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)


@pytest.mark.parametrize("num_workers", [0, 1])
def test_torch_dataloader_without_collate_fn(folder: Path, records, num_workers) -> None:
    """The default collate of a plain ``DataLoader`` stacks the items (it failed with KeyError: 0)."""
    dataset = PairTorchDataset(load_pairs(folder, "synthetic", "train"))
    loader = torch.utils.data.DataLoader(dataset, batch_size=5, num_workers=num_workers)
    batches = list(loader)
    assert [len(b["hr"]) for b in batches] == [5] * (len(records) // 5) + (
        [len(records) % 5] if len(records) % 5 else []
    )
    torch.testing.assert_close(
        torch.cat([b["lr"] for b in batches]), _expected(records, "lr"), rtol=0, atol=0
    )
    with_collate = torch.utils.data.DataLoader(dataset, batch_size=5, collate_fn=PairTorchDataset.collate)
    torch.testing.assert_close(next(iter(with_collate))["hr"], batches[0]["hr"], rtol=0, atol=0)
