"""Run an import: tasks (resumable), splits, QA filter, shards, card and manifest, swapped into ``out``."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from dataset_builder.core.checkpoints import Checkpoints, atomic_write_text
from dataset_builder.core.errors import BuildError
from dataset_builder.core.facts import QA1_MAX_RESIDUAL_LR_PX, QA2_MAX_SPECTRAL_ANGLE_DEG, RELEASES
from dataset_builder.core.plan import Step, run_task
from dataset_builder.core.records import SPLIT_NAMES
from dataset_builder.core.splits import RoiSplitter
from dataset_builder.sources.releases.groups import connected_groups
from dataset_builder.sources.releases.importer import ImportContext, ImportSettings, plan_import, source_label
from dataset_builder.sources.releases.shards import write_split
from dataset_builder.write.card import BuildFacts, write_dataset_card
from dataset_builder.write.output import MANIFEST_NAME, check_out, publish_staging, recover
from dataset_builder.write.shards import scan_shards

__all__ = ["ImportResult", "import_release", "passes_qa"]


@dataclass(frozen=True)
class ImportResult:
    """Rows per split, and the manifest's counts by status."""

    out: Path
    counts: dict[str, dict[str, int]]
    kept: int
    rejected: int
    filtered: int
    changed: bool
    #: bytes fetched over HTTP by this run (0 for local sources and for items resumed from checkpoints)
    fetched: int = 0


def passes_qa(qa1: float, qa2: float) -> bool:
    """The paper's thresholds: QA1 ≤ 1 LR px and QA2 ≤ 2° (a NaN QA does not pass)."""
    return qa1 <= QA1_MAX_RESIDUAL_LR_PX and qa2 <= QA2_MAX_SPECTRAL_ANGLE_DEG


def _run(step: Step, store: Checkpoints, context: ImportContext, progress: bool) -> None:
    todo = step.todo(store)
    for task in tqdm(todo, desc=step.title, unit="roi", disable=not progress):
        store.save_bytes(task.name, run_task(task, context))


def _entries(step: Step, store: Checkpoints, settings: ImportSettings) -> list[dict[str, Any]]:
    """One manifest entry per row (kept / filtered) or per rejected item, in plan order."""
    entries = []
    for task in step.tasks:
        item = task.args.get("folder") or f"{task.args['src']}#{task.args['index']}"
        reason = store.rejection(task.name)
        if reason:
            entries.append({"id": item, "source": task.args["src"], "status": "rejected", "reason": reason})
            continue
        meta = store.load_meta(task.name)
        for index, (record, extra) in enumerate(zip(meta["records"], meta["extra"], strict=True)):
            entry = {"id": item, "source": task.args["src"], "row": index, "roi_id": record["roi_id"]}
            entry |= {"checkpoint": task.name, **extra}
            ok = not settings.qa_filter or passes_qa(_float(record["qa1"]), _float(record["qa2"]))
            entry["status"] = "kept" if ok else "filtered"
            if not ok:
                entry["reason"] = (
                    f"QA outside the paper's thresholds (QA1 {record['qa1']} > {QA1_MAX_RESIDUAL_LR_PX} "
                    f"or QA2 {record['qa2']} > {QA2_MAX_SPECTRAL_ANGLE_DEG})"
                )
            entries.append(entry)
    return entries


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)


def _assign_splits(entries: list[dict[str, Any]], splitter: RoiSplitter) -> None:
    """``split`` and ``split_group`` of every kept row: the release's split, else by connected footprints.

    A group is named by the smallest release ROI id in it; its split is ``splitter``'s split of that name.
    """
    kept = [e for e in entries if e["status"] == "kept"]
    footprints = [(f"{e['group']}#{e['checkpoint']}#{e['row']}", e["crs"], tuple(e["bounds"])) for e in kept]
    groups = connected_groups(footprints)
    for entry, (key, _, _) in zip(kept, footprints, strict=True):
        entry["split_group"] = groups[key].split("#")[0]
        entry["split"] = entry.get("release_split") or splitter.split_of(entry["split_group"])


def _rows(store: Checkpoints, entries: list[dict[str, Any]], split: str) -> Iterator[tuple]:
    cache: tuple[str, list] | None = None
    for entry in entries:
        if entry["status"] != "kept" or entry["split"] != split:
            continue
        if cache is None or cache[0] != entry["checkpoint"]:
            cache = (entry["checkpoint"], store.load_records(entry["checkpoint"])[0])
        yield cache[1][entry["row"]], entry


def _manifest_line(entry: dict[str, Any]) -> str:
    drop = {"checkpoint", "crs", "bounds", "release_split", "group"}
    return json.dumps({k: v for k, v in entry.items() if k not in drop}, sort_keys=True) + "\n"


def _facts(settings: ImportSettings, entries: list[dict[str, Any]], splitter: RoiSplitter) -> BuildFacts:
    release = RELEASES[settings.release]
    status = [e["status"] for e in entries]
    return BuildFacts(
        repo_id=str(settings.out.name),
        splitter=splitter,
        naip_source=f"the {release['repo']} release ({settings.release}), via `sen2naip import-release`",
        s2_source=release["lr"],
        degradation_model=_maker_label(settings),
        clip="none (an imported release: no CLIP selection)",
        release=settings.release,
        release_counts={
            "kept": status.count("kept"),
            "rejected": status.count("rejected"),
            "filtered": status.count("filtered"),
        },
        qa_filter=(
            f"QA1 ≤ {QA1_MAX_RESIDUAL_LR_PX} LR px and QA2 ≤ {QA2_MAX_SPECTRAL_ANGLE_DEG}°"
            if settings.qa_filter
            else None
        ),
    )


def _write(settings: ImportSettings, store: Checkpoints, entries: list[dict[str, Any]], splitter) -> Path:
    staging = settings.work_dir / "staging"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for split in SPLIT_NAMES:
        write_split(_rows(store, entries, split), staging / settings.config, split, settings.limits)
    if not scan_shards(staging):
        raise BuildError(f"{settings.release}: no row was kept (see the rejections in the manifest)")
    write_dataset_card(staging, _facts(settings, entries, splitter))
    atomic_write_text(staging / MANIFEST_NAME, "".join(_manifest_line(e) for e in entries))
    return staging


def import_release(
    settings: ImportSettings, progress: bool = True, echo: Callable[[str], None] = print
) -> ImportResult:
    """Import ``settings.sources`` into ``settings.out`` (resuming from ``settings.work_dir``)."""
    out = settings.out
    recover(out, settings.work_dir)
    check_out(out)
    prints = {"import": {"settings": _fingerprint(settings)}}
    store = Checkpoints.open(settings.work_dir / "checkpoints", prints, echo)
    context = ImportContext(settings)
    try:
        step = plan_import(settings, context)
        if not step.tasks:
            raise BuildError(f"{', '.join(settings.sources)}: no ROI_XXXX folder or TACO sample found")
        _run(step, store, context, progress)
        fetched = context.fetched
    finally:
        context.close()
    entries = _entries(step, store, settings)
    splitter = RoiSplitter()
    _assign_splits(entries, splitter)
    staging = _write(settings, store, entries, splitter)
    changed = publish_staging(staging, out, settings.work_dir, echo)
    status = [e["status"] for e in entries]
    return ImportResult(
        out,
        scan_shards(out),
        status.count("kept"),
        status.count("rejected"),
        status.count("filtered"),
        changed,
        fetched,
    )


def _maker_label(settings: ImportSettings) -> str | None:
    if settings.release != "v1-synthetic":
        return None
    return settings.model_id + (f" + {settings.harmonization}" if settings.harmonization else "")


def _fingerprint(settings: ImportSettings) -> str:
    from hashlib import sha256

    text = json.dumps(
        [
            settings.release,
            [source_label(s) for s in settings.sources],
            settings.model_id if settings.release == "v1-synthetic" else None,
            settings.harmonization,
            settings.seed,
            settings.limit,
        ]
    )
    return sha256(text.encode()).hexdigest()[:16]
