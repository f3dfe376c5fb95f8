"""The synthetic stage on Ray Data: ``sen2naip build --backend ray [--address ...]``.

The local backend (:func:`dataset_builder.build.stage_synthetic`) runs tile → blank filter → CLIP →
k-means++ → degrade in one process. This module runs the same stage on a Ray cluster and leaves
*the same checkpoints* in the work folder, so everything after it (manifest, splits, parquet shards,
dataset card: :mod:`dataset_builder.writer`) is the local code, unchanged:

1. **tile + blank filter** (CPU tasks, ``map_batches`` of a function, one NAIP image per call): the
   world-grid tiles of an image are read window by window and blank ones are dropped with their
   reason (:func:`dataset_builder.build._read_tile`, the local rule). The kept tiles leave the task as
   *chunks* of ``synthetic.embed_batch_size`` consecutive tiles of one image, exactly the batches the
   local backend gives the encoder.
2. **CLIP embedding** (an actor pool, ``map_batches`` of a class; ``num_gpus=1`` per actor when the
   cluster has GPUs and ``device`` is not ``cpu``): each actor loads
   :class:`~dataset_builder.selection.ClipEmbedder` once and embeds chunk by chunk. (Without GPUs,
   Ray Data fuses step 1 into the actors' processes, as both ask for one CPU; with GPU actors the
   reads stay separate CPU tasks.) The driver gathers the (small) embeddings and writes one
   ``synthetic/embed-NNNNN.npz`` checkpoint per image as soon as all of its chunks are back.
3. **k-means++** on the driver over every embedding, sorted as the local backend sorts them (images by
   file name, tiles in grid order): :func:`dataset_builder.build._select`, which calls
   :func:`~dataset_builder.selection.select_diverse`. scikit-learn handles a few million 512-d
   vectors on one machine; beyond that the selection is the step to replace (faiss), not the pool.
4. **degradation** (an actor pool like 2.): the selected tiles are cut into the local backend's batches
   (``batch_size`` consecutive selected tiles) and each batch is one Ray row, run by
   :func:`dataset_builder.build._degrade_batch` in an actor that loads the Degradation model once. A
   tile's noise comes from its own generator seeded by :func:`~dataset_builder.build.tile_seed`.
   Each batch comes back as the bytes of its ``synthetic/degrade-NNNNN.npz`` checkpoint.

Why the result equals the local backend's, byte for byte: every model call sees the same tensors in
the same batch composition as in the local run (chunks and batches are fixed by the config, never by
Ray's block sizes or scheduling), with the same number of torch CPU threads
(:attr:`RayOptions.torch_threads`), every output is keyed by its image or batch index rather than by
arrival order, and the selection and the writer are the local code. Floating-point kernels can still
differ between machines (CPU vs GPU, GPU models), as they do for the local backend run on two
different machines; the test checks equality on one machine, on the CPU.

The ``cross_sensor`` stage is not distributed: it runs the local code on the driver (it is small next
to the synthetic stage: one pipeline per NAIP × Sentinel-2 pair). Resuming works as for the local
backend: images and batches whose checkpoints exist are not sent to Ray again.

On a remote cluster (``--address``) the workers must be able to import this package and read the
input paths (a shared filesystem or object store mounted at the same path); checkpoints and the
dataset are written by the driver only.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from dataset_builder.build import (
    BuildError,
    Echo,
    _degrade_batch,
    _Models,
    _select,
    split_tiles,
)
from dataset_builder.checkpoints import KILL_ENV, Checkpoints, atomic_write_bytes, commit_point
from dataset_builder.config import BuildConfig
from sen2naip_hub.sensors import NAIP

if TYPE_CHECKING:  # ray is optional: imported only when the Ray backend runs
    import ray.data

__all__ = ["INSTALL_HINT", "RayOptions", "require_ray", "stage_synthetic_ray"]

#: What to run when Ray is missing.
INSTALL_HINT: str = "pip install 'sen2naip-hub[ray]'"
#: CPUs each read task and each actor asks Ray for.
CPUS_PER_WORKER: float = 1.0
#: A chunk row that carries only the blank tiles of its image (no tile to embed).
_BLANKS_CHUNK: int = -1


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide the Ray backend runs.

    Attributes:
        address: a Ray cluster address (``ray://host:10001``, ``auto``), or None for the cluster this
            process is already connected to, else a new local one.
        workers: actors in each pool (CLIP, degradation); None: one per GPU of the cluster when it
            has GPUs and the build's device is not ``cpu``, else one.
        torch_threads: CPU threads of torch inside each actor; None: the driver's
            ``torch.get_num_threads()``. CPU results depend on it (parallel reductions sum in another
            order: the degradation's LR moves by 1 DN at a few pixels between 1 and 2 threads), so
            the default is what makes a CPU Ray build equal to a local CPU build on the driver's
            machine. Ray gives each actor ``CPUS_PER_WORKER`` CPU whatever this is.
    """

    address: str | None = None
    workers: int | None = None
    torch_threads: int | None = None


def require_ray() -> None:
    """Raise :class:`BuildError` with the install line unless ``ray[data]`` can be imported."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as err:
        raise BuildError(f"the Ray backend needs Ray Data ({err.name} is missing): {INSTALL_HINT}") from err


# ---------------------------------------------------------------------------- 1. tile + blank filter
def _tile_chunks(path: Path, image: int, size: int, chunk: int) -> Iterator[dict[str, Any]]:
    """The rows of one image: blank tiles (one row, ``chunk = -1``) and chunks of kept tiles' RGB."""
    kept, blanks = split_tiles(path, size)
    starts = range(0, len(kept), chunk)
    n_chunks = len(starts)
    yield {
        "image": image,
        "chunk": _BLANKS_CHUNK,
        "n_chunks": n_chunks,
        "path": str(path),
        "tiles": "[]",
        "blank": json.dumps(blanks),
        "rgb": b"",
    }
    for index, start in enumerate(starts):
        part = kept[start : start + chunk]
        rgb = np.ascontiguousarray(np.stack([t.data[:3] for t in part]), dtype=np.float32)
        yield {
            "image": image,
            "chunk": index,
            "n_chunks": n_chunks,
            "path": str(path),
            "tiles": json.dumps([[t.tile_id, t.row, t.col] for t in part]),
            "blank": "[]",
            "rgb": rgb.tobytes(),
        }


def read_and_filter(batch: dict[str, np.ndarray], size: int, chunk: int) -> dict[str, np.ndarray]:
    """Ray task: ``{image, path}`` rows → chunk rows (see :func:`_tile_chunks`), on a CPU worker."""
    rows = [
        r
        for image, path in zip(batch["image"], batch["path"], strict=True)
        for r in _tile_chunks(Path(str(path)), int(image), size, chunk)
    ]
    return _columns(rows)


def _columns(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    keys = rows[0].keys() if rows else ()
    out: dict[str, np.ndarray] = {}
    for key in keys:
        values = [r[key] for r in rows]
        out[key] = np.array(values) if isinstance(values[0], int) else np.array(values, dtype=object)
    return out


# ---------------------------------------------------------------------------- 2. CLIP actors
class EmbedActor:
    """Ray actor: loads the build's CLIP encoder once, embeds chunk rows into float32 bytes."""

    def __init__(self, config: BuildConfig, torch_threads: int) -> None:
        os.environ.pop(KILL_ENV, None)  # the kill-and-resume hook is for the driver only
        torch.set_num_threads(torch_threads)
        self.config = config
        self.models = _Models(config, echo=lambda _: None)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        size = self.config.synthetic.tile_size
        embeddings = []
        for rgb in batch["rgb"]:
            if not len(rgb):
                embeddings.append(b"")
                continue
            images = np.frombuffer(rgb, dtype=np.float32).reshape(-1, 3, size, size)
            vectors = self.models.embedder.embed(list(images)).astype(np.float32)
            embeddings.append(vectors.tobytes())
        out = {k: batch[k] for k in ("image", "chunk", "n_chunks", "path", "tiles", "blank")}
        out["embedding"] = np.array(embeddings, dtype=object)
        return out


# ---------------------------------------------------------------------------- 4. degradation actors
class DegradeActor:
    """Ray actor: loads the Degradation model once; each row is one local-backend batch."""

    def __init__(self, config: BuildConfig, dates: dict[str, str], torch_threads: int) -> None:
        os.environ.pop(KILL_ENV, None)
        torch.set_num_threads(torch_threads)
        self.config, self.dates = config, dates
        self.models = _Models(config, echo=lambda _: None)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        payloads = []
        for chosen_json in batch["chosen"]:
            chosen = json.loads(str(chosen_json))
            records = _degrade_batch(chosen, self.dates, self.config, self.models)
            ids = [{"id": c["tile_id"], "roi_id": r.roi_id} for c, r in zip(chosen, records, strict=True)]
            with tempfile.TemporaryDirectory() as tmp:  # the checkpoint's own format, as bytes
                Checkpoints(Path(tmp)).save_records("batch.npz", records, ids)
                payloads.append((Path(tmp) / "batch.npz").read_bytes())
        return {"index": batch["index"], "payload": np.array(payloads, dtype=object)}


# ---------------------------------------------------------------------------- the stage
def _connect(options: RayOptions, echo: Echo) -> bool:
    """Connect to (or start) a Ray cluster; True if this call started it (and should shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    ray.init(address=options.address, include_dashboard=False, log_to_driver=False)
    echo(f"ray: connected to {options.address or 'a new local cluster'} ({ray.cluster_resources()})")
    return True


def _pool_args(config: BuildConfig, options: RayOptions) -> dict[str, Any]:
    """``map_batches`` resources of an actor pool: GPUs when the cluster has them and device allows."""
    import ray
    import ray.data

    gpus = int(ray.cluster_resources().get("GPU", 0))
    use_gpu = gpus > 0 and config.device != "cpu"
    workers = options.workers or (gpus if use_gpu else 1)
    args: dict[str, Any] = {"compute": ray.data.ActorPoolStrategy(size=workers), "num_cpus": CPUS_PER_WORKER}
    if use_gpu:
        args["num_gpus"] = 1
    return args


def _threads(options: RayOptions) -> int:
    return options.torch_threads or torch.get_num_threads()


def _embed_dataset(config: BuildConfig, todo: list[tuple[int, str]], options: RayOptions) -> ray.data.Dataset:
    import ray.data

    synthetic = config.synthetic
    items = [{"image": image, "path": path} for image, path in todo]
    return (
        ray.data.from_items(items, override_num_blocks=len(items))
        .map_batches(
            read_and_filter,
            batch_size=1,
            batch_format="numpy",
            fn_kwargs={"size": synthetic.tile_size, "chunk": synthetic.embed_batch_size},
            num_cpus=CPUS_PER_WORKER,
        )
        .map_batches(
            EmbedActor,
            batch_size=1,  # one row = one chunk of embed_batch_size tiles (the encoder's batch)
            batch_format="numpy",
            fn_constructor_kwargs={"config": config, "torch_threads": _threads(options)},
            **_pool_args(config, options),
        )
    )


def _gather_embeddings(
    config: BuildConfig,
    store: Checkpoints,
    names: list[str],
    todo: list[tuple[int, str]],
    options: RayOptions,
) -> None:
    """Run steps 1-2 for the images in ``todo``; save each image's checkpoint once it is complete."""
    pending: dict[int, dict[int, dict[str, Any]]] = {}
    for row in _embed_dataset(config, todo, options).iter_rows():
        image = int(row["image"])
        chunks = pending.setdefault(image, {})
        chunks[int(row["chunk"])] = row
        if len(chunks) < int(row["n_chunks"]) + 1:  # + the blanks row
            continue
        del pending[image]
        ordered = [chunks[c] for c in sorted(chunks)]
        tiles = [t for r in ordered for t in json.loads(r["tiles"])]
        vectors = [np.frombuffer(r["embedding"], dtype=np.float32) for r in ordered if len(r["embedding"])]
        if vectors:
            embeddings = np.concatenate(vectors).reshape(len(tiles), -1)
        else:
            embeddings = np.zeros((0, 0), dtype=np.float32)
        meta = {"path": str(row["path"]), "tiles": tiles, "blank": json.loads(chunks[_BLANKS_CHUNK]["blank"])}
        store.save_arrays(names[image], meta, embeddings=embeddings)
    if pending:
        raise BuildError(f"ray: images {sorted(pending)} came back incomplete from the embedding pool")


def _degrade(
    config: BuildConfig,
    store: Checkpoints,
    names: list[str],
    todo: list[tuple[int, list[dict[str, Any]]]],
    dates: dict[str, str],
    options: RayOptions,
) -> None:
    import ray.data

    items = [{"index": index, "chosen": json.dumps(chosen)} for index, chosen in todo]
    dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        DegradeActor,
        batch_size=1,  # one row = one local-backend batch of batch_size tiles
        batch_format="numpy",
        fn_constructor_kwargs={"config": config, "dates": dates, "torch_threads": _threads(options)},
        **_pool_args(config, options),
    )
    for row in dataset.iter_rows():
        name = names[int(row["index"])]
        atomic_write_bytes(store.path(name), bytes(row["payload"]))
        commit_point(name)


def stage_synthetic_ray(
    config: BuildConfig,
    sources: list[dict],
    store: Checkpoints,
    models: _Models,
    progress: bool,
    echo: Echo,
    options: RayOptions | None = None,
) -> tuple[list[str], list[str]]:
    """Stage 3 on Ray: the checkpoints :func:`~dataset_builder.build.stage_synthetic` leaves, same names.

    Returns the names of the embedding and degradation checkpoints, in order. Connects to
    ``options.address`` (or starts a local cluster) unless Ray is already initialised, and shuts
    down only a cluster it started.
    """
    if not config.synthetic.enabled:
        return [], []
    require_ray()
    import ray
    import ray.data

    options = options or RayOptions()
    naip = sorted(
        (e for e in sources if e["sensor"] == NAIP.name and e["status"] == "ok"),
        key=lambda e: Path(e["path"]).name,
    )
    embed_names = [f"synthetic/embed-{i:05d}.npz" for i in range(len(naip))]
    models.convert_if_missing()  # on the driver, once, before actors try to load the model
    started = _connect(options, echo)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = progress
        todo = [
            (i, e["path"]) for i, (n, e) in enumerate(zip(embed_names, naip, strict=True)) if not store.has(n)
        ]
        if todo:
            _gather_embeddings(config, store, embed_names, todo, options)
        selected = _select(config, store, embed_names, echo)["selected"]
        dates = {e["path"]: e["date"] for e in naip}
        batches = [selected[i : i + config.batch_size] for i in range(0, len(selected), config.batch_size)]
        degrade_names = [f"synthetic/degrade-{i:05d}.npz" for i in range(len(batches))]
        todo_batches = [
            (i, b) for i, (n, b) in enumerate(zip(degrade_names, batches, strict=True)) if not store.has(n)
        ]
        if todo_batches:
            _degrade(config, store, degrade_names, todo_batches, dates, options)
    finally:
        if started:
            ray.shutdown()
    return embed_names, degrade_names
