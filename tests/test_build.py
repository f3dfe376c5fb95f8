"""``sen2naip build`` end to end on the real sample: load_dataset, the card, kill-and-resume, corrupt
inputs, CLI (the small config and the reference build: ``build_helpers.py``, ``conftest.py``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from unittest import mock

import datasets
import huggingface_hub
import numpy as np
import pytest
import rasterio
from build_helpers import (
    N_NAIP,
    NAIP_DIR,
    REPO_ROOT,
    SUBPROCESS_TIMEOUT_S,
    TILE,
    digests,
    manifest,
    naip_folder,
    run_build,
    small_config,
    subprocess_env,
    write_yaml,
)
from PIL import Image

from dataset_builder.build import build_dataset
from dataset_builder.core.config import ConfigError, load_config
from dataset_builder.core.context import BuildContext
from dataset_builder.core.errors import BuildError
from dataset_builder.core.fingerprint import fingerprint
from dataset_builder.core.records import SPLIT_NAMES
from dataset_builder.core.tiling import grid_origins
from dataset_builder.sources.stage import CHECKPOINT as SOURCES_CHECKPOINT
from dataset_builder.write.output import MANIFEST_NAME
from dataset_builder.write.shards import pair_features

pytestmark = pytest.mark.skipif(not NAIP_DIR.is_dir(), reason=f"sample NAIP not found at {NAIP_DIR}")


def test_the_card_states_what_this_build_is(built) -> None:
    """The sample's 5 m NAIP makes 5 m / 20 m pairs; its cross_sensor rows are simulated; CLIP had random
    weights; no real Sentinel-2 was used, so none is credited."""
    card = (built["out"] / "README.md").read_text()
    geometry = card.split("## Geometry, as built", 1)[1].split("##", 1)[0]
    assert "| `cross_sensor` | 128×128 px | 5 m | 32×32 px | 20 m |" in geometry
    assert "| `synthetic` | 128×128 px | 5 m | 32×32 px | 20 m |" in geometry
    assert "2.5 m" not in geometry.split("These are not")[0]
    assert "These are not SEN2NAIP's 2.5 m / 10 m pixels" in geometry
    simulated = sum(built["result"].counts["cross_sensor"].values())
    assert f"**{simulated} of the {simulated} `cross_sensor` rows are simulated**" in card
    assert "real Sentinel-2 acquisitions" not in card
    assert "CLIP `ViT-S-32` with random weights (not pretrained; seed 0)" in card
    assert "Copernicus" not in card and "public domain" in card
    assert "the published SEN2NAIP weights, converted from PyPI `opensr-degradation==1.0.1`" in card
    assert f"build fingerprint `{fingerprint(built['config'])}`" in card


def test_build_writes_both_configs_and_a_complete_manifest(built) -> None:
    out, result = built["out"], built["result"]
    assert result.changed
    assert set(result.counts) == {"cross_sensor", "synthetic"}
    for config, splits in result.counts.items():
        assert all(splits.get(s, 0) > 0 for s in SPLIT_NAMES), (config, splits)
    assert sum(result.counts["synthetic"].values()) == 24
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "build.json",
        "cross_sensor",
        MANIFEST_NAME,
        "synthetic",
    ]
    assert not [p for p in out.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]
    entries = manifest(out)
    sources = [e for e in entries if e["stage"] == "sources"]
    assert len(sources) == N_NAIP and all(e["status"] == "ok" for e in sources)
    cross = [e for e in entries if e["stage"] == "cross_sensor"]
    by_kind: dict[str, Counter] = {}
    for e in cross:
        kind = e["id"].split("__")[1].split("_", 3)[-1]
        by_kind.setdefault(kind, Counter())[e.get("reason", e["status"])[:3]] += 1
    n_rois = sum(result.counts["cross_sensor"].values())
    # The good candidate is kept ROI by ROI; every ROI of the bad ones is rejected by QA, mostly by
    # the check aimed at it (a featureless ROI can fail QA2 before its QA1 shows).
    assert by_kind["good"] == {"kep": n_rois} and n_rois >= 30
    for kind, check in (("qa1_fail", "qa1"), ("qa2_fail", "qa2")):
        assert set(by_kind[kind]) <= {"qa1", "qa2"} and sum(by_kind[kind].values()) == n_rois
        assert by_kind[kind][check] >= 0.9 * n_rois
    synthetic = [e for e in entries if e["stage"] == "synthetic"]
    assert Counter(e["status"] for e in synthetic)["kept"] == 24
    grid = sum(len(list(grid_origins(p, TILE))) for p in sorted(NAIP_DIR.glob("*.tif"))[:N_NAIP])
    assert len({e["id"] for e in synthetic}) == len(synthetic) == grid  # every tile of the world grid
    for entry in entries:
        if entry["status"] == "kept":
            assert entry["split"] in SPLIT_NAMES and entry["roi_id"].startswith("EPSG:26914_E")
        elif entry["status"] == "rejected":
            assert entry["reason"]
        else:
            assert entry["stage"] == "sources" and entry["status"] == "ok"


def test_load_dataset_every_config_split_and_streaming(built) -> None:
    out = built["out"]
    expected = pair_features((4, TILE, TILE), (4, TILE // 4, TILE // 4))
    split_of: dict[str, str] = {}
    for config in ("cross_sensor", "synthetic"):
        loaded = datasets.load_dataset(str(out), config)
        assert set(loaded) == set(SPLIT_NAMES)
        for split, dataset in loaded.items():
            assert dataset.features == expected
            assert len(dataset) == built["result"].counts[config][split]
            arrays = dataset.with_format("numpy", columns=["hr", "lr"], dtype=np.uint16)[:]
            assert arrays["hr"].dtype == np.uint16 and arrays["hr"].shape == (len(dataset), 4, TILE, TILE)
            assert arrays["lr"].shape == (len(dataset), 4, TILE // 4, TILE // 4)
            for roi in dataset["roi_id"]:
                assert split_of.setdefault(roi, split) == split, f"{roi} in {split} and {split_of[roi]}"
            sources = set(dataset["source"])
            assert sources == ({"simulated"} if config == "cross_sensor" else {"real"})
            stream = datasets.load_dataset(str(out), config, split=split, streaming=True)
            assert sum(1 for _ in stream) == len(dataset)
        row = loaded["train"][0]
        if config == "synthetic":
            assert row["lr_date"] is None and row["degradation_model"].endswith("sen2naip-degradation")
        else:
            assert row["lr_date"] == row["hr_date"] and 0 <= row["qa1"] <= 1 and 0 <= row["qa2"] <= 2


def test_rerun_changes_nothing(built) -> None:
    out = built["out"]
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()}
    messages: list[str] = []
    result = build_dataset(built["config"], progress=False, echo=messages.append)
    assert not result.changed and any(m.startswith("nothing to do") for m in messages)
    # Without the "done" record the stages are replayed from checkpoints: same bytes, out untouched.
    (built["config"].work_path / "done.json").unlink()
    messages.clear()
    result = build_dataset(built["config"], progress=False, echo=messages.append)
    assert not result.changed and any("left untouched" in m for m in messages)
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()}
    assert after == before


def test_killed_anywhere_and_restarted_gives_the_same_bytes(built, build_setup, tmp_path) -> None:
    out = tmp_path / "sen2naip"
    config = write_yaml(tmp_path / "kill.yaml", small_config(build_setup["naip"], build_setup["model"], out))
    work = load_config(config).work_path
    env = subprocess_env(tmp_path)
    # 1. killed from outside as soon as its first checkpoint exists
    cmd = [sys.executable, "-m", "sen2naip_hub.cli", "build", "--config", str(config), "--no-progress"]
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + SUBPROCESS_TIMEOUT_S
    while not (work / SOURCES_CHECKPOINT).exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not out.exists()
    # 2. killed right after checkpoints in every stage, and between the renames of the final swap
    for point in ("cross_sensor/pair-00001.npz", "synthetic/embed-00001.npz", "synthetic/degrade-00001.npz",
                  "write/swapped"):  # fmt: skip
        done = run_build(config, env, kill_at=point)
        assert done.returncode == -signal.SIGKILL, (point, done.stderr[-2000:])
        assert not out.exists() or (out / MANIFEST_NAME).is_file()  # never half-written
    finished = run_build(config, env)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "left untouched" in finished.stdout  # the swap had completed before the last kill
    assert digests(out) == built["digests"]
    # 3. a tampered dataset is rebuilt; killed between "old moved away" and "new moved in", the next
    #    start puts the old one back, then replaces it: the result is again the reference.
    (out / "README.md").write_text("tampered")
    killed = run_build(config, env, kill_at="write/moved-old")
    assert killed.returncode == -signal.SIGKILL and not out.exists()
    finished = run_build(config, env)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert digests(out) == built["digests"]
    messages: list[str] = []
    build_dataset(load_config(config), progress=False, echo=messages.append)
    assert any(m.startswith("nothing to do") for m in messages)
    assert not list(work.rglob("*.tmp"))


def test_corrupt_truncated_wrong_band_and_undated_inputs_are_skipped(build_setup, tmp_path) -> None:
    naip = naip_folder(tmp_path)
    real = sorted(NAIP_DIR.glob("*.tif"))[0]
    content = real.read_bytes()
    (naip / "m_trunc_20210101.tif").write_bytes(content[: len(content) // 3])
    (naip / "m_garbage_20210102.tif").write_bytes(np.random.default_rng(0).bytes(4096))
    three = naip / "m_threeband_20210103.tif"
    with rasterio.open(real) as src, rasterio.open(three, "w", **(src.profile | {"count": 3})) as dst:
        dst.write(src.read()[:3])
    (naip / "no_date_here.tif").symlink_to(real)
    (naip / "m_empty_20210104.tif").write_bytes(b"")
    Image.new("RGB", (64, 64), (30, 90, 40)).save(naip / "m_png_20210105.tif", format="PNG")
    out = tmp_path / "sen2naip"
    config = small_config(naip, build_setup["model"], out)
    config["cross_sensor"]["simulate"]["kinds"] = ["good"]
    config["synthetic"] |= {"size": 8, "n_clusters": 2}
    result = build_dataset(load_config(write_yaml(tmp_path / "c.yaml", config)), progress=False, echo=print)
    reasons = {e["id"]: e.get("reason", "") for e in manifest(out) if e["stage"] == "sources"}
    assert reasons["m_trunc_20210101.tif"].startswith("unreadable:")
    assert "corrupt or truncated" in reasons["m_trunc_20210101.tif"]
    assert reasons["m_garbage_20210102.tif"].startswith("unreadable:")
    assert reasons["m_empty_20210104.tif"].startswith("unreadable:")
    assert "expected a GeoTIFF, found a PNG file" in reasons["m_png_20210105.tif"]
    assert (
        reasons["m_threeband_20210103.tif"]
        == f"invalid: {naip / 'm_threeband_20210103.tif'}: expected 4 bands (R, G, B, NIR), found 3"
    )
    assert (
        reasons["no_date_here.tif"].startswith("invalid:")
        and "no acquisition date" in reasons["no_date_here.tif"]
    )
    assert [r for name, r in reasons.items() if name.startswith("m_4709963")] == [""] * N_NAIP
    assert sum(result.counts["synthetic"].values()) == 8 and result.counts["cross_sensor"]
    synthetic_sources = {e["id"].rsplit("_r", 1)[0] for e in manifest(out) if e["stage"] == "synthetic"}
    assert synthetic_sources == {p.stem for p in sorted(NAIP_DIR.glob("*.tif"))[:N_NAIP]}
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_out_folder_that_is_not_a_build_is_refused(build_setup, tmp_path) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("do not delete")
    config = load_config(
        write_yaml(tmp_path / "c.yaml", small_config(build_setup["naip"], build_setup["model"], out))
    )
    with pytest.raises(BuildError, match="not a dataset written by"):
        build_dataset(config, progress=False)
    assert (out / "thesis.tex").read_text() == "do not delete"


def test_config_errors_name_the_key(tmp_path, monkeypatch) -> None:
    base = {"sources": {"naip": {"folder": "x"}}}
    with pytest.raises(ConfigError, match=r"'synthetic\.tile_sise'"):
        load_config(write_yaml(tmp_path / "a.yaml", base | {"synthetic": {"tile_sise": 4}}))
    with pytest.raises(
        ConfigError, match=r"'synthetic\.size': found 'many'; input should be a valid integer"
    ):
        load_config(write_yaml(tmp_path / "b.yaml", base | {"synthetic": {"size": "many"}}))
    with pytest.raises(ConfigError, match="unknown config key 'nope'"):
        load_config(write_yaml(tmp_path / "c.yaml", base), {"nope": 1})
    monkeypatch.setenv("SEN2NAIP_SAMPLE_DIR", "/data/sample")
    demo = load_config(
        REPO_ROOT / "dataset_builder" / "configs" / "demo.yaml", {"seed": 3, "out": "elsewhere"}
    )
    assert demo.seed == 3 and demo.out == "elsewhere" and demo.work_dir == "build_cache/sen2naip"
    assert demo.cross_sensor.simulate is not None and demo.synthetic.clip_pretrained is None


def test_precision_and_compile_reach_the_degradation_model(build_setup, tmp_path, monkeypatch) -> None:
    from sen2naip_hub.models import Degradation

    compiled: list[Degradation] = []
    monkeypatch.setattr(Degradation, "compile", lambda self, **kwargs: compiled.append(self))
    fast = small_config(
        build_setup["naip"], build_setup["model"], tmp_path / "out", precision="bf16", compile=True
    )
    config = load_config(write_yaml(tmp_path / "fast.yaml", fast))
    model = BuildContext(config, echo=lambda _: None).degradation
    assert model.harmonization.precision == "bf16" and compiled == [model]
    default = load_config(
        write_yaml(tmp_path / "d.yaml", small_config(build_setup["naip"], build_setup["model"], tmp_path))
    )
    assert BuildContext(default, echo=lambda _: None).degradation.harmonization.precision == "fp32"
    assert len(compiled) == 1 and fingerprint(config) != fingerprint(
        config.with_overrides({"precision": "fp32"})
    )
    assert load_config(write_yaml(tmp_path / "half.yaml", fast | {"precision": "fp16"})).precision == "fp16"
    with pytest.raises(
        ConfigError, match=r"'precision': found 'fp8'; input should be 'fp32', 'bf16' or 'fp16'"
    ):
        load_config(write_yaml(tmp_path / "bad.yaml", fast | {"precision": "fp8"}))


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "sen2naip_hub.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=120)


def test_cli_errors_are_one_line(tmp_path) -> None:
    missing = _cli("build", "--config", str(tmp_path / "missing.yaml"))
    bad = write_yaml(tmp_path / "bad.yaml", {"sources": {"naip": {"folder": "x"}}, "outt": "typo"})
    unknown = _cli("build", "--config", str(bad))
    env = os.environ | {"SEN2NAIP_SAMPLE_DIR": str(tmp_path / "no_sample"), "HF_HUB_OFFLINE": "1"}
    no_sample = _cli(
        "build", "--config", "dataset_builder/configs/demo.yaml", "--out", str(tmp_path / "o"),
        "--work-dir", str(tmp_path / "work"), env=env,
    )  # fmt: skip
    for done, needle in ((missing, "no such config file"), (unknown, "unknown config key 'outt'"),
                         (no_sample, "no_sample/naip: no such folder")):  # fmt: skip
        assert done.returncode == 1, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], done.stderr


def test_push_dataset_command_uploads_with_a_mocked_hfapi(built, monkeypatch) -> None:
    from sen2naip_hub.cli import main

    api = mock.MagicMock(spec=huggingface_hub.HfApi)
    api.upload_folder.return_value = mock.Mock(commit_url="https://hub/commit/1")
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda *a, **k: api)
    code = main(["push-dataset", str(built["out"]), "--repo-id", "org/sen2naip", "--private"])
    assert code == 0
    api.create_repo.assert_called_once_with(
        repo_id="org/sen2naip", repo_type="dataset", exist_ok=True, private=True
    )
    kwargs = api.upload_folder.call_args.kwargs
    assert kwargs["folder_path"] == str(built["out"]) and kwargs["repo_type"] == "dataset"
    assert "README.md" in kwargs["allow_patterns"] and "synthetic/*.parquet" in kwargs["allow_patterns"]
    assert main(["push-dataset", str(built["out"]), "--repo-id", "no-slash"]) == 1
