"""Files we write get the permissions the umask allows (0o666 & ~umask), like any other program's, not
the 0o600 of a temporary file; none is world-writable unless the umask says so."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import rasterio

from sen2naip_hub.cli import main
from sen2naip_hub.files import atomic_file
from sen2naip_hub.io import Raster, write_raster
from sen2naip_hub.models import Degradation, HarmonizationModel

UMASKS = (0o022, 0o077, 0o002)


@contextmanager
def umask(mask: int) -> Iterator[None]:
    before = os.umask(mask)
    try:
        yield
    finally:
        os.umask(before)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask", UMASKS)
def test_atomic_file_respects_the_umask(tmp_path, mask):
    target = tmp_path / "out.txt"
    with umask(mask), atomic_file(target) as tmp:
        tmp.write_text("done")
    assert _mode(target) == 0o666 & ~mask


@pytest.mark.parametrize("mask", UMASKS)
def test_write_raster_respects_the_umask(tmp_path, mask):
    raster = Raster(np.full((4, 8, 8), 0.2, np.float32), None, rasterio.Affine.identity(), ("a",) * 4)
    with umask(mask):
        path = write_raster(tmp_path / "lr.tif", raster)
    assert _mode(path) == 0o666 & ~mask


@pytest.mark.parametrize("mask", (0o022, 0o027))
def test_degrade_output_respects_the_umask(tmp_path, mask):
    model = tmp_path / "model"
    Degradation(harmonization=HarmonizationModel(mode="none")).save_pretrained(model)
    naip = tmp_path / "in.tif"
    with rasterio.open(naip, "w", driver="GTiff", count=4, height=32, width=32, dtype="uint8") as dst:
        dst.write(np.full((4, 32, 32), 90, np.uint8))
    out, hr = tmp_path / "lr.tif", tmp_path / "hr.tif"
    with umask(mask):
        code = main(
            ["degrade", str(naip), str(out), "--hr-out", str(hr), "--model", str(model), "--no-noise"]
        )
    assert code == 0 and _mode(out) == _mode(hr) == 0o666 & ~mask


def test_a_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError), atomic_file(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mask", (0o022, 0o027))
def test_saved_model_weights_respect_the_umask(tmp_path, mask):
    """safetensors writes through its own 0o600 temporary file; the saved weights still follow the umask."""
    from sen2naip_hub.models import BlurModel, NoiseModel

    with umask(mask):
        BlurModel().save_pretrained(tmp_path / "blur")
        Degradation(HarmonizationModel(encoder="resnet18"), BlurModel(), NoiseModel()).save_pretrained(
            tmp_path / "deg"
        )
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len([p for p in files if p.name == "model.safetensors"]) == 4
    assert {p.name: _mode(p) for p in files} == {p.name: 0o666 & ~mask for p in files}
