"""Streamed ``sen2naip degrade`` (``sen2naip_hub.streaming``): equal to the in-memory ``degrade_raster``,
window by window, with noise independent of the window size, georeferencing kept at any input
resolution, nothing half-written and the input never overwritten."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from conftest import NAIP_FILES
from rasterio.crs import CRS
from rasterio.windows import Window

import sen2naip_hub.windowed as windowed
from sen2naip_hub.cli import main
from sen2naip_hub.io import read_raster
from sen2naip_hub.models import Degradation
from sen2naip_hub.models.histogram import match_histograms
from sen2naip_hub.models.histogram_stream import FLOAT_BIN_RELATIVE_WIDTH, StreamedHistograms
from sen2naip_hub.pipeline import degrade_raster
from sen2naip_hub.resample import conform_resolution
from sen2naip_hub.sensors import NAIP, reflectance_to_counts, reflectance_to_s2
from sen2naip_hub.streaming import NOISE_BLOCK, add_block_noise, degrade_file
from sen2naip_hub.windowed import HrWindowReader

CROP = Window(40, 60, 560, 320)  # col, row, width, height of the real sample (5 m NAIP): 2 U-Net tiles
WINDOW = 256  # HR px per streamed window: smaller than the crop, so several windows are used
#: A float32 target is binned (histogram_stream.FLOAT_KEY_SHIFT): the output may move by one DN.
FP32_MAX_DN = 1
#: ... and with an off-grid source (an area-averaged finer input) too, by two DN.
FLOAT_SOURCE_MAX_DN = 2


@pytest.fixture(scope="module")
def model(reference_dir) -> Degradation:
    return Degradation.from_pretrained(reference_dir / "sen2naip-degradation")


@pytest.fixture(scope="module")
def crop(tmp_path_factory, sample_dir) -> Path:
    """A crop of the real sample with a nodata hole (0 in every band)."""
    with rasterio.open(NAIP_FILES[0]) as src:
        data, profile = src.read(window=CROP), src.profile
        profile.update(width=CROP.width, height=CROP.height, transform=src.window_transform(CROP))
    data[:, 40:70, 200:260] = 0
    path = tmp_path_factory.mktemp("crop") / "naip.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _stream(model, source: Path, out: Path, **kwargs) -> np.ndarray:
    reader = HrWindowReader(str(source), allow_coarse=True)
    degrade_file(model, reader, out, progress=False, **kwargs)
    with rasterio.open(out) as lr:
        return lr.read().astype(np.int64)


@pytest.mark.parametrize(("precision", "mode"), [("bf16", "global"), ("fp32", "global"), ("fp32", "none")])
def test_streamed_equals_in_memory(model, crop, tmp_path, precision, mode):
    model.harmonization.precision = precision
    try:
        streamed = _stream(
            model,
            crop,
            tmp_path / "lr.tif",
            hr_out=tmp_path / "hr.tif",
            harmonization=mode,
            noise=False,
            tile=WINDOW,
        )
        lr, hr = degrade_raster(
            model, read_raster(crop), harmonization=mode, noise=False, tile=WINDOW, progress=False
        )  # the same blur windows: the same float rounding
    finally:
        model.harmonization.precision = "fp32"
    expected = reflectance_to_s2(lr.data).astype(np.int64)
    with rasterio.open(tmp_path / "hr.tif") as file:
        hr_diff = np.abs(file.read().astype(int) - reflectance_to_counts(hr.data, NAIP).astype(int))
    assert streamed.shape == expected.shape == (4, 80, 140)
    assert np.array_equal(streamed == 0, expected == 0) and (expected == 0).any()  # the same nodata
    diff = np.abs(streamed - expected)
    if precision == "fp32" and mode == "global":  # binned float32 target: within one DN, mostly equal
        assert diff.max() <= FP32_MAX_DN and diff.mean() < 0.5 and hr_diff.max() <= 1
    else:  # exact histograms (8-bit source, bf16 target) or no matching: the same file content
        assert diff.max() == 0 and hr_diff.max() == 0


def test_noise_does_not_depend_on_the_window_size(model):
    """Noise is drawn per fixed block of the LR grid: any split of an LR image into whole blocks gets
    the same noise, the same seed the same noise, another seed other noise."""
    lr = torch.rand(4, 150, 160, generator=torch.Generator().manual_seed(0)) * 0.4
    whole = add_block_noise(model.noise, lr, 0, 0, seed=3)
    for size in (NOISE_BLOCK, 2 * NOISE_BLOCK):  # LR windows of one or two noise blocks
        split = torch.empty_like(lr)
        for r in range(0, 150, size):
            for c in range(0, 160, size):
                window = lr[:, r : r + size, c : c + size]
                split[:, r : r + size, c : c + size] = add_block_noise(model.noise, window, r, c, seed=3)
        assert torch.equal(split, whole)
    assert torch.equal(add_block_noise(model.noise, lr, 0, 0, seed=3), whole)
    assert (add_block_noise(model.noise, lr, 0, 0, seed=4) != whole).float().mean() > 0.5
    assert (whole != lr).float().mean() > 0.5


def test_streamed_noise_is_seeded_and_window_sizes_agree(model, crop, tmp_path):
    runs = {
        size: _stream(model, crop, tmp_path / f"lr_{size}.tif", harmonization="none", seed=3, tile=size)
        for size in (256, 512)
    }
    again = _stream(model, crop, tmp_path / "again.tif", harmonization="none", seed=3, tile=256)
    assert np.array_equal(runs[256], again)
    # other windows round the blur differently (1 DN at most), which rarely moves a noise-table bin
    assert (runs[256] == runs[512]).mean() > 0.999


def test_windows_smaller_than_the_image_are_read(model, crop, tmp_path, monkeypatch):
    calls = []

    def counting_read_raster(path, sensor, window=None, **kwargs):
        calls.append(window)
        return read_raster(path, sensor, window=window, **kwargs)

    monkeypatch.setattr(windowed, "read_raster", counting_read_raster)
    monkeypatch.setattr(windowed, "SCAN_WINDOW", 128)  # the nodata scan's windows, smaller than the crop
    _stream(model, crop, tmp_path / "lr.tif", harmonization="global", noise=False, tile=WINDOW)
    assert None not in calls  # the whole image is never read at once
    areas = [int(w.width) * int(w.height) for w in calls]
    assert len(calls) > 4 and max(areas) < CROP.width * CROP.height


CRS_UTM = CRS.from_epsg(32614)
ORIGIN = (500_000.0, 5_200_000.0)
EXTENT_M = (1200.0, 960.0)  # 480 × 384 HR px at 2.5 m: several 256 px windows


def _scene(path: Path, resolution: float) -> Path:
    width, height = round(EXTENT_M[0] / resolution), round(EXTENT_M[1] / resolution)
    y, x = np.mgrid[0:height, 0:width] * resolution
    scene = 100 + 40 * np.sin(x / 37.0) + 30 * np.cos(y / 23.0)
    data = np.stack([scene + 10 * b for b in range(4)]).astype("uint8")
    transform = Affine(resolution, 0, ORIGIN[0], 0, -resolution, ORIGIN[1])
    profile = dict(driver="GTiff", count=4, height=height, width=width, dtype="uint8")
    with rasterio.open(path, "w", crs=CRS_UTM, transform=transform, **profile) as dst:
        dst.write(data)
    return path


@pytest.mark.parametrize("resolution", [0.6, 1.0, 2.5])
def test_finer_inputs_stream_to_10_m_over_the_same_bounds(model, tmp_path, resolution):
    source = _scene(tmp_path / "in.tif", resolution)
    mode = "global" if resolution == 1.0 else "none"  # 1.0 m: the off-grid (area-averaged) source bins
    reader = HrWindowReader(str(source))
    degrade_file(
        model, reader, tmp_path / "lr.tif", harmonization=mode, noise=False, tile=WINDOW, progress=False
    )
    with rasterio.open(tmp_path / "lr.tif") as lr:
        assert lr.res == (10.0, 10.0) and lr.crs == CRS_UTM
        assert lr.bounds == (ORIGIN[0], ORIGIN[1] - EXTENT_M[1], ORIGIN[0] + EXTENT_M[0], ORIGIN[1])
        streamed = lr.read().astype(np.int64)
    hr, _ = conform_resolution(read_raster(source), str(source))
    lr_mem, _ = degrade_raster(model, hr, harmonization=mode, noise=False, tile=WINDOW, progress=False)
    diff = np.abs(streamed - reflectance_to_s2(lr_mem.data).astype(np.int64))
    if mode == "none":  # the windowed area average is the whole image's
        assert diff.max() == 0
    else:  # float source and fp32 target bins
        assert diff.max() <= FLOAT_SOURCE_MAX_DN and diff.mean() < 0.25


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1)


#: Float source bins: a pixel's rank is interpolated within its bin, so its quantile may be off by
#: less than the bin's share of the pixels; in a sparse tail of the target that moves the value more
#: than a target bin. Measured on real NAIP: 0.1 % of the pixels, by at most 7e-4 (7 S2 DN).
FLOAT_SOURCE_SHARE_OFF = 0.005
FLOAT_SOURCE_MAX_OFF = 2e-3


@pytest.mark.parametrize("case", ["8-bit source, bf16 target", "8-bit source, fp32 target", "float source"])
def test_histograms_added_by_window_match_as_in_memory(naip_tiles, case):
    generator = torch.Generator().manual_seed(1)
    source = naip_tiles[0].clone()
    if case == "float source":  # off the 8-bit grid, as an area-averaged finer input
        source = (source + torch.rand(source.shape, generator=generator) / 300).clamp(0, 1)
    # a continuous target, as the U-Net's
    target = (naip_tiles[1] * 0.6 + 0.02) ** 1.3 + torch.rand(source.shape, generator=generator) * 0.01
    dtype = torch.bfloat16 if case.endswith("bf16 target") else torch.float32
    target = target.to(dtype)
    valid = torch.ones(source.shape[1:], dtype=torch.bool)
    valid[:50, :80] = False
    histograms = StreamedHistograms(4, dtype)
    for rows in (slice(0, 200), slice(200, 484)):  # four windows, each pixel added once
        for cols in (slice(0, 300), slice(300, 484)):
            histograms.add(source[:, rows, cols], target[:, rows, cols], valid[rows, cols])
    mapping = histograms.mapping()
    halves = [mapping.apply(source[:, rows], valid[rows]) for rows in (slice(0, 242), slice(242, 484))]
    streamed = torch.cat(halves, 1)
    expected = match_histograms(source[None], target[None].float(), valid[None], valid[None])[0]
    off = (streamed - expected).abs() > FLOAT_BIN_RELATIVE_WIDTH * expected.abs()  # more than one bin
    if case == "8-bit source, bf16 target":  # exact histograms: the in-memory result
        assert torch.equal(streamed, expected)
    elif case == "8-bit source, fp32 target":  # within one float bin of the value
        assert not off.any() and not torch.equal(streamed, expected)
    else:
        assert off.float().mean() < FLOAT_SOURCE_SHARE_OFF
        assert (streamed - expected).abs().max() < FLOAT_SOURCE_MAX_OFF
    assert torch.equal(streamed[:, :50, :80], source[:, :50, :80])  # nodata unchanged


def _cli(capfd, *args) -> tuple[int, list[str]]:
    capfd.readouterr()
    code = main(["degrade", *map(str, args)])
    return code, capfd.readouterr().err.strip().splitlines()


def test_interrupted_run_leaves_no_output_and_the_input_intact(
    reference_dir, crop, tmp_path, monkeypatch, capfd
):
    source = tmp_path / "naip.tif"
    source.write_bytes(crop.read_bytes())
    before = _digest(source)
    calls = []

    def interrupt(self, x):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, x)

    from sen2naip_hub.models.blur import BlurModel

    original = BlurModel.forward
    monkeypatch.setattr(BlurModel, "forward", interrupt)
    out = tmp_path / "out" / "lr.tif"
    model = reference_dir / "sen2naip-degradation"
    args = (source, out, "--model", model, "--allow-coarse", "--tile", 256, "--batch-size", 1, "--no-noise")
    code, _ = _cli(capfd, *args, "--harmonization", "none", "--hr-out", tmp_path / "out" / "hr.tif")
    assert code == 130 and len(calls) == 2
    assert not out.exists() and not list(out.parent.iterdir())  # no output, no temporary file
    assert _digest(source) == before
    code, err = _cli(capfd, source, source, "--model", model, "--allow-coarse")
    assert code == 1 and len(err) == 1 and "overwrite the input" in err[0]
    assert _digest(source) == before


def test_local_mode_and_all_nodata_are_one_line_errors(reference_dir, crop, tmp_path, capfd):
    model = reference_dir / "sen2naip-degradation"
    out = tmp_path / "lr.tif"
    code, err = _cli(capfd, crop, out, "--model", model, "--allow-coarse", "--harmonization", "local")
    assert code == 1 and len(err) == 1 and "not streamed" in err[0] and not out.exists()
    empty = tmp_path / "empty.tif"
    with rasterio.open(crop) as src:
        profile = src.profile
    with rasterio.open(empty, "w", **profile) as dst:
        dst.write(np.zeros((4, profile["height"], profile["width"]), np.uint8))
    code, err = _cli(capfd, empty, out, "--model", model, "--allow-coarse")  # refused before pass 1
    assert code == 1 and len(err) == 1 and "every pixel is nodata" in err[0] and not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
