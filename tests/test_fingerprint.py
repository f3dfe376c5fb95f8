"""The build's fingerprints: stable when nothing changed; new for exactly the stages whose models, config
or code changed; a resumed build restarts those stages and says so.

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
from dataset_builder.build import build_dataset
from dataset_builder.core import context
from dataset_builder.core import fingerprint as fingerprints
from dataset_builder.core.checkpoints import DONE_NAME, FINGERPRINT_FILE, Checkpoints
from dataset_builder.core.config import BuildConfig, from_dict
from dataset_builder.core.errors import BuildError
from dataset_builder.core.fingerprint import STAGES, fingerprint, source_digest, stage_fingerprints
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


def _changed_stages(before: dict, after: dict) -> set[str]:
    return {stage for stage in STAGES if before[stage] != after[stage]}


def test_a_local_clip_checkpoint_changes_the_synthetic_stage_only(tmp_path) -> None:
    checkpoint = tmp_path / "clip.pt"
    checkpoint.write_bytes(b"weights")
    config = make_config(tmp_path, synthetic={"clip_pretrained": str(checkpoint)})
    before = stage_fingerprints(config)
    checkpoint.write_bytes(b"other weights")
    assert _changed_stages(before, stage_fingerprints(config)) == {"synthetic", "write"}


def test_a_config_change_reaches_its_stage_and_the_ones_after_it(tmp_path) -> None:
    config = make_config(tmp_path)
    before = stage_fingerprints(config)
    assert _changed_stages(before, stage_fingerprints(config.with_overrides({"synthetic.size": 900}))) == {
        "synthetic",
        "write",
    }
    changed = _changed_stages(before, stage_fingerprints(config.with_overrides({"sources.max_days": 3})))
    assert changed == set(STAGES)
    assert stage_fingerprints(config.with_overrides({"out": str(tmp_path / "elsewhere")})) == before


def test_the_code_of_one_stage_changes_that_stage_and_the_library_changes_all(
    model_config, monkeypatch
) -> None:
    config, _ = model_config
    before = stage_fingerprints(config)
    real = fingerprints.code_digest
    monkeypatch.setattr(
        fingerprints, "code_digest", lambda stage: "0" * 64 if stage == "synthetic" else real(stage)
    )
    # the write stage reads (and holds the shards of) every stage, so it restarts with any of them
    assert _changed_stages(before, stage_fingerprints(config)) == {"synthetic", "write"}
    monkeypatch.setattr(fingerprints, "code_digest", lambda stage: "0" * 64)
    assert _changed_stages(before, stage_fingerprints(config)) == set(STAGES)


def test_code_digest_hashes_the_library_and_the_stage_folders(monkeypatch) -> None:
    seen: list[Path] = []
    monkeypatch.setattr(fingerprints, "source_digest", lambda folder: seen.append(folder) or folder.name)
    fingerprints.code_digest.__wrapped__("cross_sensor")  # uncached
    builder = Path(dataset_builder.__file__).parent
    assert seen == [
        Path(sen2naip_hub.__file__).parent,
        builder / "core",
        builder / "backends",
        builder / "cross_sensor",
    ]


def test_code_digest_follows_an_edit_of_the_installed_sources(tmp_path, monkeypatch) -> None:
    copy = shutil.copytree(
        Path(dataset_builder.__file__).parent, tmp_path / "pkg", ignore=shutil.ignore_patterns("__pycache__")
    )
    monkeypatch.setattr(dataset_builder, "__file__", str(copy / "__init__.py"))
    before = {stage: fingerprints.code_digest.__wrapped__(stage) for stage in STAGES}
    with (copy / "synthetic" / "stage.py").open("a") as f:
        f.write("# an edit\n")
    after = {stage: fingerprints.code_digest.__wrapped__(stage) for stage in STAGES}
    assert [stage for stage in STAGES if before[stage] != after[stage]] == ["synthetic"]


def test_a_resumed_build_restarts_the_changed_stages_and_says_so(tmp_path) -> None:
    old = {stage: {"code": "a", "config": "b", "inputs": "c", "models": "d"} for stage in STAGES}
    store = Checkpoints.open(tmp_path, old, echo=lambda _: None)
    for name in ("sources/files.json", "cross_sensor/pair-00000.npz", "synthetic/embed-00000.npz", DONE_NAME):
        store.save_json(name, {})
    new = old | {"synthetic": old["synthetic"] | {"code": "changed"}}
    messages: list[str] = []
    store = Checkpoints.open(tmp_path, new, echo=messages.append)
    assert messages == [f"code changed since the checkpoints in {tmp_path} were made: restarting synthetic"]
    assert store.has("sources/files.json") and store.has("cross_sensor/pair-00000.npz")
    assert not store.has("synthetic/embed-00000.npz") and not store.has(DONE_NAME)
    messages.clear()
    Checkpoints.open(tmp_path, new, echo=messages.append)
    assert messages == [] and store.has("cross_sensor/pair-00000.npz")


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

    monkeypatch.setattr(context, "convert_reference", convert)
    config = make_config(tmp_path, models=str(models))
    with pytest.raises(BuildError, match="no usable NAIP"):  # the empty NAIP folder stops it after
        build_dataset(config, progress=False, echo=lambda _: None)
    assert (models / REPO_NAMES["degradation"] / MODEL_FILES[0]).is_file()
    marker = json.loads((config.work_path / FINGERPRINT_FILE).read_text())
    assert marker["stages"] == stage_fingerprints(config)
