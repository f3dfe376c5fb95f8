"""k-means++ in torch (dataset_builder.synthetic.kmeans): scikit-learn's algorithm, one seed, CPU here
(the same code on a GPU: tests/test_gpu_synthetic.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dataset_builder.core.facts import KMEANS_MAX_ITER, KMEANS_TOL
from dataset_builder.synthetic.kmeans import kmeans_plusplus, lloyd, squared_distances, torch_kmeans
from dataset_builder.synthetic.selection import select_diverse

#: Seeded blobs: K well separated centres in D dimensions, N points around them, on the unit sphere as
#: CLIP embeddings are.
K, D, N = 6, 16, 600


@pytest.fixture(scope="module")
def blobs() -> tuple[torch.Tensor, np.ndarray]:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(K, D))
    truth = rng.integers(K, size=N)
    points = centres[truth] + rng.normal(scale=0.15, size=(N, D))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return torch.from_numpy(points), truth


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_finds_the_blobs_and_is_seeded(blobs) -> None:
    points, truth = blobs
    result = torch_kmeans(points, K, seed=0)
    assert result.centers.dtype == torch.float64 and result.labels.shape == (N,)
    assert _same_partition(result.labels.numpy(), truth)
    again = torch_kmeans(points, K, seed=0)
    assert torch.equal(again.labels, result.labels) and torch.equal(again.centers, result.centers)
    inertia = float(squared_distances(points, result.centers).min(1).values.sum())
    assert result.inertia == pytest.approx(inertia)


def test_inertia_is_as_good_as_scikit_learns(blobs) -> None:
    cluster = pytest.importorskip("sklearn.cluster")
    points, _ = blobs
    hard = points[:, :4].contiguous()  # overlapping clusters in 4 dimensions: local optima exist
    for k in (3, 8, 20):
        ours = torch_kmeans(hard, k, seed=1).inertia
        theirs = cluster.KMeans(k, init="k-means++", n_init=10, random_state=1).fit(hard.numpy()).inertia_
        assert ours <= theirs * 1.02, (k, ours, theirs)


def test_restarts_keep_the_lowest_inertia(blobs) -> None:
    points, _ = blobs
    hard = points[:, :3].contiguous()
    one = torch_kmeans(hard, 12, seed=3, n_init=1)
    many = torch_kmeans(hard, 12, seed=3, n_init=8)  # its first restart is `one`
    assert many.inertia <= one.inertia
    points64, singles = hard.double(), []
    threshold = KMEANS_TOL * float(points64.var(0, unbiased=False).mean())
    generator = torch.Generator().manual_seed(3)
    for _ in range(8):
        start = kmeans_plusplus(points64, 12, generator)
        singles.append(lloyd(points64, start, KMEANS_MAX_ITER, threshold).inertia)
    assert many.inertia == pytest.approx(min(singles), rel=1e-9)


def test_init_picks_distinct_data_points_spread_out(blobs) -> None:
    points, truth = blobs
    centres = kmeans_plusplus(points, K, torch.Generator().manual_seed(0))
    index = torch.cdist(centres, points).argmin(1)
    assert torch.equal(points[index], centres) and len(set(index.tolist())) == K
    assert len({int(truth[i]) for i in index}) >= K - 1  # k-means++ spreads the seeds over the blobs


def test_selection_uses_it_and_k_bounds_are_checked(blobs) -> None:
    points, _ = blobs
    ids = [f"t{i:04d}" for i in range(N)]
    selection = select_diverse(ids, points.numpy(), size=K * 3, n_clusters=K, seed=0)
    assert selection.clusters_selected() == set(range(K))
    with pytest.raises(ValueError, match="k must lie"):
        torch_kmeans(points[:3], 4, seed=0)
