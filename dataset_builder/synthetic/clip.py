"""CLIP embeddings of NAIP tiles for the diversity selection: an open_clip image encoder, weights loaded once.

Each tile's RGB is embedded with the model's own preprocessing, applied to the tile as the 8-bit RGB
image NAIP stores (reflectance × 255, the inverse of :func:`sen2naip_hub.sensors.naip_to_reflectance`).
Embeddings are L2-normalized. Without pretrained weights (offline machines, tests) the real
architecture is built with random weights drawn from ``seed``: the same code path, not a meaningful
embedding, and the dataset card says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from dataset_builder.core.facts import DEFAULT_CLIP_MODEL, DEFAULT_EMBED_BATCH_SIZE, SEN2NAIP_ROI_HR_PX
from dataset_builder.core.tiling import Tile, iter_tiles
from dataset_builder.synthetic.selection import Selection, SelectionError, select_diverse
from sen2naip_hub.sensors import reflectance_to_naip

__all__ = ["ClipEmbedder", "embed_tiles", "select_tiles"]


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
        batch_size: int = DEFAULT_EMBED_BATCH_SIZE,
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


def select_tiles(
    paths: Iterable[str | Path],
    size: int,
    n_clusters: int,
    tile_size: int = SEN2NAIP_ROI_HR_PX,
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
