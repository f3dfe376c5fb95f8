"""Faults never abort or corrupt a build: bad inputs are listed and the rest is what a clean build makes;
signals, a failing write and a kill inside the write stage stop it with one line, and it resumes to the
same bytes; a second build in a running work folder is refused.

The reference is the session's clean build of the small config (``built`` in ``conftest.py``).
"""

from __future__ import annotations

import fcntl
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from build_helpers import (
    NAIP_DIR,
    SUBPROCESS_TIMEOUT_S,
    build_command,
    digests,
    manifest,
    naip_folder,
    run_build,
    small_config,
    subprocess_env,
    write_yaml,
)
from rasterio.warp import Resampling, calculate_default_transform, reproject

from dataset_builder.build import LOCK_NAME, build_dataset
from dataset_builder.core.config import load_config
from sen2naip_hub.cli import main

pytestmark = pytest.mark.skipif(not NAIP_DIR.is_dir(), reason=f"sample NAIP not found at {NAIP_DIR}")

#: A file-size limit smaller than one parquet shard of the small config and larger than nothing else
#: the write stage needs (its checkpoints already exist when it is applied).
SHARD_SIZE_LIMIT: int = 100_000


def _write(path: Path, data: np.ndarray, profile: dict) -> Path:
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def _bad_inputs(folder: Path) -> dict[str, str]:
    """Three bad NAIP files beside the good ones: file name → the reason the manifest must give."""
    real = sorted(NAIP_DIR.glob("*.tif"))[0]
    with rasterio.open(real) as src:
        data, profile = src.read(), src.profile
        wgs84, width, height = calculate_default_transform(
            src.crs, "EPSG:4326", src.width, src.height, *src.bounds
        )
        degrees = np.zeros((src.count, height, width), dtype=data.dtype)
        reproject(data, degrees, src_transform=src.transform, src_crs=src.crs, dst_transform=wgs84,
                  dst_crs="EPSG:4326", resampling=Resampling.nearest)  # fmt: skip
        coarse_t = src.transform * src.transform.scale(6, 6)
        coarse = data[:, ::6, ::6]
    _write(folder / "m_nodata_20220601.tif", np.zeros_like(data), profile | {"nodata": 0})
    grid = {"crs": "EPSG:4326", "transform": wgs84, "width": width, "height": height}
    _write(folder / "m_wgs84_20220602.tif", degrees, profile | grid)
    grid = {"transform": coarse_t, "width": coarse.shape[2], "height": coarse.shape[1]}
    _write(folder / "m_coarse_20220603.tif", coarse, profile | grid)
    return {
        "m_nodata_20220601.tif": "every pixel is nodata",
        "m_wgs84_20220602.tif": "CRS EPSG:4326 is not projected",
        "m_coarse_20220603.tif": "pixel size 30 m does not fit NAIP",
    }


def test_bad_inputs_are_listed_and_the_rest_equals_a_clean_build(build_setup, built, tmp_path) -> None:
    """An all-nodata NAIP (which used to abort the simulated cross_sensor path), a degree grid (which
    used to add 32 rows and change 18 of 64 k-means++ picks) and NAIP at 30 m: each listed by name."""
    naip = naip_folder(tmp_path)
    expected = _bad_inputs(naip)
    out = tmp_path / "sen2naip"
    config = load_config(write_yaml(tmp_path / "c.yaml", small_config(naip, build_setup["model"], out)))
    result = build_dataset(config, progress=False, echo=lambda _: None)
    reasons = {e["id"]: e.get("reason", "") for e in manifest(out) if e["stage"] == "sources"}
    for name, reason in expected.items():
        assert reasons[name].startswith("invalid: ") and reason in reasons[name], reasons[name]
    assert sum(1 for r in reasons.values() if not r) == 4  # the good files
    assert result.counts == built["result"].counts
    assert digests(out, ".parquet") == digests(built["out"], ".parquet")


def _default_sigint() -> None:
    """In the child: SIGINT as a terminal delivers it. A shell starts background jobs (a CI runner, say)
    with SIGINT ignored, and Python keeps an inherited ignore, as it should."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_and_signal(config: Path, env: dict, ready: Path, signum: int) -> subprocess.CompletedProcess:
    """Start a build, send ``signum`` once ``ready`` exists, return how it ended."""
    process = subprocess.Popen(build_command(config), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, preexec_fn=_default_sigint)  # fmt: skip
    deadline = time.monotonic() + SUBPROCESS_TIMEOUT_S
    while not ready.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=SUBPROCESS_TIMEOUT_S)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _limit_file_size() -> None:
    """In the child: any file grown past ``SHARD_SIZE_LIMIT`` fails with EFBIG (Python ignores SIGXFSZ)."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (SHARD_SIZE_LIMIT, resource.RLIM_INFINITY))


def test_signals_a_failing_write_and_a_kill_before_a_shard_rename_all_resume(build_setup, built, tmp_path):
    out = tmp_path / "sen2naip"
    config = write_yaml(tmp_path / "c.yaml", small_config(build_setup["naip"], build_setup["model"], out))
    work = load_config(config).work_path
    env = subprocess_env(tmp_path)
    for signum, ready, code in ((signal.SIGINT, "sources/files.json", 130),
                                (signal.SIGTERM, "cross_sensor/pair-00000.npz", 143)):  # fmt: skip
        stopped = _start_and_signal(config, env, work / ready, signum)
        assert stopped.returncode == code, stopped.stderr[-2000:]
        line = stopped.stderr.strip().splitlines()[-1]
        name = signal.Signals(signum).name
        assert (
            line
            == f"interrupted by {name}: the checkpoints in {work} are kept; run the same command to resume"
        )
        assert not out.exists()
    killed = run_build(config, env, kill_at="write/shard-complete:*")  # a shard written, not yet renamed
    assert killed.returncode == -signal.SIGKILL and not out.exists(), killed.stderr[-2000:]
    failed = run_build(config, env, preexec_fn=_limit_file_size)
    assert failed.returncode == 1, failed.stderr[-2000:]
    lines = failed.stderr.strip().splitlines()
    assert (
        len(lines) == 1
        and "File too large" in lines[0]
        and "run the same command again to resume" in lines[0]
    )
    assert not out.exists()  # no partial shard is ever visible
    finished = run_build(config, env)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert digests(out) == built["digests"]


def test_an_interrupt_that_ends_code_run_from_a_string_still_exits_130(tmp_path) -> None:
    """Under ``python -m``, CPython kills itself with SIGINT at exit after a KeyboardInterrupt that ended
    exec'd string code (as a dataclass being built on import when Ctrl-C lands), even once caught; the
    build's signal handling clears that, so the exit code stays 130 (it was -2, now and then)."""
    (tmp_path / "interrupted_build.py").write_text(
        "from pathlib import Path\n"
        "import typer\n"
        "from dataset_builder.cli import stop_signals_resumably\n"
        "def main() -> None:\n"
        "    with stop_signals_resumably(Path('work')):\n"
        "        exec('raise KeyboardInterrupt')\n"
        "typer.run(main)\n"
    )
    done = subprocess.run([sys.executable, "-m", "interrupted_build"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=SUBPROCESS_TIMEOUT_S)  # fmt: skip
    assert done.returncode == 130, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1].startswith("interrupted by SIGINT: the checkpoints in work")


def test_a_second_build_in_a_running_work_folder_is_refused(build_setup, tmp_path, capsys) -> None:
    out = tmp_path / "sen2naip"
    config = write_yaml(tmp_path / "c.yaml", small_config(build_setup["naip"], build_setup["model"], out))
    work = load_config(config).work_path
    work.mkdir(parents=True)
    with (work / LOCK_NAME).open("a") as held:  # what a running build holds
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        code = main(["build", "--config", str(config), "--no-progress"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(lines) == 1
    assert "another build is running with this work folder" in lines[0] and not out.exists()
