"""Parquet shards + dataset card: written from PairRecords of real NAIP tiles, loaded back offline.

The LR of each record is a 4 × 4 block mean of its HR tile (a stand-in for the degradation model);
``cross_sensor`` rows here are therefore *simulated* pairs (``source="simulated"``): no co-located
NAIP + Sentinel-2 pair exists offline. The writer treats them exactly as real ones.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections import Counter
from pathlib import Path
from unittest import mock

import datasets
import huggingface_hub
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import SAMPLE_DIR
from huggingface_hub.utils import filter_repo_objects

from dataset_builder.core.facts import DATASET_LICENSE
from dataset_builder.core.records import SPLIT_NAMES, PairRecord
from dataset_builder.core.splits import RoiSplitter, spatial_roi_id
from dataset_builder.core.tiling import iter_tiles
from dataset_builder.write.repo import push_dataset, write_dataset
from dataset_builder.write.shards import (
    ShardLimits,
    WriterError,
    pair_features,
    shard_ranges,
    write_config,
    write_shard,
)
from sen2naip_hub.errors import InvalidImageError
from sen2naip_hub.io import lr_transform
from sen2naip_hub.sensors import SCALE_FACTOR, reflectance_to_s2

NAIP_DIR = SAMPLE_DIR / "naip"
TILE = 64
N_IMAGES = 3  # 3 dates of one place → every ROI has 3 acquisitions
#: Small shards so the test covers several shards per split.
SMALL_SHARDS = ShardLimits(max_rows=60)


def _block_mean(data: np.ndarray) -> np.ndarray:
    c, h, w = data.shape
    return data.reshape(c, h // SCALE_FACTOR, SCALE_FACTOR, w // SCALE_FACTOR, SCALE_FACTOR).mean(axis=(2, 4))


def make_records(n_images: int = N_IMAGES, tile: int = TILE) -> dict[str, list[PairRecord]]:
    """``{"synthetic": [...], "cross_sensor": [...]}`` from real NAIP tiles (cross_sensor: every other)."""
    paths = sorted(NAIP_DIR.glob("*.tif"))[:n_images]
    if len(paths) < n_images:
        pytest.skip(f"real NAIP sample not found in {NAIP_DIR}")
    synthetic, cross = [], []
    for index, t in enumerate(iter_tiles(paths, tile)):
        roi = spatial_roi_id(t.crs, t.transform, tile, tile)
        date = dt.datetime.strptime(t.date, "%Y%m%d").date()
        common = {
            "roi_id": roi,
            "hr": reflectance_to_s2(t.data),
            "lr": reflectance_to_s2(_block_mean(t.data)),
            "crs": t.crs.to_wkt(),
            "hr_transform": t.transform.to_gdal(),
            "lr_transform": lr_transform(t.transform).to_gdal(),
            "hr_date": date,
            "source": "simulated",
        }
        synthetic.append(
            PairRecord(
                **common,
                lr_date=None,
                qa1=math.nan,
                qa2=math.nan,
                shift_x=0.0,
                shift_y=0.0,
                degradation_model="tests/block-mean-x4",
            )
        )
        if index % 2 == 0:
            cross.append(
                PairRecord(
                    **common,
                    lr_date=date + dt.timedelta(days=2),
                    qa1=0.1,
                    qa2=1.5,
                    shift_x=0.25,
                    shift_y=-0.5,
                    degradation_model=None,
                )
            )
    return {"synthetic": synthetic, "cross_sensor": cross}


@pytest.fixture(scope="module")
def records() -> dict[str, list[PairRecord]]:
    return make_records()


@pytest.fixture
def written(records, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    out = tmp_path / "sen2naip"
    counts = write_dataset(records, out, limits=SMALL_SHARDS)
    assert all(counts[c][s] > 0 for c in counts for s in SPLIT_NAMES), counts
    monkeypatch.chdir(tmp_path)
    return out


def _front_matter(readme: Path) -> dict:
    return yaml.safe_load(readme.read_text().split("---\n")[1])


def _shard_digests(out: Path) -> dict[str, str]:
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file()
    }


def test_layout_and_card(written: Path, records) -> None:
    names = sorted(str(p.relative_to(written)) for p in written.rglob("*") if p.is_file())
    assert "README.md" in names and "synthetic/train-00000.parquet" in names
    assert "cross_sensor/test-00000.parquet" in names
    assert not [n for n in names if Path(n).name.startswith(".") or n.endswith(".tmp")]
    meta = _front_matter(written / "README.md")
    assert meta["license"] == DATASET_LICENSE == "cc-by-4.0"
    assert meta["task_categories"] == ["image-to-image"]
    assert {"remote-sensing", "sentinel-2", "naip", "super-resolution"} <= set(meta["tags"])
    configs = {c["config_name"]: c["data_files"] for c in meta["configs"]}
    assert set(configs) == {"cross_sensor", "synthetic"}
    assert configs["synthetic"] == [{"split": s, "path": f"synthetic/{s}-*.parquet"} for s in SPLIT_NAMES]
    body = (written / "README.md").read_text()
    assert f"| {len(records['synthetic'])} |" in body and "B04" in body and "10000" in body


def test_load_dataset_offline_exact_features(written: Path, records) -> None:
    hr_shape, lr_shape = (4, TILE, TILE), (4, TILE // SCALE_FACTOR, TILE // SCALE_FACTOR)
    expected = pair_features(hr_shape, lr_shape)
    synthetic = datasets.load_dataset("sen2naip", "synthetic")
    assert set(synthetic) == set(SPLIT_NAMES)
    assert sum(len(d) for d in synthetic.values()) == len(records["synthetic"])
    for split in synthetic.values():
        assert split.features == expected
    test = datasets.load_dataset("sen2naip", "cross_sensor", split="test")
    assert test.features == expected and len(test) > 0
    row = test.with_format("numpy", columns=["hr", "lr"], dtype=np.uint16)[0]
    assert row["hr"].dtype == np.uint16 and row["hr"].shape == hr_shape and row["lr"].shape == lr_shape
    first = test[0]
    source = next(
        r
        for r in records["cross_sensor"]
        if r.roi_id == first["roi_id"] and r.hr_date.isoformat() == first["hr_date"]
    )
    np.testing.assert_array_equal(row["hr"], source.hr)
    np.testing.assert_array_equal(row["lr"], source.lr)
    assert first["lr_date"] == source.lr_date.isoformat() and first["degradation_model"] is None
    assert first["hr_transform"] == list(source.hr_transform) and first["crs"] == source.crs
    assert first["qa1"] == pytest.approx(0.1) and first["shift_y"] == -0.5
    synthetic_row = synthetic["train"][0]
    assert synthetic_row["lr_date"] is None and math.isnan(synthetic_row["qa1"])


def test_streaming_offline(written: Path) -> None:
    stream = datasets.load_dataset("sen2naip", "synthetic", split="validation", streaming=True)
    first = next(iter(stream.with_format("numpy")))
    assert first["hr"].shape == (4, TILE, TILE)
    assert (
        sum(1 for _ in stream) == datasets.load_dataset("sen2naip", "synthetic", split="validation").num_rows
    )


def test_no_roi_in_two_splits(written: Path, records) -> None:
    for config, rows in records.items():
        loaded = datasets.load_dataset("sen2naip", config)
        rois = {split: set(loaded[split]["roi_id"]) for split in SPLIT_NAMES}
        for a, b in ((0, 1), (0, 2), (1, 2)):
            assert not rois[SPLIT_NAMES[a]] & rois[SPLIT_NAMES[b]]
        # every acquisition (date) of a ROI is in its one split
        expected = Counter(r.roi_id for r in rows)
        for split in SPLIT_NAMES:
            for roi, n in Counter(loaded[split]["roi_id"]).items():
                assert n == expected[roi]
    assert len({r.roi_id for r in records["synthetic"]}) * N_IMAGES == len(records["synthetic"])


def test_rewrite_is_byte_identical_and_cleans_up(written: Path, records, tmp_path: Path) -> None:
    before = _shard_digests(written)
    assert sum(1 for n in before if n.startswith("synthetic/train-")) > 1  # several shards
    write_dataset(records, written, limits=SMALL_SHARDS)
    assert _shard_digests(written) == before
    elsewhere = tmp_path / "again"
    write_dataset(records, elsewhere, limits=SMALL_SHARDS)
    assert _shard_digests(elsewhere) == before
    # Larger shards: fewer files, the old higher-numbered ones removed, rows unchanged.
    write_dataset(records, written)
    assert sorted(p.name for p in (written / "synthetic").iterdir()) == [
        f"{s}-00000.parquet" for s in sorted(SPLIT_NAMES)
    ]
    reloaded = datasets.load_dataset("sen2naip", "synthetic")
    assert sum(split.num_rows for split in reloaded.values()) == len(records["synthetic"])


def test_shard_limits(records, tmp_path: Path) -> None:
    rows = records["synthetic"][:20]
    counts = write_config(
        rows, tmp_path, "synthetic", splitter=RoiSplitter((1.0, 0.0, 0.0)), limits=ShardLimits(max_bytes=1)
    )
    shards = sorted((tmp_path / "synthetic").glob("train-*.parquet"))
    assert counts == {"train": 20, "validation": 0, "test": 0}
    assert len(shards) == 20 and all(pq.read_metadata(p).num_rows == 1 for p in shards)


def test_shards_written_one_by_one_equal_write_config(records, tmp_path: Path) -> None:
    """A split cut by shard_ranges and written shard by shard (in any order) gives write_config's bytes."""
    rows = [r for r in records["synthetic"] if RoiSplitter().split_of(r.roi_id) == "train"]
    limits = ShardLimits(
        max_rows=7, max_bytes=5 * (rows[0].hr.nbytes + rows[0].lr.nbytes) + 1, row_group_bytes=1
    )
    splitter = RoiSplitter((1.0, 0.0, 0.0))
    write_config(rows, tmp_path / "whole", "synthetic", splitter=splitter, limits=limits)
    ranges = shard_ranges([r.hr.nbytes + r.lr.nbytes for r in rows], limits)
    assert ranges[0] == (0, 5) and ranges[-1][1] == len(rows) and len(ranges) == -(-len(rows) // 5)
    for index, (start, stop) in reversed(list(enumerate(ranges))):
        write_shard(rows[start:stop], tmp_path / "parts", "train", index, limits)
    assert _shard_digests(tmp_path / "parts") == _shard_digests(tmp_path / "whole" / "synthetic")
    with pytest.raises(WriterError, match="do not fit one shard"):
        write_shard(rows[:6], tmp_path / "too_many", "train", 0, limits)
    assert not list((tmp_path / "too_many").glob("*"))


def test_empty_splits_are_left_out_and_the_rest_loads(records, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "sen2naip"
    counts = write_dataset(
        {"synthetic": records["synthetic"][:30]}, out, splitter=RoiSplitter((0.0, 0.0, 1.0))
    )
    assert counts == {"synthetic": {"train": 0, "validation": 0, "test": 30}}
    meta = _front_matter(out / "README.md")
    assert meta["configs"] == [
        {"config_name": "synthetic", "data_files": [{"split": "test", "path": "synthetic/test-*.parquet"}]}
    ]
    monkeypatch.chdir(tmp_path)
    assert datasets.load_dataset("sen2naip", "synthetic", split="test").num_rows == 30


def test_invalid_records_raise_typed_errors(records, tmp_path: Path) -> None:
    good = records["synthetic"][0]
    bad_dtype = PairRecord(**{**good.__dict__, "hr": good.hr.astype(np.float32)})
    with pytest.raises(InvalidImageError, match="uint16"):
        write_config([bad_dtype], tmp_path, "synthetic")
    bad_lr = PairRecord(**{**good.__dict__, "lr": good.hr})
    with pytest.raises(InvalidImageError, match="hr / 4"):
        write_config([bad_lr], tmp_path, "synthetic")
    with pytest.raises(WriterError, match="config"):
        write_config([good], tmp_path, "nope")
    assert not list(tmp_path.rglob("*.tmp"))


def test_push_dataset_uploads_card_and_shards(written: Path) -> None:
    (written / "synthetic" / ".train-leftover.parquet.tmp").write_bytes(b"partial")
    uploaded: list[str] = []

    def fake_upload(folder_path, allow_patterns, ignore_patterns, **kwargs):
        files = sorted(str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*") if p.is_file())
        uploaded.extend(
            filter_repo_objects(files, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns)
        )
        return "commit-info"

    api = mock.MagicMock(spec=huggingface_hub.HfApi)
    api.upload_folder.side_effect = fake_upload
    result = push_dataset(written, "someone/sen2naip", api=api, commit_message="Release v0.1")
    assert result == "commit-info"
    api.create_repo.assert_called_once_with(
        repo_id="someone/sen2naip", repo_type="dataset", exist_ok=True, private=None
    )
    kwargs = api.upload_folder.call_args.kwargs
    assert kwargs["repo_id"] == "someone/sen2naip" and kwargs["repo_type"] == "dataset"
    assert kwargs["commit_message"] == "Release v0.1"
    on_disk = sorted(str(p.relative_to(written)) for p in written.rglob("*.parquet"))
    assert sorted(uploaded) == sorted(["README.md", "build.json", *on_disk])
    with pytest.raises(WriterError, match="README"):
        push_dataset(written / "synthetic", "someone/x", api=api)
