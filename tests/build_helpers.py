"""Shared by the build tests: a small config over the real sample, and running builds in subprocesses.

A small config keeps every test short: 4 real NAIP dates, simulated cross-sensor candidates (one good,
one QA1 failure, one QA2 failure: no co-located NAIP + Sentinel-2 pair exists offline, so rows are
``source="simulated"``), 128-px tiles, and open_clip's real ``ViT-S-32`` architecture with seeded
random weights (no CLIP weights can be downloaded here; real runs pass a pretrained tag). The
session-scoped fixtures ``build_setup`` and ``built`` (one uninterrupted reference build) live in
``conftest.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import SAMPLE_DIR

from dataset_builder.core.checkpoints import KILL_ENV
from dataset_builder.write.output import MANIFEST_NAME

REPO_ROOT = Path(__file__).resolve().parents[1]
NAIP_DIR = SAMPLE_DIR / "naip"
N_NAIP = 4
TILE = 128
ROI = 128
SUBPROCESS_TIMEOUT_S = 300


def naip_folder(root: Path) -> Path:
    """A folder of links to the first ``N_NAIP`` real NAIP files."""
    folder = root / "naip"
    folder.mkdir(parents=True, exist_ok=True)
    for path in sorted(NAIP_DIR.glob("*.tif"))[:N_NAIP]:
        (folder / path.name).symlink_to(path)
    return folder


def small_config(naip: Path, model: Path, out: Path, **changes) -> dict:
    config = {
        "out": str(out),
        "degradation_model": str(model),
        "device": "cpu",
        "seed": 0,
        "batch_size": 8,
        "sources": {"naip": {"folder": str(naip)}},
        "cross_sensor": {
            "roi_size": ROI,
            "hr_resolution_m": None,
            "simulate": {"kinds": ["good", "qa1_fail", "qa2_fail"]},
        },
        "synthetic": {
            "tile_size": TILE,
            "size": 24,
            "n_clusters": 4,
            "clip_model": "ViT-S-32",
            "embed_batch_size": 16,
        },
        "write": {"max_shard_rows": 16},  # several shards per split
    }
    for key, value in changes.items():
        config[key] = value if not isinstance(value, dict) else {**config.get(key, {}), **value}
    return config


def write_yaml(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def digests(folder: Path, suffix: str = "") -> dict[str, str]:
    """sha256 of every file under ``folder`` (those ending in ``suffix``), by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob(f"*{suffix}"))
        if p.is_file()
    }


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / MANIFEST_NAME).read_text().splitlines()]


def subprocess_env(root: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != KILL_ENV}
    env |= {"HF_HUB_OFFLINE": "1", "HF_HOME": str(root / "hf_home_sub"), "OMP_NUM_THREADS": "2"}
    return env


def build_command(config: Path) -> list[str]:
    return [sys.executable, "-m", "sen2naip_hub.cli", "build", "--config", str(config), "--no-progress"]


def run_build(config: Path, env: dict, kill_at: str | None = None, **kwargs) -> subprocess.CompletedProcess:
    """``sen2naip build`` in a subprocess (killed by SIGKILL at the commit point ``kill_at``)."""
    env = dict(env)
    if kill_at:
        env[KILL_ENV] = kill_at
    return subprocess.run(
        build_command(config), env=env, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S, **kwargs
    )
