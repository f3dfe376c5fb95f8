"""``sen2naip import-release``: a published release → a dataset folder like ``sen2naip build`` writes.

Plan: one :class:`~dataset_builder.core.plan.Task` per ROI (v1) or sample (v2), run through
:func:`~dataset_builder.core.plan.run_task`, the builder's per-item fault boundary: a truncated member, a
missing ``lr.tif``, an unreadable ``metadata.json``, a wrong shape or DN that do not fit uint16 become a
rejection checkpoint and a manifest line with the reason; the import goes on. Checkpoints live in the
work folder, so a killed import resumes where it stopped and writes identical shards. Then splits
(v2's own, else by connected footprints), the QA filter, shards + card + manifest into a staging folder,
swapped into ``out`` (:mod:`dataset_builder.write.output`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dataset_builder.core.checkpoints import encode_records
from dataset_builder.core.errors import ConfigError
from dataset_builder.core.facts import RELEASES
from dataset_builder.core.plan import Step, Task
from dataset_builder.sources.releases.archive import Archive, fetched_bytes, is_url, open_binary
from dataset_builder.sources.releases.sim_histograms import SIM_PREFIX
from dataset_builder.sources.releases.taco import Tortilla
from dataset_builder.sources.releases.v1 import ReleaseRow, RoiMembers, cross_sensor_row, find_rois
from dataset_builder.write.shards import ShardLimits
from sen2naip_hub.convert import REPO_NAMES

__all__ = ["ImportContext", "ImportSettings", "plan_import", "run_item", "source_label"]

RUNNER: str = "dataset_builder.sources.releases.importer:run_item"
#: Where the published weights are converted when v1-synthetic is given no --model (as `sen2naip build`).
DEFAULT_MODELS_DIR: str = "models"


@dataclass(frozen=True)
class ImportSettings:
    """What one import reads and how (see ``sen2naip import-release --help``)."""

    release: str
    sources: tuple[str, ...]
    out: Path
    work_dir: Path
    qa_filter: bool = False
    #: v1-synthetic: the Degradation folder or Hub id (None: the published weights, converted into
    #: ``models/`` when missing)
    model: str | None = None
    #: v1-synthetic: ``sim:<method>`` of the release's ``sim_histograms``, or None (the model's own)
    harmonization: str | None = None
    seed: int = 0
    #: import only the first ``limit`` ROIs / samples (in source order), e.g. 100 ROIs of a 10 GB zip
    limit: int | None = None
    limits: ShardLimits = field(default_factory=ShardLimits)

    def __post_init__(self) -> None:
        if self.release not in RELEASES:
            raise ConfigError(f"release must be one of {', '.join(RELEASES)}, found {self.release!r}")
        if self.qa_filter and self.release != "v1-cross-sensor":
            raise ConfigError(f"--qa-filter: {self.release} carries no QA1/QA2 (only v1-cross-sensor does)")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit must be at least 1, found {self.limit}")
        if self.release != "v1-synthetic" and (self.model or self.harmonization):
            raise ConfigError(
                f"--model / --harmonization: only v1-synthetic makes its LR, not {self.release}"
            )
        if self.harmonization is not None and (
            not self.harmonization.startswith(SIM_PREFIX) or len(self.harmonization) == len(SIM_PREFIX)
        ):
            raise ConfigError(f"--harmonization must be sim:<method>, found {self.harmonization!r}")

    @property
    def model_id(self) -> str:
        """The Degradation the synthetic LR is made with (the converted published one by default)."""
        return self.model or str(Path(DEFAULT_MODELS_DIR) / REPO_NAMES["degradation"])

    @property
    def config(self) -> str:
        return RELEASES[self.release]["config"]


class ImportContext:
    """Open sources and the degradation model, each opened once per process."""

    def __init__(self, settings: ImportSettings) -> None:
        self.settings = settings
        self._cache: dict[str, Any] = {}

    def cached(self, key: str, factory) -> Any:
        if key not in self._cache:
            self._cache[key] = factory()
        return self._cache[key]

    def archive(self, src: str) -> Archive:
        return self.cached(f"archive:{src}", lambda: Archive.open(src))

    def taco(self, src: str) -> Tortilla:
        return self.cached(f"taco:{src}", lambda: Tortilla.open(open_binary(src), src))

    @property
    def maker(self):
        """How the synthetic LR is made (:class:`.synthetic.Maker`; the model loaded once)."""
        return self.cached("maker", self._load_maker)

    def _load_maker(self):
        from dataset_builder.sources.releases.synthetic import Maker
        from sen2naip_hub.convert import convert_reference, reference_is_converted
        from sen2naip_hub.models import Degradation

        settings = self.settings
        if settings.model is None and not reference_is_converted(DEFAULT_MODELS_DIR):
            convert_reference(DEFAULT_MODELS_DIR)
        model = Degradation.from_pretrained(settings.model_id).eval()
        return Maker(model, settings.model_id, settings.harmonization, settings.seed)

    @property
    def fetched(self) -> int:
        """Bytes fetched over HTTP by the open sources so far."""
        total = 0
        for value in self._cache.values():
            if isinstance(value, Archive):
                total += value.fetched
            elif isinstance(value, Tortilla):
                total += fetched_bytes(value.handle)
        return total

    def close(self) -> None:
        for value in self._cache.values():
            if isinstance(value, Archive):
                value.close()
            elif isinstance(value, Tortilla):
                value.handle.close()


def _task_name(index: int, label: str) -> str:
    return f"rows/{index:07d}-{hashlib.sha256(label.encode()).hexdigest()[:12]}.npz"


def plan_import(settings: ImportSettings, context: ImportContext) -> Step:
    """One task per ROI folder (v1) or sample (v2) of every source, in source order."""
    items: list[dict[str, Any]] = []
    for src in settings.sources:
        if settings.release == "v2":
            taco = context.taco(src)
            items += [{"src": src, "index": i, "id": str(r["tortilla:id"])} for i, r in enumerate(taco.rows)]
            continue
        for roi in find_rois(context.archive(src).names()):
            items.append({"src": src, "roi": roi.roi, "folder": roi.folder, "members": list(roi.members)})
    items = items[: settings.limit]
    tasks = tuple(
        Task(_task_name(i, json.dumps(item, sort_keys=True)), RUNNER, {"release": settings.release, **item})
        for i, item in enumerate(items)
    )
    return Step(f"import {settings.release}", tasks)


def run_item(args: dict[str, Any], context: ImportContext) -> bytes:
    """Task runner: one ROI / sample → the checkpoint of its rows (with provenance as ``extra``)."""
    release = args["release"]
    split = None
    if release == "v2":
        row, split = _v2(context, args)
        rows = [row]
    else:
        roi = RoiMembers(args["roi"], args["folder"], tuple(args["members"]))
        archive = context.archive(args["src"])
        if release == "v1-cross-sensor":
            rows = [cross_sensor_row(archive, roi, release)]
        else:
            from dataset_builder.sources.releases.synthetic import synthetic_rows

            rows = synthetic_rows(archive, roi, release, context.maker)
    extra = [_provenance(row, split) for row in rows]
    records = [dataclasses.replace(row.record, naip_id=row.naip_id, s2_id=row.s2_id) for row in rows]
    return encode_records(records, extra)


def _v2(context: ImportContext, args: dict[str, Any]) -> tuple[ReleaseRow, str | None]:
    from dataset_builder.sources.releases.v2 import sample_row

    return sample_row(context.taco(args["src"]), args["index"], args["release"])


def _provenance(row: ReleaseRow, split: str | None) -> dict[str, Any]:
    return {
        "release": row.release,
        "naip_id": row.naip_id,
        "s2_id": row.s2_id,
        "group": row.group,
        "crs": row.record.crs,
        "bounds": list(row.bounds),
        "release_split": split,
    }


def _item_id(task: Task) -> str:
    args = task.args
    return args.get("folder") or f"{args['src']}#{args['index']}:{args['id']}"


def source_label(src: str) -> str:
    """A source as the checkpoints' fingerprint sees it: the URL, or the absolute path with size and mtime."""
    if is_url(src):
        return src
    stat = os.stat(src)
    return f"{os.path.abspath(src)}:{stat.st_size}:{stat.st_mtime_ns}"
