"""``sen2naip build``: sources → cross_sensor → synthetic → write, resumable, into a Hub dataset folder.

Stages (each with a progress bar, each checkpointed in the work folder, see
:mod:`dataset_builder.checkpoints`):

1. **sources**: list the NAIP and Sentinel-2 GeoTIFFs (folders or static STAC catalogs), date them and
   read each one through, block by block. A file without a date, unreadable, corrupt, truncated, of
   the wrong band count or band order, or without a CRS is left out with its reason; nothing stops.
2. **cross_sensor**: pair NAIP with Sentinel-2 acquisitions within ``sources.max_days``
   (:func:`~dataset_builder.sources.pair_acquisitions`) and run
   :func:`~dataset_builder.cross_sensor.build_cross_sensor_pairs` pair by pair (one checkpoint per
   pair). With ``cross_sensor.simulate`` the Sentinel-2 candidates are first simulated from the real
   NAIP (:func:`~dataset_builder.simulate.simulate_candidates`, deliberately bad ones included) and
   the rows are marked ``source="simulated"``; the pipeline is the one real pairs take. The
   degradation used for co-registration and QA is the Degradation model without noise.
3. **synthetic**: per NAIP image (one checkpoint each): cut world-grid tiles, drop blank ones
   (:func:`~dataset_builder.selection.is_blank`, reason recorded), embed the RGB with open_clip; then
   k-means++ selection (:func:`~dataset_builder.selection.select_diverse`); then degrade the selected
   tiles with ``Degradation`` in batches of ``batch_size`` on ``device`` (one checkpoint per batch).
   The harmonization and blur run batched; the noise is drawn per tile from a generator seeded by
   :func:`tile_seed` (the build seed and the tile id), so a tile's noise never depends on which tiles
   share its batch.
4. **write**: parquet shards and the dataset card (:mod:`dataset_builder.writer`) plus
   ``manifest.jsonl`` into ``<work>/staging``; then, only if the result differs from ``out``, ``out``
   is replaced by renaming (``out`` → ``<work>/previous``, staging → ``out``). A build killed between
   the two renames is repaired at the next start (the previous dataset is put back, then rebuilt).

Rows are keyed by a *spatial* ROI id (:func:`~dataset_builder.splits.spatial_roi_id`, no date), so
every acquisition of a place lands in one split. ``source`` is ``"simulated"`` for simulated
cross-sensor candidates and ``"real"`` otherwise (synthetic rows: real NAIP, LR from
``degradation_model``).

The same config and inputs give byte-identical shards whether the build ran at once or was killed
and restarted any number of times: chunks are fixed by the config (not by timing), every random step
is seeded, and the writer is deterministic. Re-running a finished build prints "nothing to do" and
touches nothing.
"""

from __future__ import annotations

import dataclasses
import filecmp
import functools
import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.errors import RasterioError
from rasterio.windows import Window
from tqdm.auto import tqdm

import dataset_builder
import sen2naip_hub
from dataset_builder.checkpoints import Checkpoints, atomic_write_text, commit_point
from dataset_builder.config import BuildConfig, FolderSource, expand_env
from dataset_builder.cross_sensor import CrossSensorConfig, build_cross_sensor_pairs
from dataset_builder.records import CONFIG_NAMES, PairRecord
from dataset_builder.selection import (
    MAX_NODATA_FRACTION,
    MIN_BAND_STD,
    ClipEmbedder,
    Tile,
    _world_grid_offset,
    select_diverse,
)
from dataset_builder.simulate import simulate_candidates
from dataset_builder.sources import Acquisition, acquisitions_from_stac, pair_acquisitions, parse_date
from dataset_builder.splits import RoiSplitter, spatial_roi_id
from dataset_builder.writer import ShardLimits, scan_shards, write_config, write_dataset_card
from sen2naip_hub import __version__
from sen2naip_hub.convert import REPO_NAMES, convert_reference, reference_is_converted
from sen2naip_hub.errors import InvalidImageError, Sen2NaipError, UnreadableFileError
from sen2naip_hub.io import lr_transform, read_info, read_raster
from sen2naip_hub.sensors import N_BANDS, NAIP, SENTINEL2, Sensor, reflectance_to_s2

__all__ = [
    "BACKENDS",
    "MANIFEST_NAME",
    "BuildError",
    "BuildResult",
    "build_dataset",
    "resolve_device",
    "tile_seed",
]

Echo = Callable[[str], None]

#: The manifest inside the dataset folder: one JSON object per input file, candidate and tile.
MANIFEST_NAME: str = "manifest.jsonl"
#: Rows read at once when checking that an input file decodes completely.
CHECK_STRIP_ROWS: int = 1024
#: Where the synthetic stage runs: this process, or a Ray cluster (:mod:`dataset_builder.ray_backend`).
BACKENDS: tuple[str, ...] = ("local", "ray")
#: Bits of a tile's noise seed (torch generators take 64-bit seeds; 63 keeps it a positive int64).
SEED_BITS: int = 63
#: Harmonization inside the cross-sensor ``degrade`` (see :meth:`_Models.degrade_noiseless`).
CROSS_SENSOR_HARMONIZATION: str = "none"
_FILE_ERRORS = (Sen2NaipError, RasterioError, CPLE_BaseError, OSError)


class BuildError(Sen2NaipError, RuntimeError):
    """The build cannot go on: missing inputs, an unusable output folder, no rows at all, ..."""


@dataclass(frozen=True)
class BuildResult:
    """What a build left in ``out``: rows per config and split, and whether ``out`` changed."""

    out: Path
    counts: dict[str, dict[str, int]]
    manifest: Path
    changed: bool
    kept: int
    rejected: int


# ---------------------------------------------------------------------------- helpers
def resolve_device(name: str) -> str:
    """``auto`` → ``cuda`` when available, else ``cpu``; ``cuda`` without CUDA is a :class:`BuildError`."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BuildError(f"device {name}: CUDA is not available on this machine (use --device cpu)")
    return name


def tile_seed(seed: int, tile_id: str) -> int:
    """The noise seed of one tile: sha256 of the build seed and the tile id, as a 63-bit integer.

    >>> tile_seed(0, "m_x_20090818_r000000_c000128") == tile_seed(0, "m_x_20090818_r000000_c000128")
    True
    """
    digest = hashlib.sha256(f"{seed}:{tile_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> (64 - SEED_BITS)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _reason(err: BaseException) -> str:
    prefix = "invalid" if isinstance(err, InvalidImageError) else "unreadable"
    return f"{prefix}: {_first_line(err)}"


def _roi_id(crs: str, transform: Sequence[float], height: int, width: int) -> str:
    return spatial_roi_id(crs, Affine.from_gdal(*transform), height, width)


# ---------------------------------------------------------------------------- fingerprint
def _stat(path: Path) -> list[int]:
    """``[size, mtime_ns]`` of a file: how the fingerprint tells that a file changed."""
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


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
def code_digest() -> str:
    """:func:`source_digest` of the ``sen2naip_hub`` and ``dataset_builder`` packages as imported (the
    code that makes the data), computed once per process."""
    folders = [Path(package.__file__).parent for package in (sen2naip_hub, dataset_builder)]
    return hashlib.sha256("".join(source_digest(f) for f in folders).encode()).hexdigest()


def degradation_source(config: BuildConfig) -> str:
    """What the build loads the Degradation model from: ``degradation_model`` as given (a folder or a
    Hub repo id), else the folder ``<models>/sen2naip-degradation``."""
    if config.degradation_model:
        return config.degradation_model
    return str(Path(expand_env(config.models)) / REPO_NAMES["degradation"])


def _model_files(name: str | None) -> dict[str, list[int]] | None:
    """``{relative path: [size, mtime_ns]}`` of a model given as a local folder or file; ``None`` for
    anything else (a Hub repo id, an open_clip tag: then the name alone stands for the model)."""
    if not name:
        return None
    path = Path(name)
    if path.is_dir():
        return _tree_stats(path)
    return {path.name: _stat(path)} if path.is_file() else None


def fingerprint(config: BuildConfig) -> str:
    """sha256 of what decides the checkpoints' contents: the package version, the code
    (:func:`code_digest`), the config, the input files' names, sizes and modification times, and the
    models the build loads: the Degradation model (:func:`degradation_source`) and a local CLIP
    checkpoint, as each file's relative path, size and modification time when local.

    A Hub repo id counts by its name only: the build names no revision, so it loads the repo's default
    branch, and a new commit there does not change the fingerprint.
    """
    degradation = degradation_source(config)
    payload = {
        "version": __version__,
        "code": code_digest(),
        "config": config.to_dict(),
        "naip": _input_listing(config.sources.naip),
        "s2": _input_listing(config.sources.s2),
        "degradation_model": [degradation, _model_files(degradation)],
        "clip_checkpoint": _model_files(config.synthetic.clip_pretrained),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------------------- stage 1: sources
def check_input_file(path: Path, sensor: Sensor) -> None:
    """Raise a typed error unless ``path`` is a 4-band, georeferenced GeoTIFF of ``sensor`` that decodes."""
    info = read_info(path)
    if info.count != N_BANDS:
        raise InvalidImageError(
            f"{path}: expected {N_BANDS} bands ({', '.join(sensor.all_bands)}), found {info.count}"
        )
    if any(info.band_names) and tuple(info.band_names) != sensor.all_bands:
        found = ", ".join(str(n) for n in info.band_names)
        raise InvalidImageError(f"{path}: expected bands {', '.join(sensor.all_bands)}, found {found}")
    if info.crs is None:
        raise InvalidImageError(f"{path}: no CRS; a georeferenced GeoTIFF is needed")
    try:
        with rasterio.open(path) as src:
            for row in range(0, src.height, CHECK_STRIP_ROWS):
                src.read(window=Window(0, row, src.width, min(CHECK_STRIP_ROWS, src.height - row)))
    except (RasterioError, CPLE_BaseError) as err:
        raise UnreadableFileError(f"{path}: corrupt or truncated ({_first_line(err)})") from err


def _candidate_files(source: FolderSource, sensor: Sensor) -> list[tuple[Path, str | None]]:
    """``(path, ISO date or None)`` of every file of a source (STAC items carry their date)."""
    if source.stac:
        acquisitions = acquisitions_from_stac(expand_env(source.stac), sensor, source.asset_key)
        return [(acq.path, acq.date.isoformat()) for acq in acquisitions]
    if not source.folder:
        return []
    folder = Path(expand_env(source.folder))
    if not folder.is_dir():
        raise BuildError(f"{folder}: no such folder ({sensor.name} source)")
    return [(path, None) for path in sorted(folder.glob(source.pattern))]


def _screen_file(path: Path, date: str | None, sensor: Sensor) -> dict[str, Any]:
    """The manifest entry of one input file: ``status`` ok (with its date) or rejected (with why)."""
    entry: dict[str, Any] = {"stage": "sources", "sensor": sensor.name, "id": path.name, "path": str(path)}
    try:
        date = date or parse_date(path).isoformat()
        check_input_file(path, sensor)
    except _FILE_ERRORS as err:
        return entry | {"status": "rejected", "reason": _reason(err)}
    return entry | {"status": "ok", "date": date}


def stage_sources(config: BuildConfig, store: Checkpoints, progress: bool) -> list[dict[str, Any]]:
    """Stage 1; returns the manifest entries of every input file (checkpoint ``sources.json``)."""
    name = "sources.json"
    if store.has(name):
        return store.load_json(name)
    files = [(p, d, NAIP) for p, d in _candidate_files(config.sources.naip, NAIP)]
    files += [(p, d, SENTINEL2) for p, d in _candidate_files(config.sources.s2, SENTINEL2)]
    entries = [
        _screen_file(p, d, s) for p, d, s in tqdm(files, desc="sources", unit="file", disable=not progress)
    ]
    naip_ok = [e for e in entries if e["sensor"] == NAIP.name and e["status"] == "ok"]
    if not naip_ok:
        where = config.sources.naip.folder or config.sources.naip.stac
        raise BuildError(
            f"{expand_env(str(where))}: no usable NAIP GeoTIFF (found {len(entries)} file(s)); point "
            "sources.naip at a folder of 4-band NAIP GeoTIFFs (the sample: set SEN2NAIP_SAMPLE_DIR)"
        )
    store.save_json(name, entries)
    return entries


def _acquisition(entry: dict[str, Any], sensor: Sensor) -> Acquisition:
    import datetime as dt

    info = read_info(entry["path"])
    left, top = info.transform @ (0, 0)
    right, bottom = info.transform @ (info.width, info.height)
    bounds = (min(left, right), min(top, bottom), max(left, right), max(top, bottom))
    return Acquisition(Path(entry["path"]), sensor, dt.date.fromisoformat(entry["date"]), info.crs, bounds)


def _usable(entries: list[dict[str, Any]], sensor: Sensor) -> list[Acquisition]:
    chosen = [e for e in entries if e["sensor"] == sensor.name and e["status"] == "ok"]
    return sorted((_acquisition(e, sensor) for e in chosen), key=lambda a: (a.date, a.path.name))


# ---------------------------------------------------------------------------- the model
class _Models:
    """The Degradation model and the CLIP embedder, each loaded once and only when a stage needs it."""

    def __init__(self, config: BuildConfig, echo: Echo) -> None:
        self.config, self.echo = config, echo
        self.device = resolve_device(config.device)
        self._degradation = None
        self._embedder: ClipEmbedder | None = None

    @property
    def degradation_id(self) -> str:
        return degradation_source(self.config)

    def convert_if_missing(self) -> None:
        """Convert the published weights into ``models`` when the build uses that folder and it lacks
        them (a :class:`BuildError` when ``convert_models`` is off)."""
        models = Path(expand_env(self.config.models))
        if self.config.degradation_model or reference_is_converted(models):
            return
        if not self.config.convert_models:
            raise BuildError(f"{models}: no converted models; run `sen2naip convert-reference`")
        self.echo(f"converting the published SEN2NAIP weights into {models}/ ...")
        convert_reference(models)

    @property
    def degradation(self):
        if self._degradation is None:
            from sen2naip_hub.models import Degradation

            self.convert_if_missing()
            model = Degradation.from_pretrained(self.degradation_id).to(self.device).eval()
            model.harmonization.precision = self.config.precision
            if self.config.compile:
                model.compile()
            self._degradation = model
        return self._degradation

    def degrade_noiseless(self, hr: torch.Tensor) -> torch.Tensor:
        """The cross-sensor ``degrade`` callable: the model's blur + ×4 downsampling (δ) only.

        No harmonization: the cross-sensor pipeline matches the HR's histograms to the real LR itself
        (and the simulation's gains stand in for it), so a learned λ on top would apply it twice.
        No noise: co-registration and QA compare against a clean prediction. The input is clamped to
        [0, 1] first: the simulation's sub-pixel shift (spline interpolation) overshoots by a few
        percent at sharp edges, which the model would refuse. NaN stays NaN.
        """
        with torch.inference_mode():
            hr = hr.clamp(0.0, 1.0).to(self.device)
            return self.degradation(hr, harmonization=CROSS_SENSOR_HARMONIZATION, noise=False).lr.cpu()

    @property
    def embedder(self) -> ClipEmbedder:
        if self._embedder is None:
            synthetic = self.config.synthetic
            self._embedder = ClipEmbedder(
                synthetic.clip_model,
                pretrained=synthetic.clip_pretrained,
                device=self.device,
                batch_size=synthetic.embed_batch_size,
                seed=self.config.seed,
            )
        return self._embedder


# ---------------------------------------------------------------------------- stage 2: cross_sensor
def _cross_sensor_candidates(
    config: BuildConfig, sources: list[dict], store: Checkpoints, models: _Models
) -> tuple[list[tuple[Acquisition, Acquisition]], str]:
    """The (NAIP, Sentinel-2) pairs to assess and the ``source`` value of their rows."""
    naip = _usable(sources, NAIP)
    simulate = config.cross_sensor.simulate
    if simulate is None:
        return pair_acquisitions(naip, _usable(sources, SENTINEL2), config.sources.max_days), "real"
    if len(naip) < len(simulate.kinds):
        raise BuildError(
            f"cross_sensor.simulate needs one usable NAIP file per kind: {len(simulate.kinds)} kinds, "
            f"{len(naip)} usable NAIP files"
        )
    s2_dir = store.path("cross_sensor/simulated_s2")
    done = "cross_sensor/simulated.json"
    if not store.has(done):
        made = simulate_candidates(
            [a.path for a in naip], s2_dir, models.degrade_noiseless, kinds=simulate.kinds, seed=config.seed
        )
        store.save_json(done, [{"kind": c.kind, "s2_path": c.s2_path.name} for c in made])
    entries = [
        {"sensor": SENTINEL2.name, "status": "ok", "path": str(s2_dir / c["s2_path"]), "date": None}
        for c in store.load_json(done)
    ]
    for entry in entries:
        entry["date"] = parse_date(entry["path"]).isoformat()
    return pair_acquisitions(naip, _usable(entries, SENTINEL2), config.sources.max_days), "simulated"


def _cross_sensor_chunk(
    pair: tuple[Acquisition, Acquisition], config: BuildConfig, models: _Models, source: str
) -> tuple[list[PairRecord], list[dict[str, Any]]]:
    stage = config.cross_sensor
    cs_config = CrossSensorConfig(
        roi_size=stage.roi_size, stride=stage.stride, hr_resolution_m=stage.hr_resolution_m
    )
    result = build_cross_sensor_pairs([pair], models.degrade_noiseless, source=source, config=cs_config)
    records, entries = [], []
    for record in result.records:
        roi = _roi_id(record.crs, record.hr_transform, record.hr.shape[1], record.hr.shape[2])
        entries.append(
            {"id": record.roi_id, "status": "kept", "roi_id": roi, "qa1": record.qa1, "qa2": record.qa2}
        )
        records.append(dataclasses.replace(record, roi_id=roi))
    entries += [{"id": r.candidate_id, "status": "rejected", "reason": r.reason} for r in result.rejections]
    return records, [{"stage": "cross_sensor", "config": "cross_sensor"} | e for e in entries]


def stage_cross_sensor(
    config: BuildConfig, sources: list[dict], store: Checkpoints, models: _Models, progress: bool
) -> list[str]:
    """Stage 2; returns the names of its chunk checkpoints (one per acquisition pair), in order."""
    if not config.cross_sensor.enabled:
        return []
    pairs, source = _cross_sensor_candidates(config, sources, store, models)
    names = [f"cross_sensor/pair-{i:05d}.npz" for i in range(len(pairs))]
    todo = [(n, p) for n, p in zip(names, pairs, strict=True) if not store.has(n)]
    for name, pair in tqdm(todo, desc="cross_sensor", unit="pair", disable=not progress):
        records, entries = _cross_sensor_chunk(pair, config, models, source)
        store.save_records(name, records, entries)
    return names


# ---------------------------------------------------------------------------- stage 3: synthetic
def blank_reason(data: np.ndarray) -> str | None:
    """Why a tile is blank (:func:`~dataset_builder.selection.is_blank`'s rule), or None if it is not."""
    valid = np.isfinite(data).all(axis=0)
    nodata = 1.0 - float(valid.mean())
    if nodata > MAX_NODATA_FRACTION or not valid.any():
        return f"blank: nodata {nodata:.1%} > {MAX_NODATA_FRACTION:.0%}"
    spread = float(data[:, valid].std(axis=1).max())
    if spread < MIN_BAND_STD:
        return f"blank: near-constant (largest band std {spread:.4f} < {MIN_BAND_STD:.4f})"
    return None


def _grid(path: Path, size: int) -> Iterator[tuple[int, int]]:
    """Top-left ``(row, col)`` of every full world-grid tile of an image (as ``iter_tiles`` cuts them)."""
    info = read_info(path)
    row0, col0 = _world_grid_offset(info.transform, size)
    for row in range(row0, info.height - size + 1, size):
        for col in range(col0, info.width - size + 1, size):
            yield row, col


def _read_tile(path: Path, row: int, col: int, size: int) -> Tile | str:
    """The tile, or the reason it is left out (blank, all nodata)."""
    try:
        raster = read_raster(path, NAIP, window=Window(col, row, size, size))
    except InvalidImageError as err:
        return f"blank: {_first_line(err).split(': ')[-1]}"
    reason = blank_reason(raster.data)
    return reason or Tile(path.stem, row, col, raster.data, raster.crs, raster.transform)


def split_tiles(path: Path, size: int) -> tuple[list[Tile], list[dict[str, str]]]:
    """The grid tiles of one image: the kept ones, and manifest entries (with the reason) of the blank
    ones. Both backends tile through this."""
    tiles, blanks = [], []
    for row, col in _grid(path, size):
        tile = _read_tile(path, row, col, size)
        if isinstance(tile, Tile):
            tiles.append(tile)
        else:
            tile_id = Tile(path.stem, row, col, np.empty(0), None, Affine.identity()).tile_id
            blanks.append({"id": tile_id, "status": "rejected", "reason": tile})
    return tiles, blanks


def _embed_image(path: Path, size: int, models: _Models) -> tuple[dict, np.ndarray]:
    """Tiles of one image: manifest entries of the blank ones, ids and embeddings of the others."""
    tiles, blanks = split_tiles(path, size)
    batch = models.config.synthetic.embed_batch_size
    chunks = [
        models.embedder.embed([t.data[:3] for t in tiles[i : i + batch]]) for i in range(0, len(tiles), batch)
    ]
    embeddings = np.concatenate(chunks) if chunks else np.zeros((0, 0), dtype=np.float32)
    meta = {"path": str(path), "tiles": [[t.tile_id, t.row, t.col] for t in tiles], "blank": blanks}
    return meta, embeddings.astype(np.float32)


def _select(config: BuildConfig, store: Checkpoints, embed_names: list[str], echo: Echo) -> dict[str, Any]:
    name = "synthetic/selection.json"
    if store.has(name):
        return store.load_json(name)
    ids, vectors, where = [], [], {}
    for embed_name in embed_names:
        meta, arrays = store.load_arrays(embed_name)
        for (tile_id, row, col), vector in zip(meta["tiles"], arrays["embeddings"], strict=True):
            ids.append(tile_id)
            vectors.append(vector)
            where[tile_id] = [meta["path"], row, col]
    if not ids:
        raise BuildError("synthetic: every NAIP tile is blank; nothing to select")
    size, clusters = min(config.synthetic.size, len(ids)), min(config.synthetic.n_clusters, len(ids))
    if size < config.synthetic.size:
        echo(f"synthetic: only {len(ids)} non-blank tiles; selecting all of them")
    selection = select_diverse(ids, np.stack(vectors), size, clusters, seed=config.seed)
    chosen = [
        {"tile_id": t, "path": where[t][0], "row": where[t][1], "col": where[t][2]}
        for t in selection.tile_ids
    ]
    value = {"selected": chosen, "labels": selection.labels}
    store.save_json(name, value)
    return value


def _degrade_batch(
    chosen: list[dict[str, Any]], dates: dict[str, str], config: BuildConfig, models: _Models
) -> list[PairRecord]:
    """Degrade one batch of selected tiles; the noise of each tile comes from its own seeded generator."""
    import datetime as dt

    size, synthetic = config.synthetic.tile_size, config.synthetic
    rasters = [read_raster(c["path"], NAIP, window=Window(c["col"], c["row"], size, size)) for c in chosen]
    hr = torch.from_numpy(np.stack([r.data for r in rasters])).to(models.device)
    model = models.degradation
    with torch.inference_mode():
        lr = model(hr, noise=False, harmonization=synthetic.harmonization).lr
        if synthetic.noise:
            lr = torch.cat(
                [
                    _noisy(model, lr[i : i + 1], c["tile_id"], config.seed, models.device)
                    for i, c in enumerate(chosen)
                ]
            )
    lr = lr.float().cpu().numpy()
    records = []
    for index, (c, raster) in enumerate(zip(chosen, rasters, strict=True)):
        crs = raster.crs.to_wkt()
        hr_t = tuple(raster.transform.to_gdal())
        records.append(
            PairRecord(
                roi_id=_roi_id(crs, hr_t, size, size),
                hr=reflectance_to_s2(raster.data),
                lr=reflectance_to_s2(lr[index]),
                crs=crs,
                hr_transform=hr_t,
                lr_transform=tuple(lr_transform(raster.transform, model.scale).to_gdal()),
                hr_date=dt.date.fromisoformat(dates[c["path"]]),
                lr_date=None,
                qa1=math.nan,
                qa2=math.nan,
                shift_x=0.0,
                shift_y=0.0,
                degradation_model=models.degradation_id,
                source="real",
            )
        )
    return records


def _noisy(model, lr: torch.Tensor, tile_id: str, seed: int, device: str) -> torch.Tensor:
    generator = torch.Generator(device=device).manual_seed(tile_seed(seed, tile_id))
    return model.noise(lr, generator)


def stage_synthetic(
    config: BuildConfig, sources: list[dict], store: Checkpoints, models: _Models, progress: bool, echo: Echo
) -> tuple[list[str], list[str]]:
    """Stage 3; returns the names of its embedding and degradation checkpoints, in order."""
    if not config.synthetic.enabled:
        return [], []
    naip = [e for e in sources if e["sensor"] == NAIP.name and e["status"] == "ok"]
    naip.sort(key=lambda e: Path(e["path"]).name)
    embed_names = [f"synthetic/embed-{i:05d}.npz" for i in range(len(naip))]
    todo = [(n, e) for n, e in zip(embed_names, naip, strict=True) if not store.has(n)]
    for name, entry in tqdm(todo, desc="synthetic: tile + CLIP", unit="image", disable=not progress):
        meta, embeddings = _embed_image(Path(entry["path"]), config.synthetic.tile_size, models)
        store.save_arrays(name, meta, embeddings=embeddings)
    selected = _select(config, store, embed_names, echo)["selected"]
    dates = {e["path"]: e["date"] for e in naip}
    batches = [selected[i : i + config.batch_size] for i in range(0, len(selected), config.batch_size)]
    degrade_names = [f"synthetic/degrade-{i:05d}.npz" for i in range(len(batches))]
    todo = [(n, b) for n, b in zip(degrade_names, batches, strict=True) if not store.has(n)]
    for name, batch in tqdm(todo, desc="synthetic: degrade", unit="batch", disable=not progress):
        records = _degrade_batch(batch, dates, config, models)
        ids = [{"id": c["tile_id"], "roi_id": r.roi_id} for c, r in zip(batch, records, strict=True)]
        store.save_records(name, records, ids)
    return embed_names, degrade_names


# ---------------------------------------------------------------------------- stage 4: write
def _iter_records(store: Checkpoints, names: list[str]) -> Iterator[PairRecord]:
    for name in names:
        records, _ = store.load_records(name)
        yield from records


def _synthetic_entries(
    store: Checkpoints, embed_names: list[str], degrade_names: list[str], splitter: RoiSplitter
) -> list[dict[str, Any]]:
    if not embed_names:
        return []
    labels = store.load_json("synthetic/selection.json")["labels"]
    kept = {e["id"]: e["roi_id"] for name in degrade_names for e in store.load_meta(name)["extra"]}
    entries = []
    for name in embed_names:
        meta, _ = store.load_arrays(name)
        entries += meta["blank"]
        for tile_id, _row, _col in meta["tiles"]:
            if tile_id in kept:
                roi = kept[tile_id]
                entries.append(
                    {
                        "id": tile_id,
                        "status": "kept",
                        "roi_id": roi,
                        "split": splitter.split_of(roi),
                        "cluster": labels[tile_id],
                    }
                )
            else:
                reason = f"not selected: cluster {labels[tile_id]}'s share of the diversity quota was filled"
                entries.append({"id": tile_id, "status": "rejected", "reason": reason})
    return [{"stage": "synthetic", "config": "synthetic"} | e for e in entries]


def _manifest(
    store: Checkpoints,
    sources: list[dict],
    cross: list[str],
    embed: list[str],
    degrade: list[str],
    splitter: RoiSplitter,
) -> list[dict[str, Any]]:
    entries = list(sources)
    for name in cross:
        for entry in store.load_meta(name)["extra"]:
            if entry["status"] == "kept":
                entry["split"] = splitter.split_of(entry["roi_id"])
            entries.append(entry)
    return entries + _synthetic_entries(store, embed, degrade, splitter)


def _write_staging(
    config: BuildConfig,
    staging: Path,
    chunks: dict[str, list[str]],
    manifest: list[dict],
    store: Checkpoints,
    progress: bool,
) -> None:
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    splitter = RoiSplitter(config.splits.fractions, salt=config.splits.salt)
    limits = ShardLimits(max_rows=config.write.max_shard_rows, max_bytes=config.write.max_shard_bytes)
    for name in tqdm(
        [c for c in CONFIG_NAMES if chunks.get(c)], desc="write", unit="config", disable=not progress
    ):
        write_config(_iter_records(store, chunks[name]), staging, name, splitter=splitter, limits=limits)
    if not scan_shards(staging):
        raise BuildError("no row was kept in any config: nothing to write (see the rejections above)")
    write_dataset_card(staging, repo_id=config.write.repo_id, splitter=splitter)
    lines = "".join(json.dumps(e, sort_keys=True) + "\n" for e in manifest)
    atomic_write_text(staging / MANIFEST_NAME, lines)
    commit_point("write/staged")


def _same_tree(a: Path, b: Path) -> bool:
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


def _recover(out: Path, work: Path) -> None:
    """Undo a swap cut short by a kill: put the previous dataset back at ``out``."""
    previous = work / "previous"
    if previous.is_dir() and not out.exists():
        os.replace(previous, out)
    shutil.rmtree(previous, ignore_errors=True)


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST_NAME).is_file())):
        raise BuildError(
            f"{out}: exists and is not a dataset written by `sen2naip build` (no {MANIFEST_NAME}); "
            "choose another --out or remove it"
        )


def _tree_stats(folder: Path) -> dict[str, list[int]]:
    return {str(p.relative_to(folder)): _stat(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def _result(out: Path, changed: bool) -> BuildResult:
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


# ---------------------------------------------------------------------------- the build
def build_dataset(
    config: BuildConfig,
    *,
    progress: bool = True,
    echo: Echo = print,
    backend: str = "local",
    address: str | None = None,
) -> BuildResult:
    """Run (or resume, or confirm) the build described by ``config``; see the module docstring.

    ``backend="ray"`` runs the synthetic stage on Ray Data (:mod:`dataset_builder.ray_backend`, the
    optional ``ray`` extra) on the cluster at ``address`` (None: the one already initialised, else a
    new local one); everything else, and the result, is the local backend's.

    Raises:
        BuildError: no usable NAIP input, ``out`` is a folder this build did not write, no row kept,
            CUDA asked for but missing, an unknown ``backend``, Ray asked for but not installed.
        ConfigError: an invalid setting found late (e.g. a path variable not set).
    """
    if backend not in BACKENDS:
        raise BuildError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if backend == "ray":
        from dataset_builder.ray_backend import require_ray

        require_ray()
    out, work = config.out_dir, config.work_path
    _check_out(out)
    _recover(out, work)
    models = _Models(config, echo)
    if config.cross_sensor.enabled or config.synthetic.enabled:
        models.convert_if_missing()  # before the fingerprint, which lists the model's files
    store = Checkpoints.open(work, fingerprint(config), echo)
    if store.has("done.json") and out.is_dir() and store.load_json("done.json")["files"] == _tree_stats(out):
        echo(f"nothing to do: {out} is up to date with this config and its inputs (checkpoints: {work})")
        return _result(out, changed=False)
    sources = stage_sources(config, store, progress)
    cross = stage_cross_sensor(config, sources, store, models, progress)
    if backend == "ray":
        from dataset_builder.ray_backend import RayOptions, stage_synthetic_ray

        options = RayOptions(address=address)
        embed, degrade = stage_synthetic_ray(config, sources, store, models, progress, echo, options)
    else:
        embed, degrade = stage_synthetic(config, sources, store, models, progress, echo)
    splitter = RoiSplitter(config.splits.fractions, salt=config.splits.salt)
    manifest = _manifest(store, sources, cross, embed, degrade, splitter)
    staging = work / "staging"
    _write_staging(config, staging, {"cross_sensor": cross, "synthetic": degrade}, manifest, store, progress)
    changed = not _same_tree(staging, out)
    if changed:
        _swap(staging, out, work / "previous")
    else:
        shutil.rmtree(staging)
        echo(f"{out} already holds exactly this dataset: left untouched")
    store.save_json("done.json", {"files": _tree_stats(out)})
    return _result(out, changed=changed)
