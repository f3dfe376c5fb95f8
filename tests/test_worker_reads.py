"""The synthetic stage's worker reads: 8-bit values that equal the reflectance path, worker processes
that write the same dataset as threads, spooled arrays that are cleaned up, and workers free of torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from affine import Affine
from build_helpers import TILE, digests, small_config
from conftest import offline_hf, write_geotiff
from rasterio.windows import Window

from dataset_builder.core import tiling, workers
from dataset_builder.core.config import BuildConfig
from dataset_builder.core.context import BuildContext, worker_processes
from dataset_builder.synthetic import reads
from dataset_builder.synthetic.stage import counts_on_device, load_degrade
from sen2naip_hub.io import read_raster, read_stored_windows, read_windows
from sen2naip_hub.sensors import reflectance_to_naip, reflectance_to_s2

SIZE = 16
REPO = Path(__file__).resolve().parents[1]


def _every_count(tmp_path: Path) -> Path:
    """A NAIP-like uint8 image holding every count 0..255 in every band, nodata pixels (all bands 0),
    and dark pixels that are 0 in some bands only (valid: the DN rule maps them to 1)."""
    rng = np.random.default_rng(5)
    data = rng.permutation(np.tile(np.arange(256, dtype=np.uint8), 4 * 4)).reshape(4, 2 * SIZE, 2 * SIZE)
    data[:, 3, :5] = 0  # nodata
    data[0, 4, :5] = 0  # dark in one band only
    transform = Affine(2.5, 0, 300_000.0, 0, -2.5, 5_000_000.0)
    return write_geotiff(tmp_path / "m_1_20200601.tif", data, nodata=0, crs="EPSG:26914", transform=transform)


def test_8bit_values_equal_the_conversion_of_the_reflectance(tmp_path) -> None:
    path = _every_count(tmp_path)
    window = Window(0, 0, 2 * SIZE, 2 * SIZE)
    (stored,) = read_stored_windows(path, [window])
    reflectance = read_raster(path, window=window).data
    assert stored.valid is not None and not stored.valid.all()
    np.testing.assert_array_equal(stored.to_raster().data, reflectance)
    np.testing.assert_array_equal(reads.stored_rgb(stored), reflectance_to_naip(reflectance[:3]))
    np.testing.assert_array_equal(reads.stored_s2(stored), reflectance_to_s2(reflectance))


def test_counts_converted_on_the_device_equal_the_file_reflectance(tmp_path) -> None:
    path = _every_count(tmp_path)
    tiles = [{"path": str(path), "row": r, "col": c} for r in (0, SIZE) for c in (0, SIZE)]
    values, valid, where = reads.read_hr_group(tiles, SIZE)
    hr = counts_on_device(torch.from_numpy(values), torch.from_numpy(valid)).numpy()
    expected = read_windows(path, [Window(t["col"], t["row"], SIZE, SIZE) for t in tiles])
    for index, raster in enumerate(expected):
        np.testing.assert_array_equal(hr[index], raster.data)  # NaN where nodata, bit for bit elsewhere
        assert where[index] == (raster.crs, raster.transform)


def test_blank_rule_on_stored_counts_decides_as_on_reflectance(sample_dir) -> None:
    """Every 128-px grid tile of two real NAIP images, and constant, nodata and near-constant ones."""
    for path in sorted((sample_dir / "naip").glob("*.tif"))[:2]:
        origins = list(tiling.grid_origins(path, TILE))
        stored = read_stored_windows(path, [Window(c, r, TILE, TILE) for r, c in origins])
        for window in stored:
            data = window.to_raster().data
            by_counts = tiling.blank_reason(window.counts, valid=window.valid, scale=1 / 255)
            assert (by_counts is None) == (tiling.blank_reason(data) is None)
    flat = np.full((4, 8, 8), 90, dtype=np.uint8)
    almost = flat.copy()
    almost[:, :4] += 1  # std 0.5 count < 1 count
    textured = flat.copy()
    textured[:, :, ::2] += 3
    for counts in (flat, almost, textured):
        assert tiling.blank_reason(counts, scale=1 / 255) == tiling.blank_reason(counts / np.float32(255))
    valid = np.ones((8, 8), bool)
    valid[0, 0] = False
    assert tiling.blank_reason(textured, valid=valid, scale=1 / 255).startswith("blank: nodata 1.6%")


def test_band_std_of_8_bit_values_is_numpys_from_exact_sums() -> None:
    """Random, masked-out (a copy of the valid pixels), one-value, constant and 0/255 rows."""
    rng = np.random.default_rng(3)
    tile = rng.integers(0, 256, (4, 484 * 484), dtype=np.uint8)
    tile[2] = 255
    tile[3, ::2], tile[3, 1::2] = 0, 255
    for values in (tile, tile[:, rng.random(tile.shape[1]) < 0.3], tile[:, :1]):
        np.testing.assert_allclose(tiling.band_std(values), values.std(axis=1), rtol=1e-12, atol=0)
    assert tiling.band_std(tile)[2] == 0.0 and tiling.band_std(tile)[3] == 127.5
    floats = rng.random((4, 50)).astype(np.float32)
    np.testing.assert_array_equal(tiling.band_std(floats), floats.std(axis=1))


def test_spooled_arrays_come_back_once(tmp_path) -> None:
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    assert workers.take(workers.put(array, None)) is array
    name = workers.put(array, str(tmp_path))
    assert Path(name).parent == tmp_path
    np.testing.assert_array_equal(workers.take(name), array)
    assert not Path(name).exists()


def test_worker_processes_of_the_setting() -> None:
    assert worker_processes("auto", cores=2) == 0 and worker_processes("auto", cores=16) == 13
    assert worker_processes(0) == 0 and worker_processes(4) == 4


@pytest.mark.parametrize("value", [-1, "many", True, 2.5])
def test_a_wrong_workers_value_is_one_line_naming_what_is_allowed(value) -> None:
    from dataset_builder.core.config import ConfigError, from_dict

    with pytest.raises(ConfigError, match=r"^config key 'workers': found .*must be 'auto' or a whole number"):
        from_dict({"workers": value, "sources": {"naip": {"folder": "naip"}}})


def test_worker_modules_do_not_import_torch() -> None:
    code = (
        "import sys; import dataset_builder.synthetic.reads, dataset_builder.synthetic.shards, "
        "dataset_builder.core.workers; "
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert found.stdout.strip() == "[]"


def test_process_reads_equal_thread_reads_and_the_spool_is_removed(tmp_path, sample_dir) -> None:
    path = sorted((sample_dir / "naip").glob("*.tif"))[0]
    tiles = [{"path": str(path), "row": r, "col": c} for r, c in list(tiling.grid_origins(path, TILE))[:20]]
    settings = {"out": str(tmp_path / "out"), "sources": {"naip": {"folder": str(path.parent)}}}
    synthetic = {"tile_size": TILE, "noise": False}  # no model needed: no draws ahead
    config = BuildConfig.model_validate(settings | {"device": "cpu", "synthetic": synthetic})
    loaded = []
    for processes in (0, 2):
        context = BuildContext(config, echo=lambda _: None, processes=processes)
        try:
            hr, geometry, draws = load_degrade({"tiles": tiles}, context)
            assert draws is None
            spool = context.spool
            assert (spool is None) == (processes == 0)
            assert spool is None or not list(Path(spool).iterdir())  # every spooled array taken back
        finally:
            context.close()
        assert spool is None or not Path(spool).exists()
        loaded.append((hr, geometry))
    (threads, where), (processes, where_p) = loaded
    torch.testing.assert_close(processes, threads, rtol=0, atol=0, equal_nan=True)
    assert where_p == where


@pytest.mark.slow
def test_a_build_with_worker_processes_writes_the_same_dataset(built, build_setup) -> None:
    """The small config with 2 worker processes (reads and shard writes in processes, arrays through
    the spool) writes byte for byte what the reference build (threads on a small machine) wrote."""
    from dataset_builder.build import build_dataset

    root = build_setup["root"]
    out = root / "processes" / "sen2naip"
    settings = small_config(build_setup["naip"], build_setup["model"], out) | {"workers": 2}
    with pytest.MonkeyPatch.context() as patch:
        offline_hf(patch, root / "hf_home")
        build_dataset(BuildConfig.model_validate(settings), progress=False, echo=lambda _: None)
    assert digests(out) == built["digests"]


def test_a_worker_process_that_dies_stops_the_build_with_one_line(tmp_path) -> None:
    """A killed worker (here: it exits) breaks the pool: no item's fault, so no rejection but a
    BuildError saying how to go on, from a shard write (offload) and from a task's loader alike."""
    import os

    from dataset_builder.core.errors import BuildError
    from dataset_builder.core.plan import Task, run_task

    settings = {"out": str(tmp_path / "out"), "sources": {"naip": {"folder": str(tmp_path)}}}
    config = BuildConfig.model_validate(settings)
    task = Task("x.npz", "builtins:print", {}, "os:getpid")  # its input: read by a worker that dies
    for way in ("offload", "loader"):
        context = BuildContext(config, echo=lambda _: None, processes=1)
        try:
            with pytest.raises(BuildError, match=r"a worker process of the build stopped .*run the same"):
                if way == "offload":
                    context.offload(os._exit, 3)
                else:
                    run_task(task, context, context.workers.submit(os._exit, 3))
        finally:
            context.close()
