"""The build's fingerprint: stable when nothing changed; new when the models or the code change.

Offline and without imagery or weights: the fingerprint only stats the model files and hashes the
code, so a folder with two small files stands in for a converted Degradation model.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

import dataset_builder
import sen2naip_hub
from dataset_builder import build
from dataset_builder.build import BuildError, build_dataset, fingerprint, source_digest
from dataset_builder.checkpoints import FINGERPRINT_FILE
from dataset_builder.config import BuildConfig, from_dict
from sen2naip_hub.convert import REPO_NAMES

MODEL_FILES = ("config.json", "blur/model.safetensors")


def fake_model(folder: Path) -> Path:
    """A folder shaped like a converted model (contents are placeholders; nothing loads them)."""
    for name in MODEL_FILES:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(f"placeholder {name}")
    return folder


def make_config(root: Path, **changes) -> BuildConfig:
    naip = root / "naip"
    naip.mkdir(exist_ok=True)
    data = {
        "out": str(root / "out" / "sen2naip"),
        "device": "cpu",
        "sources": {"naip": {"folder": str(naip)}},
    }
    return from_dict(data | changes)


@pytest.fixture(params=["degradation_model", "models"])
def model_config(request, tmp_path) -> tuple[BuildConfig, Path]:
    """A config naming a fake model folder directly, or through ``models`` (the default layout)."""
    if request.param == "degradation_model":
        folder = fake_model(tmp_path / "my-degradation")
        return make_config(tmp_path, degradation_model=str(folder)), folder
    folder = fake_model(tmp_path / "models" / REPO_NAMES["degradation"])
    return make_config(tmp_path, models=str(tmp_path / "models")), folder


def test_fingerprint_is_stable_when_nothing_changed(model_config) -> None:
    config, _ = model_config
    assert fingerprint(config) == fingerprint(config)


@pytest.mark.parametrize("name", MODEL_FILES)
def test_fingerprint_changes_when_a_model_file_changes(model_config, name) -> None:
    config, folder = model_config
    before = fingerprint(config)
    (folder / name).write_text("new weights")
    assert fingerprint(config) != before


def test_fingerprint_changes_when_only_a_model_file_time_changes(model_config) -> None:
    config, folder = model_config
    before = fingerprint(config)
    stat = (folder / MODEL_FILES[0]).stat()
    os.utime(folder / MODEL_FILES[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert fingerprint(config) != before


def test_fingerprint_changes_when_a_model_file_is_added(model_config) -> None:
    config, folder = model_config
    before = fingerprint(config)
    (folder / "noise").mkdir()
    (folder / "noise" / "config.json").write_text("{}")
    assert fingerprint(config) != before


def test_a_hub_repo_id_counts_by_its_name(tmp_path) -> None:
    first = make_config(tmp_path, degradation_model="org/sen2naip-degradation")
    second = make_config(tmp_path, degradation_model="org/other-degradation")
    assert fingerprint(first) == fingerprint(first) != fingerprint(second)


def test_fingerprint_changes_with_a_local_clip_checkpoint(tmp_path) -> None:
    checkpoint = tmp_path / "clip.pt"
    checkpoint.write_bytes(b"weights")
    config = make_config(tmp_path, synthetic={"clip_pretrained": str(checkpoint)})
    before = fingerprint(config)
    checkpoint.write_bytes(b"other weights")
    assert fingerprint(config) != before


def test_fingerprint_changes_with_the_code(model_config, monkeypatch) -> None:
    config, _ = model_config
    before = fingerprint(config)
    assert build.code_digest() != "0" * 64
    monkeypatch.setattr(build, "code_digest", lambda: "0" * 64)
    assert fingerprint(config) != before


def test_code_digest_hashes_both_package_folders(monkeypatch) -> None:
    seen: list[Path] = []
    monkeypatch.setattr(build, "source_digest", lambda folder: seen.append(folder) or folder.name)
    build.code_digest.__wrapped__()  # uncached
    assert seen == [Path(sen2naip_hub.__file__).parent, Path(dataset_builder.__file__).parent]


def test_code_digest_follows_an_edit_of_the_package(tmp_path, monkeypatch) -> None:
    copy = shutil.copytree(
        Path(dataset_builder.__file__).parent, tmp_path / "pkg", ignore=shutil.ignore_patterns("__pycache__")
    )
    monkeypatch.setattr(dataset_builder, "__file__", str(copy / "__init__.py"))
    before = build.code_digest.__wrapped__()
    with (copy / "build.py").open("a") as f:
        f.write("# an edit\n")
    assert build.code_digest.__wrapped__() != before


def test_source_digest_covers_python_files_only(tmp_path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.py").write_text("A = 1\n")
    (tmp_path / "sub" / "b.py").write_text("B = 2\n")
    (tmp_path / "notes.md").write_text("notes")
    before = source_digest(tmp_path)
    assert source_digest(tmp_path) == before
    (tmp_path / "notes.md").write_text("other notes")
    assert source_digest(tmp_path) == before
    (tmp_path / "sub" / "b.py").write_text("B = 3\n")
    assert source_digest(tmp_path) != before
    (tmp_path / "sub" / "b.py").write_text("B = 2\n")
    assert source_digest(tmp_path) == before
    (tmp_path / "sub" / "b.py").rename(tmp_path / "sub" / "c.py")
    assert source_digest(tmp_path) != before


def test_models_are_converted_before_the_build_is_fingerprinted(tmp_path, monkeypatch) -> None:
    """A first build that converts the published weights records the fingerprint of the converted
    files, so its resumption (or re-run) keeps the checkpoints."""
    models = tmp_path / "models"

    def convert(out: Path) -> None:
        for name in REPO_NAMES.values():
            fake_model(Path(out) / name)

    monkeypatch.setattr(build, "convert_reference", convert)
    config = make_config(tmp_path, models=str(models))
    with pytest.raises(BuildError, match="no usable NAIP"):  # the empty NAIP folder stops it after
        build_dataset(config, progress=False, echo=lambda _: None)
    assert (models / REPO_NAMES["degradation"] / MODEL_FILES[0]).is_file()
    marker = json.loads((config.work_path / FINGERPRINT_FILE).read_text())
    assert marker["fingerprint"] == fingerprint(config)
