"""``sen2naip degrade`` and ``convert-reference``: outputs, tiling without seams, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import rasterio
import torch
from conftest import NAIP_FILES, write_geotiff

from sen2naip_hub import Degradation
from sen2naip_hub.cli import main
from sen2naip_hub.io import read_raster
from sen2naip_hub.pipeline import degrade_raster


@pytest.fixture(scope="module")
def model_dir(reference_dir):
    return reference_dir / "sen2naip-degradation"


def test_degrade_writes_an_s2_like_cog(tmp_path, model_dir, sample_dir):
    out, hr_out = tmp_path / "lr.tif", tmp_path / "hr.tif"
    code = main(
        [
            "degrade",
            str(NAIP_FILES[0]),
            str(out),
            "--model",
            str(model_dir),
            "--seed",
            "1",
            "--hr-out",
            str(hr_out),
            "--allow-coarse",  # the sample is resampled to 5 m, coarser than NAIP's 2.5 m
        ]
    )
    assert code == 0
    with rasterio.open(NAIP_FILES[0]) as src, rasterio.open(out) as lr, rasterio.open(hr_out) as hr:
        assert lr.descriptions == ("B04", "B03", "B02", "B08") and lr.dtypes[0] == "uint16"
        assert lr.crs == src.crs and lr.res == (src.res[0] * 4, src.res[1] * 4)
        assert (lr.width, lr.height) == (src.width // 4, src.height // 4)
        assert lr.transform.c == src.transform.c and lr.transform.f == src.transform.f
        assert lr.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert hr.shape == src.shape and hr.descriptions == ("R", "G", "B", "NIR")
        values = lr.read().astype(float) / 10000
        assert 0.01 < values.mean() < 0.5


def test_tiles_leave_no_seams(model_dir, sample_dir):
    """Small tiles give the same image as one big tile: blur equal, harmonization to U-Net precision."""
    model = Degradation.from_pretrained(model_dir)
    raster = read_raster(NAIP_FILES[1])
    big, _ = degrade_raster(model, raster, tile=1024, seed=5, progress=False)
    small, _ = degrade_raster(model, raster, tile=96, seed=5, progress=False)
    assert np.abs(big.data - small.data).max() < 2e-3
    assert np.abs(big.data - small.data).mean() < 1e-4
    plain_big, _ = degrade_raster(model, raster, tile=1024, harmonization="none", progress=False)
    plain_small, _ = degrade_raster(model, raster, tile=64, harmonization="none", progress=False)
    whole = model(
        torch.from_numpy(raster.data)[None], harmonization="none", generator=torch.Generator().manual_seed(0)
    )
    assert np.abs(plain_small.data - plain_big.data).max() < 1e-6
    assert np.abs(plain_small.data - whole.lr[0].numpy()).max() < 1e-6


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sen2naip_hub.cli", *args], capture_output=True, text=True, timeout=300
    )


def _bad_inputs(tmp_path):
    def write(name, data, **profile):
        return write_geotiff(tmp_path / name, data, **profile)

    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(NAIP_FILES[0].read_bytes()[:30_000])
    text = tmp_path / "notes.tif"
    text.write_text("hello")
    return {
        "3 bands": (write("rgb.tif", np.ones((3, 16, 16), np.uint8)), "expected 4 bands"),
        "1 band": (write("gray.tif", np.ones((1, 16, 16), np.uint8)), "expected 4 bands"),
        "truncated": (truncated, "truncated.tif"),
        "not a tiff": (text, "not a readable GeoTIFF"),
        "all nodata": (
            write("empty.tif", np.zeros((4, 16, 16), np.uint8), nodata=0),
            "every pixel is nodata",
        ),
        "too small": (write("tiny.tif", np.ones((4, 3, 3), np.uint8)), "smaller than one LR pixel"),
        "float out of range": (write("bright.tif", np.full((4, 16, 16), 2.0, np.float32)), r"\[0, 1\]"),
    }


def test_bad_inputs_give_one_line_and_no_output(tmp_path, model_dir, sample_dir):
    out = tmp_path / "out" / "lr.tif"
    for label, (path, message) in _bad_inputs(tmp_path).items():
        result = _run_cli("degrade", str(path), str(out), "--model", str(model_dir))
        assert result.returncode == 1, label
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (label, result.stderr)
        assert str(path.name) in lines[0] or label in ("too small", "all nodata"), (label, lines[0])
        import re

        assert re.search(message, lines[0]), (label, lines[0])
        assert not out.exists() and not (out.parent.exists() and any(out.parent.iterdir())), label


def test_unknown_model_and_bad_options(tmp_path, sample_dir):
    out = tmp_path / "lr.tif"
    coarse = "--allow-coarse"  # the sample is 5 m
    result = _run_cli("degrade", str(NAIP_FILES[0]), str(out), coarse, "--model", "./no/such/model")
    assert result.returncode == 1 and "no such model folder" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = _run_cli("degrade", str(NAIP_FILES[0]), str(out), coarse, "--model", "nobody/no-such-repo")
    assert result.returncode == 1 and "nobody/no-such-repo" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = _run_cli("degrade", str(NAIP_FILES[0]), str(out), coarse, "--harmonization", "median")
    assert result.returncode == 1 and "--harmonization must be one of" in result.stderr
    assert not out.exists()


def test_nodata_pixels_stay_nodata_in_the_output(tmp_path, model_dir, sample_dir):
    with rasterio.open(NAIP_FILES[0]) as src:
        data, profile = src.read(window=rasterio.windows.Window(0, 0, 256, 256)), src.profile
        profile.update(
            width=256, height=256, transform=src.window_transform(rasterio.windows.Window(0, 0, 256, 256))
        )
    data[:, 100:140, 100:140] = 0  # nodata = 0 in every band
    holed = tmp_path / "holed.tif"
    with rasterio.open(holed, "w", **profile) as dst:
        dst.write(data)
    out = tmp_path / "lr.tif"
    assert main(["degrade", str(holed), str(out), "--model", str(model_dir), "--allow-coarse"]) == 0
    with rasterio.open(out) as lr:
        mask = lr.read(1) == 0
    assert mask[25:35, 25:35].all()  # LR pixels fully inside the hole
    assert not mask[:20].any() and not mask[45:].any()  # beyond the kernel's reach: valid


def test_convert_reference_command(tmp_path):
    assert main(["convert-reference", "--out", str(tmp_path)]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["sen2naip-blur", "sen2naip-degradation", "sen2naip-harmonization", "sen2naip-noise"]
    assert not list(tmp_path.rglob("*.pt")) and not list(tmp_path.rglob("*.bin"))


@pytest.mark.parametrize("argv", [["degrade", "in.tif", "out.tif", "--bogus"], ["no-such-command"]])
def test_usage_errors_are_reported_without_a_traceback(argv, tmp_path, capsys, monkeypatch):
    """typer ships its own copy of click: its usage errors are shown as usage errors, exit code 2."""
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("Error: ")
