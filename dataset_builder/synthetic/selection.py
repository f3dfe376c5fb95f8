"""Choosing a diverse subset of NAIP tiles for the synthetic split: k-means++ over CLIP embeddings.

SEN2NAIP's synthetic split draws HR tiles that cover the variety of the NAIP archive rather than its
bulk (mostly farmland). The tiles (:mod:`dataset_builder.core.tiling`, blanks dropped) are embedded
(:mod:`dataset_builder.synthetic.clip`), then :func:`select_diverse` runs k-means++
(:func:`dataset_builder.synthetic.kmeans.torch_kmeans`, scikit-learn's algorithm in torch, on the CPU or
a GPU) on the embeddings and picks tiles **round-robin over clusters, nearest to the centroid first**:

* clusters are ordered by size (largest first, ties by their smallest tile id);
* inside a cluster, tiles are ordered by distance to the centroid (ties by tile id);
* round ``r`` takes the ``r``-th tile of every cluster that still has one, in cluster order, until
  ``size`` tiles are chosen.

This is an equal quota of ``size // k`` per cluster, the remainder going one each to the largest
clusters, and the quota a small cluster cannot fill passing to the others. Every cluster is
represented whenever ``size >= n_clusters``. Ties never depend on input order, so the same embeddings
and seed always give the same tile ids in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from dataset_builder.core.facts import KMEANS_N_INIT
from dataset_builder.synthetic.kmeans import torch_kmeans
from sen2naip_hub.errors import Sen2NaipError

__all__ = ["Selection", "SelectionError", "select_diverse"]


class SelectionError(Sen2NaipError, ValueError):
    """Selection sizes or inputs are inconsistent (e.g. more clusters than tiles)."""


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
    n_init: int = KMEANS_N_INIT,
    device: str | torch.device = "cpu",
) -> Selection:
    """k-means++ on L2-normalized ``embeddings``, then round-robin over clusters, nearest to centroid first.

    See the module docstring for the exact rule; k-means runs in float64 on ``device``. Raises
    :class:`SelectionError` when ``size`` or ``n_clusters`` exceed the number of tiles, or the inputs
    disagree in length.
    """
    _check_selection_args(tile_ids, embeddings, size, n_clusters)
    points = torch.from_numpy(_l2_normalize(np.asarray(embeddings, dtype=np.float64))).to(device)
    kmeans = torch_kmeans(points, n_clusters, seed=seed, n_init=n_init)
    raw_labels = kmeans.labels.cpu().numpy()
    distances = torch.linalg.vector_norm(points - kmeans.centers[kmeans.labels], dim=1).cpu().numpy()
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
