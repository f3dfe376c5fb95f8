"""k-means++ in torch: one implementation for the CPU and the GPU, every random draw from one seed.

The algorithm is scikit-learn's ``KMeans(init="k-means++", algorithm="lloyd")`` (Arthur & Vassilvitskii
2007, "greedy" k-means++ with ``2 + ⌊ln k⌋`` local trials per centre, as scikit-learn does), without
sample weights:

* **init**: the first centre is a point drawn uniformly; each next centre is the best (lowest total
  potential) of ``2 + ⌊ln k⌋`` candidates drawn with probability ∝ squared distance to the nearest centre;
* **Lloyd**: assign every point to its nearest centre, move each centre to the mean of its points (an
  empty cluster keeps its centre), stop when no label changes or the total squared centre shift is at
  most ``tol`` × the mean per-feature variance, or after ``max_iter`` iterations;
* **restarts**: ``n_init`` runs; the lowest inertia (sum of squared distances) wins, the first on ties.

Distances are float64 and the random numbers are drawn on the CPU from a ``torch.Generator`` seeded with
``seed``, then moved to the device, so the CPU and a GPU draw the same candidates and, up to the last bits
of float64 sums, find the same clusters. Centres are updated by a one-hot matrix product (no atomic adds),
so a GPU run is deterministic. The clusters differ from scikit-learn's for the same seed (another random
number generator).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dataset_builder.core.facts import KMEANS_MAX_ITER, KMEANS_N_INIT, KMEANS_TOL

__all__ = ["KMeansResult", "kmeans_plusplus", "lloyd", "squared_distances", "torch_kmeans"]

#: Points per chunk of the one-hot centre update (bounds its memory: chunk × k float64).
UPDATE_CHUNK: int = 65_536


@dataclass(frozen=True)
class KMeansResult:
    """Centres ``(k, D)`` float64, labels ``(N,)`` int64, and the inertia of the best restart."""

    centers: torch.Tensor
    labels: torch.Tensor
    inertia: float


def squared_distances(points: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """``(N, k)`` squared Euclidean distances, ``‖x‖² − 2 x·c + ‖c‖²`` clamped at 0 (float64 in, out)."""
    cross = points @ centers.T
    return ((points * points).sum(1, keepdim=True) - 2.0 * cross + (centers * centers).sum(1)).clamp_(min=0.0)


def kmeans_plusplus(points: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """``k`` initial centres ``(k, D)`` by greedy k-means++ (see the module docstring)."""
    n = points.shape[0]
    trials = 2 + int(math.log(k))
    first = int(torch.randint(n, (1,), generator=generator))
    centers = [points[first]]
    closest = squared_distances(points, points[first : first + 1])[:, 0]
    potential = closest.sum()
    for _ in range(1, k):
        draws = (torch.rand(trials, generator=generator, dtype=torch.float64).to(points.device)) * potential
        candidates = torch.searchsorted(torch.cumsum(closest, 0), draws).clamp_(max=n - 1)
        options = torch.minimum(closest[None, :], squared_distances(points, points[candidates]).T)
        best = int(torch.argmin(options.sum(1)))
        closest, potential = options[best], options[best].sum()
        centers.append(points[candidates[best]])
    return torch.stack(centers)


def _update(points: torch.Tensor, labels: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """Each centre → the mean of its points (one-hot products, in chunks); empty clusters keep theirs."""
    k = centers.shape[0]
    sums = torch.zeros_like(centers)
    counts = torch.zeros(k, dtype=points.dtype, device=points.device)
    for start in range(0, points.shape[0], UPDATE_CHUNK):
        onehot = torch.nn.functional.one_hot(labels[start : start + UPDATE_CHUNK], k).to(points.dtype)
        sums += onehot.T @ points[start : start + UPDATE_CHUNK]
        counts += onehot.sum(0)
    filled = counts > 0
    return torch.where(filled[:, None], sums / counts.clamp(min=1.0)[:, None], centers)


def lloyd(points: torch.Tensor, centers: torch.Tensor, max_iter: int, tol: float) -> KMeansResult:
    """Lloyd iterations from ``centers`` until labels are stable, the shift ≤ ``tol`` or ``max_iter``."""
    labels = torch.argmin(squared_distances(points, centers), 1)
    for _ in range(max_iter):
        moved = _update(points, labels, centers)
        shift = float(((moved - centers) ** 2).sum())
        centers = moved
        new = torch.argmin(squared_distances(points, centers), 1)
        stable = bool(torch.equal(new, labels))
        labels = new
        if stable or shift <= tol:
            break
    inertia = float(squared_distances(points, centers).gather(1, labels[:, None]).sum())
    return KMeansResult(centers, labels, inertia)


def torch_kmeans(
    points: torch.Tensor,
    k: int,
    seed: int,
    n_init: int = KMEANS_N_INIT,
    max_iter: int = KMEANS_MAX_ITER,
    tol: float = KMEANS_TOL,
) -> KMeansResult:
    """k-means++ with ``n_init`` restarts on ``points`` ``(N, D)`` (float64, on any device); best inertia.

    ``tol`` is relative: the absolute threshold is ``tol`` × the mean per-feature variance (as
    scikit-learn). Raises ``ValueError`` unless ``1 ≤ k ≤ N``.
    """
    if not 1 <= k <= points.shape[0]:
        raise ValueError(f"k must lie in [1, {points.shape[0]}] (the number of points), found {k}")
    points = points.to(torch.float64)
    threshold = tol * float(points.var(0, unbiased=False).mean())
    generator = torch.Generator().manual_seed(seed)
    best: KMeansResult | None = None
    for _ in range(n_init):
        result = lloyd(points, kmeans_plusplus(points, k, generator), max_iter, threshold)
        if best is None or result.inertia < best.inertia:
            best = result
    return best
