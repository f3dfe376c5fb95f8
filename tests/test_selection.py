"""Tiling, blank filtering, CLIP embedding and k-means++ selection on real NAIP tiles (offline).

The CLIP encoder is open_clip's real ``ViT-S-32`` architecture with seeded random weights (no weights
can be downloaded here); the code path is the one real runs use with pretrained weights.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SAMPLE_DIR

from dataset_builder.core.tiling import is_blank, iter_tiles
from dataset_builder.synthetic.clip import ClipEmbedder, embed_tiles
from dataset_builder.synthetic.selection import Selection, SelectionError, select_diverse

NAIP_DIR = SAMPLE_DIR / "naip"
#: Small real open_clip architecture (22 M image-encoder parameters) so the test runs in seconds.
TEST_CLIP_MODEL = "ViT-S-32"
TILE_SIZE = 128  # 10 images of ~723 × 934 px → 350 tiles
BATCH_SIZE = 32
N_CLUSTERS = 8
SELECTION_SIZE = 40


@pytest.fixture(scope="module")
def naip_paths() -> list[Path]:
    paths = sorted(NAIP_DIR.glob("*.tif"))
    if not paths:
        pytest.skip(f"real NAIP sample not found in {NAIP_DIR}")
    return paths


@pytest.fixture(scope="module")
def tiles(naip_paths):
    torch.set_num_threads(2)
    return list(iter_tiles(naip_paths, TILE_SIZE))


@pytest.fixture(scope="module")
def embedded(tiles) -> tuple[list[str], np.ndarray]:
    embedder = ClipEmbedder(TEST_CLIP_MODEL, pretrained=None, batch_size=BATCH_SIZE, seed=0)
    return embed_tiles(tiles, embedder, progress=False)


def test_tiles_are_real_nonblank_and_uniquely_named(tiles) -> None:
    assert len(tiles) >= 300
    assert len({t.tile_id for t in tiles}) == len(tiles)
    for tile in tiles[:: len(tiles) // 10]:
        assert tile.data.shape == (4, TILE_SIZE, TILE_SIZE)
        assert tile.data.dtype == np.float32
        assert np.isfinite(tile.data).all()
        assert tile.date is not None and tile.date.startswith(("20",))


def test_blank_rule() -> None:
    rng = np.random.default_rng(0)
    textured = rng.uniform(0.1, 0.5, size=(4, 16, 16)).astype(np.float32)
    constant = np.full((4, 16, 16), 0.3, dtype=np.float32)
    with_nodata = textured.copy()
    with_nodata[:, :2, :2] = np.nan
    assert not is_blank(textured)
    assert is_blank(constant)
    assert is_blank(with_nodata)  # default: no nodata allowed
    assert not is_blank(with_nodata, max_nodata_fraction=0.05)
    assert is_blank(np.full((4, 4, 4), np.nan, dtype=np.float32), max_nodata_fraction=1.0)


def test_embeddings_are_normalized(embedded, tiles) -> None:
    ids, embeddings = embedded
    assert ids == [t.tile_id for t in tiles]
    assert embeddings.dtype == np.float32 and embeddings.shape[0] == len(tiles)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)


def test_every_cluster_represented(embedded) -> None:
    ids, embeddings = embedded
    selection = select_diverse(ids, embeddings, SELECTION_SIZE, N_CLUSTERS, seed=0)
    assert len(selection.tile_ids) == SELECTION_SIZE == len(set(selection.tile_ids))
    assert selection.n_clusters == N_CLUSTERS
    assert selection.clusters_selected() == set(range(N_CLUSTERS))
    one_each = select_diverse(ids, embeddings, N_CLUSTERS, N_CLUSTERS, seed=0)
    assert sorted(Counter(one_each.labels[t] for t in one_each.tile_ids).values()) == [1] * N_CLUSTERS


def test_same_seed_same_selection_end_to_end(embedded, tiles) -> None:
    ids, embeddings = embedded
    first = select_diverse(ids, embeddings, SELECTION_SIZE, N_CLUSTERS, seed=0)
    assert select_diverse(ids, embeddings, SELECTION_SIZE, N_CLUSTERS, seed=0) == first
    # A freshly built encoder with the same seed gives the same embeddings, hence the same selection.
    subset = tiles[: 2 * BATCH_SIZE]
    fresh = ClipEmbedder(TEST_CLIP_MODEL, pretrained=None, batch_size=BATCH_SIZE, seed=0)
    sub_ids, sub_embeddings = embed_tiles(subset, fresh, progress=False)
    np.testing.assert_array_equal(sub_embeddings, embeddings[: len(subset)])
    assert select_diverse(sub_ids, sub_embeddings, 10, 4, seed=0) == select_diverse(
        ids[: len(subset)], embeddings[: len(subset)], 10, 4, seed=0
    )


def test_different_seed_is_valid_and_may_differ(embedded) -> None:
    ids, embeddings = embedded
    base = select_diverse(ids, embeddings, SELECTION_SIZE, N_CLUSTERS, seed=0)
    others = [select_diverse(ids, embeddings, SELECTION_SIZE, N_CLUSTERS, seed=s) for s in (1, 2, 3)]
    for other in others:
        assert other.clusters_selected() == set(range(N_CLUSTERS))
    assert any(other.tile_ids != base.tile_ids for other in others)


def test_round_robin_nearest_first_rule() -> None:
    # Three separated clusters of 5, 3 and 1 points on the unit circle; 7 picks → 3 + 3 + 1.
    angles = np.array([0.0, 0.01, -0.02, 0.03, -0.04, 2.0, 2.01, 1.98, 4.0])
    embeddings = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    ids = [f"t{i}" for i in range(len(angles))]
    selection = select_diverse(ids, embeddings, size=7, n_clusters=3, seed=0)
    assert isinstance(selection, Selection)
    assert Counter(selection.labels[t] for t in selection.tile_ids) == {0: 3, 1: 3, 2: 1}
    # Round 0 takes the point nearest each centroid, largest cluster first.
    assert selection.tile_ids[:3] == ("t0", "t5", "t8")


def test_bad_sizes_raise_typed_errors(embedded) -> None:
    ids, embeddings = embedded
    with pytest.raises(SelectionError, match="n_clusters"):
        select_diverse(ids[:5], embeddings[:5], 3, 6)
    with pytest.raises(SelectionError, match="selection size"):
        select_diverse(ids[:5], embeddings[:5], 6, 2)
    with pytest.raises(SelectionError, match="shape"):
        select_diverse(ids[:5], embeddings[:4], 2, 2)
