"""Choosing a diverse subset of NAIP tiles for the synthetic split: tile → drop blanks → CLIP → k-means++.

SEN2NAIP's synthetic split draws HR tiles that cover the variety of the NAIP archive rather than
its bulk (mostly farmland). The steps here:

1. :func:`iter_tiles` cuts each NAIP image into square HR tiles (``size`` px, default 484) and
   drops *blank* ones (:func:`is_blank`): too much nodata, or nearly constant in every band.
2. :class:`ClipEmbedder` embeds each tile's RGB with an open_clip image encoder, using the
   model's own preprocessing transform on the tile as the 8-bit RGB image NAIP stores
   (reflectance × 255, the inverse of :func:`sen2naip_hub.sensors.naip_to_reflectance`).
   Embeddings are L2-normalized.
3. :func:`select_diverse` runs k-means++ (scikit-learn ``KMeans(init="k-means++")``) on the
   embeddings and picks tiles **round-robin over clusters, nearest to the centroid first**:

   * clusters are ordered by size (largest first, ties by their smallest tile id);
   * inside a cluster, tiles are ordered by distance to the centroid (ties by tile id);
   * round ``r`` takes the ``r``-th tile of every cluster that still has one, in cluster order,
     until ``size`` tiles are chosen.

   This is an equal quota of ``size // k`` per cluster, the remainder going one each to the
   largest clusters, and the quota a small cluster cannot fill passing to the others. Every
   cluster is represented whenever ``size >= n_clusters``. Ties never depend on input order, so the
   same embeddings and seed always give the same tile ids in the same order.

Every random step takes ``seed``: the k-means initialisation and, when no pretrained weights are
given (tests, offline machines), the random initialisation of the CLIP weights.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from affine import Affine
from PIL import Image
from rasterio.crs import CRS
from rasterio.windows import Window
from sklearn.cluster import KMeans
from tqdm.auto import tqdm

from sen2naip_hub.errors import InvalidImageError, Sen2NaipError
from sen2naip_hub.io import read_info, read_raster
from sen2naip_hub.sensors import NAIP, reflectance_to_naip

__all__ = [
    "DEFAULT_CLIP_MODEL",
    "DEFAULT_TILE_SIZE",
    "MAX_NODATA_FRACTION",
    "MIN_BAND_STD",
    "ClipEmbedder",
    "Selection",
    "SelectionError",
    "Tile",
    "embed_tiles",
    "is_blank",
    "iter_tiles",
    "select_diverse",
    "select_tiles",
]

log = logging.getLogger(__name__)

#: HR tile side in pixels (the task's SEN2NAIP HR tile; 121 LR pixels at ×4).
DEFAULT_TILE_SIZE: int = 484
#: Largest share of nodata pixels a kept tile may have (SEN2NAIP drops tiles with nodata: 0).
MAX_NODATA_FRACTION: float = 0.0
#: A tile whose every band has a standard deviation below one NAIP count (1/255 reflectance) is blank.
MIN_BAND_STD: float = 1.0 / NAIP.dn_scale
#: open_clip architecture used by default (CLIP ViT-B/32, as in open_clip's model configs).
DEFAULT_CLIP_MODEL: str = "ViT-B-32"
#: Images per forward pass of the image encoder.
DEFAULT_BATCH_SIZE: int = 32
#: k-means restarts (scikit-learn ``n_init``); the best inertia wins.
DEFAULT_N_INIT: int = 10
#: NAIP file names end in the acquisition date, e.g. ``m_4709963_se_14_1_20090818.tif``.
_NAIP_DATE = re.compile(r"_(\d{8})$")


class SelectionError(Sen2NaipError, ValueError):
    """Selection sizes or inputs are inconsistent (e.g. more clusters than tiles)."""


@dataclass(frozen=True)
class Tile:
    """One HR tile of one NAIP image: reflectance ``(4, size, size)`` and where it came from."""

    image_id: str
    row: int
    col: int
    data: np.ndarray = field(repr=False)
    crs: CRS | None
    transform: Affine

    @property
    def tile_id(self) -> str:
        """``<image_id>_r<row>_c<col>`` (pixel offsets in the source image, zero-padded)."""
        return f"{self.image_id}_r{self.row:06d}_c{self.col:06d}"

    @property
    def date(self) -> str | None:
        """``YYYYMMDD`` when the image id ends in a NAIP acquisition date, else None."""
        match = _NAIP_DATE.search(self.image_id)
        return match.group(1) if match else None


def is_blank(
    data: np.ndarray, max_nodata_fraction: float = MAX_NODATA_FRACTION, min_std: float = MIN_BAND_STD
) -> bool:
    """True if ``data`` (``(C, H, W)`` reflectance, NaN = nodata) has too much nodata or is near-constant.

    >>> is_blank(np.full((4, 8, 8), 0.3, dtype="float32"))
    True
    """
    valid = np.isfinite(data).all(axis=0)
    if 1.0 - valid.mean() > max_nodata_fraction or not valid.any():
        return True
    return bool(data[:, valid].std(axis=1).max() < min_std)


def iter_tiles(
    paths: Iterable[str | Path],
    size: int = DEFAULT_TILE_SIZE,
    max_nodata_fraction: float = MAX_NODATA_FRACTION,
    min_std: float = MIN_BAND_STD,
) -> Iterator[Tile]:
    """Non-overlapping ``size`` × ``size`` tiles of each NAIP image, blanks dropped, read window by window.

    Tiles follow a *world* grid (multiples of ``size`` × pixel size in the image's CRS, for north-up
    images), so acquisitions of one place on different dates, whose pixel grids may be shifted by a
    few metres, are cut into the same footprints (to the nearest pixel) and share their
    :func:`dataset_builder.splits.spatial_roi_id`. Partial tiles at the edges are skipped. Paths are
    visited in sorted order, tiles row by row, so the sequence is the same on every run.
    """
    if size <= 0:
        raise SelectionError(f"tile size must be positive, found {size}")
    kept = dropped = 0
    for path in sorted(Path(p) for p in paths):
        info = read_info(path)
        row0, col0 = _world_grid_offset(info.transform, size)
        for row in range(row0, info.height - size + 1, size):
            for col in range(col0, info.width - size + 1, size):
                tile = _read_tile(path, row, col, size)
                if tile is None or is_blank(tile.data, max_nodata_fraction, min_std):
                    dropped += 1
                    continue
                kept += 1
                yield tile
    log.info("tiling: kept %d tiles, dropped %d blank ones", kept, dropped)


def _world_grid_offset(transform: Affine, size: int) -> tuple[int, int]:
    """Pixel offset ``(row, col)`` of the first world-grid line inside a north-up image (else ``(0, 0)``)."""
    if transform.b != 0 or transform.d != 0 or transform.a <= 0 or transform.e >= 0:
        return 0, 0
    step_x, step_y = transform.a * size, -transform.e * size
    col = round((math.ceil(transform.c / step_x) * step_x - transform.c) / transform.a) % size
    row = round((transform.f - math.floor(transform.f / step_y) * step_y) / -transform.e) % size
    return row, col


def _read_tile(path: Path, row: int, col: int, size: int) -> Tile | None:
    window = Window(col, row, size, size)
    try:
        raster = read_raster(path, NAIP, window=window)
    except InvalidImageError:  # every pixel nodata
        return None
    return Tile(path.stem, row, col, raster.data, raster.crs, raster.transform)


class ClipEmbedder:
    """An open_clip image encoder with its own preprocessing; weights loaded once, here.

    Args:
        model_name: an open_clip architecture (``open_clip.list_models()``), e.g. ``"ViT-B-32"``.
        pretrained: an open_clip pretrained tag, a local checkpoint path, or None for random weights
            (drawn from ``seed``, so they are the same on every run).
        device: where the encoder runs (``"cpu"``, ``"cuda"``, ...).
        batch_size: images per forward pass.
        seed: seeds the random weights when ``pretrained`` is None.
    """

    def __init__(
        self,
        model_name: str = DEFAULT_CLIP_MODEL,
        pretrained: str | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = DEFAULT_BATCH_SIZE,
        seed: int = 0,
    ) -> None:
        import open_clip  # heavy import: only when an embedder is built

        if batch_size <= 0:
            raise SelectionError(f"batch_size must be positive, found {batch_size}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=pretrained, device=device
            )
        self.model = model.eval()
        self.preprocess = preprocess
        self.device = torch.device(device)
        self.batch_size = batch_size

    @staticmethod
    def to_pil(rgb: np.ndarray) -> Image.Image:
        """``(3, H, W)`` RGB reflectance → the 8-bit RGB image NAIP stores (NaN → 0)."""
        counts = reflectance_to_naip(np.nan_to_num(rgb, nan=0.0))
        return Image.fromarray(np.ascontiguousarray(counts.transpose(1, 2, 0)), mode="RGB")

    @torch.inference_mode()
    def embed(self, rgb_images: Sequence[np.ndarray]) -> np.ndarray:
        """L2-normalized embeddings ``(N, D)`` float32 of ``(3, H, W)`` RGB reflectance images."""
        batch = torch.stack([self.preprocess(self.to_pil(rgb)) for rgb in rgb_images]).to(self.device)
        features = self.model.encode_image(batch).float()
        features = torch.nn.functional.normalize(features, dim=-1)
        return features.cpu().numpy()


def embed_tiles(
    tiles: Iterable[Tile], embedder: ClipEmbedder, progress: bool = True
) -> tuple[list[str], np.ndarray]:
    """Embed tiles batch by batch (bounded memory); returns ``(tile_ids, embeddings (N, D))``."""
    ids: list[str] = []
    chunks: list[np.ndarray] = []
    batch: list[Tile] = []
    for tile in tqdm(tiles, desc="CLIP embedding", unit="tile", disable=not progress):
        batch.append(tile)
        if len(batch) == embedder.batch_size:
            chunks.append(embedder.embed([t.data[:3] for t in batch]))
            ids.extend(t.tile_id for t in batch)
            batch = []
    if batch:
        chunks.append(embedder.embed([t.data[:3] for t in batch]))
        ids.extend(t.tile_id for t in batch)
    if not ids:
        raise SelectionError("no tile to embed: every tile was blank or no image was given")
    return ids, np.concatenate(chunks)


@dataclass(frozen=True)
class Selection:
    """The chosen tile ids (in pick order) and the cluster of every tile (clusters ordered by size)."""

    tile_ids: tuple[str, ...]
    labels: dict[str, int]
    n_clusters: int

    def clusters_selected(self) -> set[int]:
        """Clusters with at least one selected tile."""
        return {self.labels[t] for t in self.tile_ids}


def select_diverse(
    tile_ids: Sequence[str],
    embeddings: np.ndarray,
    size: int,
    n_clusters: int,
    seed: int = 0,
    n_init: int = DEFAULT_N_INIT,
) -> Selection:
    """k-means++ on L2-normalized ``embeddings``, then round-robin over clusters, nearest to centroid first.

    See the module docstring for the exact rule. Raises :class:`SelectionError` when ``size`` or
    ``n_clusters`` exceed the number of tiles, or the inputs disagree in length.
    """
    _check_selection_args(tile_ids, embeddings, size, n_clusters)
    points = _l2_normalize(np.asarray(embeddings, dtype=np.float64))
    kmeans = KMeans(n_clusters=n_clusters, init="k-means++", n_init=n_init, random_state=seed)
    raw_labels = kmeans.fit_predict(points)
    distances = np.linalg.norm(points - kmeans.cluster_centers_[raw_labels], axis=1)
    members = _ordered_members(list(tile_ids), raw_labels, distances)
    chosen = _round_robin(members, size)
    labels = {tile_ids[i]: cluster for cluster, idx in enumerate(members) for i in idx}
    return Selection(tuple(tile_ids[i] for i in chosen), labels, len(members))


def _check_selection_args(
    tile_ids: Sequence[str], embeddings: np.ndarray, size: int, n_clusters: int
) -> None:
    n = len(tile_ids)
    if embeddings.ndim != 2 or embeddings.shape[0] != n:
        raise SelectionError(
            f"expected embeddings of shape ({n}, D) for {n} tile ids, found {embeddings.shape}"
        )
    if len(set(tile_ids)) != n:
        raise SelectionError("tile ids must be unique")
    if not 1 <= n_clusters <= n:
        raise SelectionError(f"n_clusters must lie in [1, {n}] (the number of tiles), found {n_clusters}")
    if not 1 <= size <= n:
        raise SelectionError(f"selection size must lie in [1, {n}] (the number of tiles), found {size}")


def _l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def _ordered_members(tile_ids: list[str], labels: np.ndarray, distances: np.ndarray) -> list[list[int]]:
    """Indices per non-empty cluster, nearest first; clusters largest first, ties by smallest tile id."""
    groups = [np.flatnonzero(labels == k).tolist() for k in np.unique(labels)]
    groups = [sorted(g, key=lambda i: (distances[i], tile_ids[i])) for g in groups]
    return sorted(groups, key=lambda g: (-len(g), min(tile_ids[i] for i in g)))


def _round_robin(members: list[list[int]], size: int) -> list[int]:
    chosen: list[int] = []
    for rank in range(max(len(g) for g in members)):
        for group in members:
            if rank < len(group):
                chosen.append(group[rank])
                if len(chosen) == size:
                    return chosen
    return chosen


def select_tiles(
    paths: Iterable[str | Path],
    size: int,
    n_clusters: int,
    tile_size: int = DEFAULT_TILE_SIZE,
    embedder: ClipEmbedder | None = None,
    seed: int = 0,
) -> Selection:
    """The whole step: tile the NAIP images, drop blanks, embed with CLIP, pick ``size`` diverse tiles.

    ``embedder`` defaults to a randomly initialised (``seed``) :data:`DEFAULT_CLIP_MODEL`; pass one
    built with ``pretrained=`` for real runs.
    """
    embedder = embedder if embedder is not None else ClipEmbedder(seed=seed)
    tile_ids, embeddings = embed_tiles(iter_tiles(paths, tile_size), embedder)
    return select_diverse(tile_ids, embeddings, size, n_clusters, seed=seed)
