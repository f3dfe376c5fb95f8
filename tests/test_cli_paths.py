"""``sen2naip degrade``: output paths are checked before any computation, each refusal is one line."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import write_geotiff

from sen2naip_hub.cli import main
from sen2naip_hub.models import Degradation, HarmonizationModel


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A Degradation without harmonization (the U-Net's weights are never used), saved once."""
    folder = tmp_path_factory.mktemp("tiny") / "model"
    Degradation(harmonization=HarmonizationModel(mode="none")).save_pretrained(folder)
    return folder


@pytest.fixture
def naip(tmp_path) -> Path:
    data = np.random.default_rng(0).integers(1, 255, (4, 32, 32), dtype=np.uint8)
    return write_geotiff(tmp_path / "in.tif", data)


def _degrade(capfd, *args: str) -> tuple[int, list[str]]:
    code = main(["degrade", *map(str, args)])
    err = capfd.readouterr().err
    return code, err.strip().splitlines()


def _refused(capfd, model: Path, *args: str, match: str) -> list[str]:
    code, lines = _degrade(capfd, *args, "--model", model, "--no-noise")
    assert code == 1
    assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], lines
    return lines


def test_output_equal_to_input_is_refused_and_the_input_kept(tmp_path, naip, tiny_model, capfd):
    before = naip.read_bytes()
    other_spelling = tmp_path / "." / ".." / tmp_path.name / "in.tif"
    link = tmp_path / "link.tif"
    link.symlink_to(naip)
    for output in (naip, other_spelling, link):
        _refused(capfd, tiny_model, naip, output, match="would overwrite the input")
    _refused(capfd, tiny_model, naip, tmp_path / "lr.tif", "--hr-out", link, match="overwrite the input")
    _refused(capfd, tiny_model, link, naip, match="would overwrite the input")
    assert naip.read_bytes() == before and not (tmp_path / "lr.tif").exists()


def test_output_and_hr_out_must_differ(tmp_path, naip, tiny_model, capfd):
    out = tmp_path / "lr.tif"
    _refused(capfd, tiny_model, naip, out, "--hr-out", out, match="same file")


def test_output_that_is_a_directory_or_under_a_file_is_refused_before_computing(
    tmp_path, naip, tiny_model, capfd, monkeypatch
):
    import sen2naip_hub.pipeline

    def never(*args, **kwargs):
        raise AssertionError("degraded before checking the output path")

    monkeypatch.setattr(sen2naip_hub.pipeline, "degrade_raster", never)
    folder = tmp_path / "folder"
    folder.mkdir()
    a_file = tmp_path / "plain"
    a_file.write_text("x")
    _refused(capfd, tiny_model, naip, folder, match="is a directory")
    _refused(capfd, tiny_model, naip, a_file / "lr.tif", match="not a directory")
    _refused(capfd, tiny_model, naip, a_file / "deeper" / "lr.tif", match="not a directory")
    _refused(capfd, tiny_model, naip, tmp_path / "ok.tif", "--hr-out", folder, match="is a directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "in.tif", "plain"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_output_in_a_read_only_folder_is_refused(tmp_path, naip, tiny_model, capfd):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    _refused(capfd, tiny_model, naip, locked / "lr.tif", match="not writable")


def test_missing_parent_folders_are_created(tmp_path, naip, tiny_model, capfd):
    out = tmp_path / "new" / "deeper" / "lr.tif"
    code, _ = _degrade(capfd, naip, out, "--model", tiny_model, "--no-noise")
    assert code == 0 and out.is_file()
