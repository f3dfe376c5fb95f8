"""CLIP embeddings of NAIP tiles for the diversity selection: an open_clip image encoder, weights loaded once.

Each tile's RGB is embedded as the 8-bit RGB image NAIP stores (reflectance × 255 by
:func:`sen2naip_hub.sensors.reflectance_to_naip`, the inverse of ``naip_to_reflectance``), preprocessed
in torch on the encoder's device by :class:`ClipPreprocess`: the model's own preprocessing (shortest side
resized to the model's image size, bicubic with antialiasing, centre crop, normalised with the model's
mean and std, all read from open_clip's preprocess config), done on a whole batch at once instead of
open_clip's per-image PIL transform. It differs from the PIL transform only by PIL's rounding of the
resized image to 8 bits: the embeddings agree to a cosine of at least
:data:`~dataset_builder.core.facts.CLIP_TORCH_VS_PIL_MIN_COSINE` (tested on real tiles).

The encoder runs in bf16 autocast on CUDA and in fp32 elsewhere (``precision="auto"``); embeddings are
L2-normalised float32. Without pretrained weights (offline machines, tests) the real architecture is
built with random weights drawn from ``seed``: the same code path, not a meaningful embedding, and the
dataset card says so.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from dataset_builder.core.facts import (
    CLIP_PRECISIONS,
    DEFAULT_CLIP_MODEL,
    DEFAULT_EMBED_BATCH_SIZE,
    SEN2NAIP_ROI_HR_PX,
)
from dataset_builder.core.tiling import Tile, iter_tiles
from dataset_builder.synthetic.reads import rgb_counts
from dataset_builder.synthetic.selection import Selection, SelectionError, select_diverse

__all__ = ["ClipEmbedder", "ClipPreprocess", "embed_tiles", "rgb_counts", "select_tiles"]

#: 8-bit image values → [0, 1], as torchvision's ``ToTensor`` divides.
_UINT8_MAX: float = 255.0
#: open_clip interpolation names → ``torch.nn.functional.interpolate`` modes.
_MODES: dict[str, str] = {"bicubic": "bicubic", "bilinear": "bilinear"}


class ClipPreprocess:
    """open_clip's image preprocessing of a model, in torch, for a batch ``(N, 3, H, W)`` of uint8 RGB.

    ``config`` is ``open_clip.get_model_preprocess_cfg(model)``: ``size``, ``mean``, ``std``,
    ``interpolation`` and ``resize_mode``. Only the ``shortest`` resize mode (open_clip's default:
    shortest side to the image size, then centre crop) with bicubic or bilinear interpolation is
    supported; others raise :class:`SelectionError`.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        size = config["size"]
        self.size = int(size) if isinstance(size, int) else int(max(size))
        if config.get("resize_mode", "shortest") != "shortest" or config.get("interpolation") not in _MODES:
            raise SelectionError(
                f"CLIP preprocessing: resize_mode {config.get('resize_mode')!r} with interpolation "
                f"{config.get('interpolation')!r} is not supported; expected 'shortest' with {sorted(_MODES)}"
            )
        self.mode = _MODES[config["interpolation"]]
        self.mean = torch.tensor(config["mean"], dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(config["std"], dtype=torch.float32).view(1, 3, 1, 1)

    def resized_shape(self, height: int, width: int) -> tuple[int, int]:
        """Shortest side → :attr:`size`, the other scaled and truncated (as torchvision's ``Resize``)."""
        if height <= width:
            return self.size, int(self.size * width / height)
        return int(self.size * height / width), self.size

    def __call__(self, counts: torch.Tensor) -> torch.Tensor:
        """uint8 ``(N, 3, H, W)`` → normalised float32 ``(N, 3, size, size)`` on ``counts``' device."""
        if counts.dtype != torch.uint8 or counts.ndim != 4 or counts.shape[1] != 3:
            raise SelectionError(
                f"expected uint8 RGB (N, 3, H, W), found {counts.dtype} {tuple(counts.shape)}"
            )
        image = counts.float() / _UINT8_MAX
        height, width = self.resized_shape(*image.shape[-2:])
        if (height, width) != tuple(image.shape[-2:]):
            image = F.interpolate(
                image, size=(height, width), mode=self.mode, antialias=True, align_corners=False
            )
            image = image.clamp_(0.0, 1.0)  # PIL's 8-bit result cannot overshoot either
        top, left = round((height - self.size) / 2.0), round((width - self.size) / 2.0)
        image = image[..., top : top + self.size, left : left + self.size]
        return (image - self.mean.to(image.device)) / self.std.to(image.device)


class ClipEmbedder:
    """An open_clip image encoder with its preprocessing in torch; weights loaded once, here.

    Args:
        model_name: an open_clip architecture (``open_clip.list_models()``), e.g. ``"ViT-B-32"``.
        pretrained: an open_clip pretrained tag, a local checkpoint path, or None for random weights
            (drawn from ``seed``, so they are the same on every run).
        device: where the preprocessing and the encoder run (``"cpu"``, ``"cuda"``, ...).
        batch_size: images per forward pass.
        seed: seeds the random weights when ``pretrained`` is None.
        precision: ``"auto"`` (bf16 autocast on CUDA, fp32 elsewhere), ``"fp32"`` or ``"bf16"``.
    """

    def __init__(
        self,
        model_name: str = DEFAULT_CLIP_MODEL,
        pretrained: str | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = DEFAULT_EMBED_BATCH_SIZE,
        seed: int = 0,
        precision: str = "auto",
    ) -> None:
        import open_clip  # heavy import: only when an embedder is built

        if batch_size <= 0:
            raise SelectionError(f"batch_size must be positive, found {batch_size}")
        if precision not in CLIP_PRECISIONS:
            raise SelectionError(f"CLIP precision must be one of {CLIP_PRECISIONS}, found {precision!r}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model, _, pil_transform = open_clip.create_model_and_transforms(
                model_name, pretrained=pretrained, device=device
            )
        self.model = model.eval()
        #: open_clip's own per-image PIL transform: not used to embed, kept as the reference it matches.
        self.pil_transform = pil_transform
        self.preprocess = ClipPreprocess(open_clip.get_model_preprocess_cfg(model))
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.dtype = self._autocast_dtype(precision)

    def _autocast_dtype(self, precision: str) -> torch.dtype | None:
        """bf16 for ``bf16``, and for ``auto`` on CUDA; None (fp32, no autocast) otherwise."""
        if precision == "bf16" or (precision == "auto" and self.device.type == "cuda"):
            return torch.bfloat16
        return None

    @torch.inference_mode()
    def embed_counts(self, counts: torch.Tensor | np.ndarray) -> np.ndarray:
        """L2-normalised float32 embeddings ``(N, D)`` of uint8 RGB ``(N, 3, H, W)``, in batches."""
        counts = torch.as_tensor(counts)
        chunks = [
            self._embed_batch(counts[i : i + self.batch_size]) for i in range(0, len(counts), self.batch_size)
        ]
        return torch.cat(chunks).numpy() if chunks else np.zeros((0, 0), dtype=np.float32)

    def _embed_batch(self, counts: torch.Tensor) -> torch.Tensor:
        pixels = self.preprocess(counts.to(self.device, non_blocking=True))
        autocast = (
            torch.autocast(self.device.type, dtype=self.dtype) if self.dtype else contextlib.nullcontext()
        )
        with autocast:
            features = self.model.encode_image(pixels)
        return F.normalize(features.float(), dim=-1).cpu()

    def embed(self, rgb_images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """L2-normalised embeddings ``(N, D)`` float32 of ``(3, H, W)`` RGB images (reflectance or uint8)."""
        if not len(rgb_images):
            return np.zeros((0, 0), dtype=np.float32)
        return self.embed_counts(np.stack([rgb_counts(np.asarray(rgb)) for rgb in rgb_images]))


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
    built with ``pretrained=`` for real runs. The selection runs on the embedder's device.
    """
    embedder = embedder if embedder is not None else ClipEmbedder(seed=seed)
    tile_ids, embeddings = embed_tiles(iter_tiles(paths, tile_size), embedder)
    return select_diverse(tile_ids, embeddings, size, n_clusters, seed=seed, device=embedder.device)
