"""What decides each stage's checkpoints: its config, inputs, models and code, as one digest per stage.

A resumed build compares these with the ones its checkpoints were made under and restarts only the
stages whose digest changed (and those after them that read their output), saying which part changed:
``synthetic: code changed since the checkpoints in build_cache/x were made: restarting synthetic``.

The code of a stage is the package version plus a sha256 of the installed sources it runs: the
library (``sen2naip_hub``), the builder's ``core`` and ``backends``, and the stage's own folder (an
installed wheel is hashed as installed; an editable install as checked out).
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

import dataset_builder
import sen2naip_hub
from dataset_builder.core.config import BuildConfig, FolderSource, expand_env
from sen2naip_hub import __version__
from sen2naip_hub.convert import REPO_NAMES

__all__ = [
    "STAGES",
    "code_digest",
    "degradation_source",
    "fingerprint",
    "model_files",
    "source_digest",
    "stage_fingerprints",
    "tree_stats",
]

#: The checkpointed stages in build order, and the sub-packages of ``dataset_builder`` each one runs.
STAGE_CODE: dict[str, tuple[str, ...]] = {
    "sources": ("sources",),
    "cross_sensor": ("cross_sensor",),
    "synthetic": ("synthetic",),
    "write": ("write",),
}
STAGES: tuple[str, ...] = tuple(STAGE_CODE)
#: Builder sub-packages every stage runs.
COMMON_CODE: tuple[str, ...] = ("core", "backends")
#: Where the build writes: not part of what it writes.
PLACE_KEYS: tuple[str, ...] = ("out", "work_dir")
#: How the build runs, not what it computes (a build with other workers writes the same bytes).
RUNTIME_KEYS: tuple[str, ...] = ("workers",)
#: Top-level config keys that change what the model-running stages compute.
MODEL_KEYS: tuple[str, ...] = (
    "models",
    "degradation_model",
    "convert_models",
    "device",
    "seed",
    "batch_size",
    "precision",
    "compile",
)


def _stat(path: Path) -> list[int]:
    """``[size, mtime_ns]`` of a file: how the fingerprint tells that a file changed."""
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def tree_stats(folder: Path) -> dict[str, list[int]]:
    """``{relative path: [size, mtime_ns]}`` of every file under ``folder``."""
    return {str(p.relative_to(folder)): _stat(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def _input_listing(source: FolderSource) -> list[list]:
    """``[name, size, mtime_ns]`` of the files a source would read (or of its STAC catalog)."""
    if source.folder:
        paths = sorted(Path(expand_env(source.folder)).glob(source.pattern))
    elif source.stac:
        paths = [Path(expand_env(source.stac))]
    else:
        return []
    return [[str(p), *_stat(p)] for p in paths if p.is_file()]


def source_digest(folder: Path) -> str:
    """sha256 over the relative path and contents of every ``*.py`` file under ``folder``, by path."""
    digest = hashlib.sha256()
    for name in sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.py")):
        digest.update(name.encode() + b"\0" + hashlib.sha256((folder / name).read_bytes()).digest())
    return digest.hexdigest()


@functools.cache
def code_digest(stage: str) -> str:
    """The version and :func:`source_digest` of the code ``stage`` runs (see the module docstring)."""
    builder = Path(dataset_builder.__file__).parent
    folders = [Path(sen2naip_hub.__file__).parent] + [builder / n for n in (*COMMON_CODE, *STAGE_CODE[stage])]
    parts = [__version__] + [source_digest(folder) for folder in folders]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def degradation_source(config: BuildConfig) -> str:
    """What the build loads the Degradation model from: ``degradation_model`` as given (a folder or a
    Hub repo id), else the folder ``<models>/sen2naip-degradation``."""
    if config.degradation_model:
        return config.degradation_model
    return str(Path(expand_env(config.models)) / REPO_NAMES["degradation"])


def model_files(name: str | None) -> dict[str, list[int]] | None:
    """``{relative path: [size, mtime_ns]}`` of a model given as a local folder or file; ``None`` for
    anything else (a Hub repo id, an open_clip tag: then the name alone stands for the model)."""
    if not name:
        return None
    path = Path(name)
    if path.is_dir():
        return tree_stats(path)
    return {path.name: _stat(path)} if path.is_file() else None


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def stage_fingerprints(config: BuildConfig) -> dict[str, dict[str, str]]:
    """``{stage: {part: digest}}`` with parts ``code``, ``config``, ``inputs`` and ``models``.

    A stage's parts include those of the stages whose output it reads (``sources`` for the others;
    everything for ``write``). A Hub repo id counts by its name only: the build names no revision.
    """
    data = config.to_dict()
    degradation = degradation_source(config)
    inputs = _digest([_input_listing(config.sources.naip), _input_listing(config.sources.s2)])
    degradation_files = [degradation, model_files(degradation)]
    clip = model_files(config.synthetic.clip_pretrained)
    shared = {key: data[key] for key in MODEL_KEYS}
    sources = {"sources": data["sources"]}
    if config.sources.naip.stac_api:  # the NAIP windows are read at the ROI grid's pixel size
        sources["hr_resolution_m"] = data["cross_sensor"]["hr_resolution_m"]
    sections = {
        "sources": (sources, None),
        "cross_sensor": ({"cross_sensor": data["cross_sensor"]} | shared, degradation_files),
        "synthetic": ({"synthetic": data["synthetic"]} | shared, [degradation_files, clip]),
        "write": (
            {k: v for k, v in data.items() if k not in PLACE_KEYS + RUNTIME_KEYS},
            [degradation_files, clip],
        ),
    }
    prints = {}
    for stage, (section, models) in sections.items():
        before = prints.get("sources", {}) if stage != "sources" else {}
        # the write stage reads every stage's output (and holds the synthetic shards): all their code
        code_before = [p["code"] for p in prints.values()] if stage == "write" else before.get("code")
        prints[stage] = {
            "code": _digest([code_digest(stage), code_before]),
            "config": _digest([section, before.get("config")]),
            "inputs": inputs,
            "models": _digest(models),
        }
    return prints


def fingerprint(config: BuildConfig) -> str:
    """One sha256 over every stage's parts (:func:`stage_fingerprints`)."""
    return _digest(stage_fingerprints(config))
