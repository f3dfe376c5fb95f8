"""``sen2naip build``: sources → cross_sensor → synthetic → write, resumable, into a Hub dataset folder.

Each stage lives in its own package and describes its work as a plan (:mod:`dataset_builder.core.plan`);
a backend (:mod:`dataset_builder.backends`: this process, or Ray) runs the plan's tasks, and the
driver runs the rest:

1. **sources** (:mod:`dataset_builder.sources.stage`): list, date and check every input file;
2. **cross_sensor** (:mod:`dataset_builder.cross_sensor.stage`): one task per acquisition pair;
3. **synthetic** (:mod:`dataset_builder.synthetic.stage`): one task per image (tile + CLIP), the
   k-means++ selection, one task per batch of selected tiles (degradation);
4. **write** (:mod:`dataset_builder.write.output`): shards, card and manifest, swapped into ``out``.

Every task's result is a checkpoint in the work folder; a task that fails on its item becomes a
rejection with its reason, listed in the manifest, and the build goes on. The work folder is locked
while a build runs. Rows are keyed by a *spatial* ROI id (no date), so every acquisition of a place
lands in one split. The same config and inputs give byte-identical shards whether the build ran at
once or was killed and restarted any number of times, on either backend; re-running a finished build
prints "nothing to do" and touches nothing.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dataset_builder.backends import Backend, make_backend
from dataset_builder.core.checkpoints import DONE_NAME, Checkpoints
from dataset_builder.core.config import BuildConfig, expand_env
from dataset_builder.core.context import BuildContext, Echo
from dataset_builder.core.errors import BuildError
from dataset_builder.core.fingerprint import fingerprint, stage_fingerprints, tree_stats
from dataset_builder.cross_sensor import stage as cross_sensor
from dataset_builder.sources.signing import redact
from dataset_builder.sources.stage import stage_sources
from dataset_builder.synthetic import shards as synthetic_shards
from dataset_builder.synthetic import stage as synthetic
from dataset_builder.write.card import BuildFacts
from dataset_builder.write.output import (
    BuildResult,
    check_out,
    publish_staging,
    recover,
    result,
    write_staging,
)
from dataset_builder.write.pipeline import DEFAULT_WRITERS, DependentTasks

__all__ = ["LOCK_NAME", "build_dataset", "build_facts"]

#: The lock file in the work folder: one build at a time per work folder.
LOCK_NAME: str = ".lock"


@contextmanager
def work_lock(work: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``work`` for the block; a second build there gets one line and stops."""
    work.mkdir(parents=True, exist_ok=True)
    with (work / LOCK_NAME).open("a") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BuildError(
                f"{work}: another build is running with this work folder (lock {work / LOCK_NAME}); "
                "wait for it to finish or use another --work-dir"
            ) from None
        yield


def _stac_api_text(config: BuildConfig, source) -> str:
    """A STAC API source in the card: API, collection, area, dates; NAIP's resampling; S2's SCL."""
    remote = config.sources
    text = f"STAC API `{redact(expand_env(source.stac_api))}`, collection `{source.collection}`"
    text += f", bbox {remote.bbox}, datetime {remote.datetime or 'any'}"
    if source.asset:
        target = config.cross_sensor.hr_resolution_m
        resampled = f"resampled to {target:g} m by {remote.hr_resampling}" if target else "native pixels"
        text += f"; asset `{source.asset}`, {resampled} (native pixel size per item in the manifest)"
    if source.bands:
        text += f"; bands {source.bands}, reflectance from each item's raster:bands scale and offset"
        text += f", SCL asset `{source.scl}`" if source.scl else ", no SCL (brightness cloud screen)"
    return text


def _source_text(source, config: BuildConfig | None = None) -> str | None:
    if source.stac_api and config is not None:
        return _stac_api_text(config, source)
    if source.folder:
        return f"folder `{expand_env(source.folder)}` ({source.pattern})"
    if source.stac:
        return f"static STAC catalog `{expand_env(source.stac)}`"
    return None


def build_facts(config: BuildConfig, context: BuildContext) -> BuildFacts:
    """What the card says about this build beyond its shards."""
    synthetic_config = config.synthetic
    weights = synthetic_config.clip_pretrained or f"random weights (not pretrained; seed {config.seed})"
    return BuildFacts(
        repo_id=config.write.repo_id,
        splitter=config.splits.splitter(),
        naip_source=_source_text(config.sources.naip, config),
        s2_source=_source_text(config.sources.s2, config),
        degradation_model=context.degradation_id if synthetic_config.enabled else None,
        clip=f"`{synthetic_config.clip_model}` with {weights}",
        fingerprint=fingerprint(config),
    )


def _run_stages(
    config: BuildConfig, store: Checkpoints, context: BuildContext, backend: Backend, progress: bool
) -> tuple[dict[str, list[str]], dict[str, list[str]], list[dict[str, Any]]]:
    """Stages 1-3; returns the record checkpoints per config, the shard files written already per
    config (the synthetic ones, written while the degradation runs) and the manifest entries."""
    sources = stage_sources(config, store, progress)
    pairs = cross_sensor.plan_cross_sensor(config, sources, store, context)
    backend.execute(pairs, store, context, progress)
    embed = synthetic.plan_embed(config, sources)
    backend.execute(embed, store, context, progress)
    selected = (
        synthetic.select(config, store, embed, context.echo, context.device)["selected"]
        if embed.tasks
        else []
    )
    degrade = synthetic.plan_degrade(config, selected, sources)
    splitter = config.splits.splitter()
    shards = synthetic_shards.plan_shards(config, selected, degrade, splitter)
    with DependentTasks(
        shards,
        store,
        lambda task: synthetic_shards.write_planned_shard(task, store, config, context),
        workers=context.processes or DEFAULT_WRITERS,  # a shard per offload process
    ) as writer:
        backend.execute(degrade, store, context, progress, on_saved=writer.notify)
    manifest = list(sources) + cross_sensor.manifest_entries(pairs, store, splitter)
    manifest += synthetic.manifest_entries(embed, degrade, store, splitter)
    return {"cross_sensor": pairs.names}, {"synthetic": shards.names}, manifest


def build_dataset(
    config: BuildConfig,
    *,
    progress: bool = True,
    echo: Echo = print,
    backend: str = "local",
    address: str | None = None,
) -> BuildResult:
    """Run (or resume, or confirm) the build described by ``config``; see the module docstring.

    ``backend="ray"`` runs the plan's tasks on Ray actors (the optional ``ray`` extra) on the cluster at
    ``address`` (None: the one already initialised, else a new local one).

    Raises:
        BuildError: no usable NAIP input, ``out`` is a folder this build did not write, no row kept,
            every item of a step failing, an unknown ``backend``, Ray
            asked for but not installed, another build running in the same work folder, a write that
            failed (disk full, file too large, read-only).
        ConfigError: an invalid setting found late (e.g. a path variable not set).
        DeviceUnavailableError: ``device`` names CUDA on a machine without it.
    """
    runner = make_backend(backend, address)
    out, work = config.out_dir, config.work_path
    check_out(out)
    context = BuildContext(config, echo)
    try:
        with work_lock(work):
            return _build(config, out, work, context, runner, progress)
    except OSError as err:  # the machine's fault, not an item's (those are rejected inside the plan)
        where = f" ({err.filename})" if err.filename else ""
        raise BuildError(
            f"{err.strerror or err}{where}: the build stopped; {out} is unchanged and the checkpoints in "
            f"{work} are kept: fix the cause and run the same command again to resume"
        ) from err
    finally:
        runner.close()
        context.close()


def _build(
    config: BuildConfig, out: Path, work: Path, context: BuildContext, backend: Backend, progress: bool
) -> BuildResult:
    recover(out, work)
    if config.cross_sensor.enabled or config.synthetic.enabled:
        context.convert_if_missing()  # before the fingerprint, which lists the model's files
    store = Checkpoints.open(work, stage_fingerprints(config), context.echo)
    if store.has(DONE_NAME) and out.is_dir() and store.load_json(DONE_NAME)["files"] == tree_stats(out):
        context.echo(
            f"nothing to do: {out} is up to date with this config and its inputs (checkpoints: {work})"
        )
        return result(out, changed=False)
    backend.start(context)
    chunks, shards, manifest = _run_stages(config, store, context, backend, progress)
    staging = work / "staging"
    write_staging(config, staging, chunks, manifest, store, build_facts(config, context), progress, shards)
    changed = publish_staging(staging, out, work, context.echo)
    store.save_json(DONE_NAME, {"files": tree_stats(out)})
    return result(out, changed=changed)
