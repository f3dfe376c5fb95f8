"""Stage 4, write: shards, card and manifest into ``<work>/staging``, then swapped into ``out`` by renaming.

``out`` is replaced only if the new dataset differs from it (``out`` → ``<work>/previous``, staging →
``out``); a build killed between the two renames is repaired at the next start (:func:`recover`: the
previous dataset is put back, then rebuilt). ``out`` is never a folder this build did not write.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from dataset_builder.core.checkpoints import Checkpoints, atomic_write_text, commit_point
from dataset_builder.core.config import BuildConfig
from dataset_builder.core.errors import BuildError
from dataset_builder.core.records import CONFIG_NAMES, PairRecord
from dataset_builder.write.card import BuildFacts, write_dataset_card
from dataset_builder.write.shards import ShardLimits, scan_shards, write_config

__all__ = [
    "MANIFEST_NAME",
    "BuildResult",
    "check_out",
    "publish_staging",
    "recover",
    "result",
    "write_staging",
]

#: The manifest inside the dataset folder: one JSON object per input file, candidate and tile.
MANIFEST_NAME: str = "manifest.jsonl"


@dataclass(frozen=True)
class BuildResult:
    """What a build left in ``out``: rows per config and split, and whether ``out`` changed."""

    out: Path
    counts: dict[str, dict[str, int]]
    manifest: Path
    changed: bool
    kept: int
    rejected: int


def _records(store: Checkpoints, names: Iterable[str]) -> Iterator[PairRecord]:
    for name in names:
        if not store.rejection(name):
            yield from store.load_records(name)[0]


def _link(source: Path, target: Path) -> None:
    """``target`` as a hard link to ``source`` (a copy where links are impossible)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def write_staging(
    config: BuildConfig,
    staging: Path,
    chunks: Mapping[str, list[str]],
    manifest: list[dict[str, Any]],
    store: Checkpoints,
    facts: BuildFacts,
    progress: bool,
    shards: Mapping[str, list[str]] | None = None,
) -> None:
    """Shards of every config, card and manifest. A config's shards are written here from its record
    checkpoints ``chunks[config]``, or were written already as the checkpoints ``shards[config]``
    (those that exist are linked in under their own names)."""
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    limits = ShardLimits(max_rows=config.write.max_shard_rows, max_bytes=config.write.max_shard_bytes)
    names = [c for c in CONFIG_NAMES if chunks.get(c)]
    for name in tqdm(names, desc="write", unit="config", disable=not progress):
        write_config(_records(store, chunks[name]), staging, name, splitter=facts.splitter, limits=limits)
    for name, files in (shards or {}).items():
        for file in files:
            if store.has(file):
                _link(store.path(file), staging / name / Path(file).name)
    if not scan_shards(staging):
        raise BuildError("no row was kept in any config: nothing to write (see the rejections above)")
    write_dataset_card(staging, facts)
    lines = "".join(json.dumps(e, sort_keys=True) + "\n" for e in manifest)
    atomic_write_text(staging / MANIFEST_NAME, lines)
    commit_point("write/staged")


def same_tree(a: Path, b: Path) -> bool:
    """True if both folders hold the same files with the same bytes."""
    if not b.is_dir():
        return False
    files_a = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
    files_b = sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file())
    return files_a == files_b and all(filecmp.cmp(a / f, b / f, shallow=False) for f in files_a)


def _swap(staging: Path, out: Path, previous: Path) -> None:
    """Put ``staging`` at ``out`` by renaming; the old ``out`` goes to ``previous``, then away."""
    if previous.exists():
        shutil.rmtree(previous)
    if out.exists():
        os.replace(out, previous)
        commit_point("write/moved-old")
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, out)
    commit_point("write/swapped")
    shutil.rmtree(previous, ignore_errors=True)


def publish_staging(staging: Path, out: Path, work: Path, echo) -> bool:
    """Move ``staging`` to ``out`` unless it holds exactly what ``out`` holds; True if ``out`` changed."""
    if same_tree(staging, out):
        shutil.rmtree(staging)
        echo(f"{out} already holds exactly this dataset: left untouched")
        return False
    _swap(staging, out, work / "previous")
    return True


def recover(out: Path, work: Path) -> None:
    """Undo a swap cut short by a kill: put the previous dataset back at ``out``."""
    previous = work / "previous"
    if previous.is_dir() and not out.exists():
        os.replace(previous, out)
    shutil.rmtree(previous, ignore_errors=True)


def check_out(out: Path) -> None:
    """Refuse an ``out`` that exists and is not a dataset written by ``sen2naip build``."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST_NAME).is_file())):
        raise BuildError(
            f"{out}: exists and is not a dataset written by `sen2naip build` (no {MANIFEST_NAME}); "
            "choose another --out or remove it"
        )


def result(out: Path, changed: bool) -> BuildResult:
    """The :class:`BuildResult` of the dataset in ``out``."""
    lines = (out / MANIFEST_NAME).read_text(encoding="utf-8").splitlines()
    statuses = [json.loads(line)["status"] for line in lines]
    return BuildResult(
        out=out,
        counts=scan_shards(out),
        manifest=out / MANIFEST_NAME,
        changed=changed,
        kept=statuses.count("kept"),
        rejected=statuses.count("rejected"),
    )
