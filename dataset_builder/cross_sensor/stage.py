"""Stage 2, cross_sensor: one task per (NAIP, Sentinel-2) acquisition pair, run by a backend.

The pairs come from :func:`~dataset_builder.sources.acquisitions.pair_acquisitions` over the kept
sources, or, with ``cross_sensor.simulate``, from Sentinel-2 candidates simulated from the real NAIP
first (:func:`~dataset_builder.cross_sensor.simulate.simulate_candidates`, deliberately bad ones
included; their rows carry ``source="simulated"``). Each task runs
:func:`~dataset_builder.cross_sensor.pairs.build_cross_sensor_pairs` on its pair with the
Degradation model's blur and downsampling (no harmonization, no noise) and leaves one checkpoint
holding the kept records and the manifest entries of every ROI.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from affine import Affine

from dataset_builder.core.checkpoints import Checkpoints, encode_records
from dataset_builder.core.config import BuildConfig
from dataset_builder.core.context import BuildContext
from dataset_builder.core.errors import BuildError
from dataset_builder.core.plan import Step, Task
from dataset_builder.core.records import PairRecord
from dataset_builder.core.splits import RoiSplitter, spatial_roi_id
from dataset_builder.cross_sensor.pairs import CrossSensorConfig, build_cross_sensor_pairs
from dataset_builder.cross_sensor.simulate import simulate_candidates
from dataset_builder.sources.acquisitions import Acquisition, pair_acquisitions, parse_date
from dataset_builder.sources.stage import acquisition, usable_acquisitions
from sen2naip_hub.sensors import NAIP, SENTINEL2

__all__ = ["RUNNER", "SIMULATED_CHECKPOINT", "manifest_entries", "plan_cross_sensor", "run_pair"]

#: The runner of this stage's tasks (see :mod:`dataset_builder.core.plan`).
RUNNER: str = f"{__name__}:run_pair"
#: The list of simulated Sentinel-2 candidates, once they are written.
SIMULATED_CHECKPOINT: str = "cross_sensor/simulated.json"


def _entry(acq: Acquisition) -> dict[str, str | None]:
    entry = {"path": str(acq.path), "date": acq.date.isoformat()}
    if acq.item_id is not None:
        entry["item"] = acq.item_id
    if acq.scl is not None:
        entry["scl"] = str(acq.scl)
    return entry


def _simulated_s2(
    config: BuildConfig, naip: list[Acquisition], store: Checkpoints, context: BuildContext
) -> list[Acquisition]:
    """Simulate the Sentinel-2 candidates once (checkpointed) and list them as acquisitions."""
    kinds = config.cross_sensor.simulate.kinds
    if len(naip) < len(kinds):
        raise BuildError(
            f"cross_sensor.simulate needs one usable NAIP file per kind: {len(kinds)} kinds, "
            f"{len(naip)} usable NAIP files"
        )
    s2_dir = store.path("cross_sensor/simulated_s2")
    if not store.has(SIMULATED_CHECKPOINT):
        made = simulate_candidates(
            [a.path for a in naip], s2_dir, context.degrade_noiseless, kinds=kinds, seed=config.seed
        )
        store.save_json(SIMULATED_CHECKPOINT, [{"kind": c.kind, "s2_path": c.s2_path.name} for c in made])
    paths = [s2_dir / c["s2_path"] for c in store.load_json(SIMULATED_CHECKPOINT)]
    entries = [{"path": str(p), "date": parse_date(p).isoformat()} for p in paths]
    return sorted((acquisition(e, SENTINEL2) for e in entries), key=lambda a: (a.date, a.path.name))


def plan_cross_sensor(
    config: BuildConfig, sources: list[dict[str, Any]], store: Checkpoints, context: BuildContext
) -> Step:
    """The stage's step: one task per acquisition pair, checkpoint ``cross_sensor/pair-NNNNN.npz``."""
    if not config.cross_sensor.enabled:
        return Step("cross_sensor", ())
    naip = usable_acquisitions(sources, NAIP)
    if config.cross_sensor.simulate is None:
        s2, source = usable_acquisitions(sources, SENTINEL2), "real"
    else:
        s2, source = _simulated_s2(config, naip, store, context), "simulated"
    pairs = pair_acquisitions(naip, s2, config.sources.max_days)
    tasks = tuple(
        Task(
            f"cross_sensor/pair-{i:05d}.npz", RUNNER, {"naip": _entry(hr), "s2": _entry(lr), "source": source}
        )
        for i, (hr, lr) in enumerate(pairs)
    )
    return Step("cross_sensor", tasks)


def _roi_id(record: PairRecord) -> str:
    transform = Affine.from_gdal(*record.hr_transform)
    return spatial_roi_id(record.crs, transform, record.hr.shape[1], record.hr.shape[2])


def run_pair(args: dict[str, Any], context: BuildContext) -> bytes:
    """Task runner: the cross-sensor pipeline on one pair → records + per-ROI manifest entries."""
    stage = context.config.cross_sensor
    pair = (acquisition(args["naip"], NAIP), acquisition(args["s2"], SENTINEL2))
    settings = CrossSensorConfig(
        roi_size=stage.roi_size,
        stride=stage.stride,
        hr_resolution_m=stage.hr_resolution_m,
        max_scl_fraction=stage.max_cloud_fraction,
    )
    result = build_cross_sensor_pairs(
        [pair], context.degrade_noiseless, source=args["source"], config=settings
    )
    records, entries = [], []
    for record in result.records:
        roi = _roi_id(record)
        entries.append(
            {"id": record.roi_id, "status": "kept", "roi_id": roi, "qa1": record.qa1, "qa2": record.qa2}
        )
        records.append(dataclasses.replace(record, roi_id=roi))
    entries += [{"id": r.candidate_id, "status": "rejected", "reason": r.reason} for r in result.rejections]
    return encode_records(records, [{"stage": "cross_sensor", "config": "cross_sensor"} | e for e in entries])


def manifest_entries(step: Step, store: Checkpoints, splitter: RoiSplitter) -> list[dict[str, Any]]:
    """The manifest entries of every task: its ROIs (kept ones with their split), or the pair's rejection."""
    entries = []
    for task in step.tasks:
        reason = store.rejection(task.name)
        if reason:
            pair_id = f"{task.args['naip']['path']}__{task.args['s2']['path']}"
            entries.append(
                {
                    "stage": "cross_sensor",
                    "config": "cross_sensor",
                    "id": pair_id,
                    "status": "rejected",
                    "reason": reason,
                }
            )
            continue
        for entry in store.load_meta(task.name)["extra"]:
            if entry["status"] == "kept":
                entry["split"] = splitter.split_of(entry["roi_id"])
            entries.append(entry)
    return entries
