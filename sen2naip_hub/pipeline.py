"""Degrade a whole NAIP image held in memory: batched, in overlapping tiles, without seams. (A file of
any size is streamed instead by :mod:`sen2naip_hub.streaming`, which ``sen2naip degrade`` uses and
which reuses this module's tile plan.)

- λ's U-Net runs on overlapping tiles whose centres are stitched; its output is only a histogram
  target, and the matching is computed over the whole image (``global``) or in blended windows
  (``local``), so tile edges never show.
- δ runs on tiles with a context margin of at least the PSF's reach, which makes it equal to blurring
  the whole image at once.
- e is drawn once for the whole LR image from the seeded generator.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from sen2naip_hub.io import Raster, lr_transform
from sen2naip_hub.models import Degradation
from sen2naip_hub.sensors import SENTINEL2

#: U-Net tile and context margin (HR px). The tile is a multiple of the U-Net's stride of 32.
UNET_TILE: int = 512
UNET_MARGIN: int = 64


@dataclass(frozen=True)
class Tile:
    """A window with context (``r0:r1, c0:c1``) and the core it is responsible for."""

    r0: int
    r1: int
    c0: int
    c1: int
    core_r0: int
    core_r1: int
    core_c0: int
    core_c1: int


def tiles(height: int, width: int, core: int, margin: int) -> list[Tile]:
    """Cores of ``core`` px tiling the image exactly, each with ``margin`` px of context (clipped)."""
    out = []
    for r in range(0, height, core):
        for c in range(0, width, core):
            rr, cc = min(r + core, height), min(c + core, width)
            out.append(
                Tile(
                    max(r - margin, 0),
                    min(rr + margin, height),
                    max(c - margin, 0),
                    min(cc + margin, width),
                    r,
                    rr,
                    c,
                    cc,
                )
            )
    return out


def batched_by_shape(items: list[Tile], batch_size: int) -> Iterable[list[Tile]]:
    """``items`` in batches of at most ``batch_size`` tiles of one shape (so each batch stacks)."""
    groups: dict[tuple[int, int], list[Tile]] = defaultdict(list)
    for t in items:
        groups[(t.r1 - t.r0, t.c1 - t.c0)].append(t)
    for group in groups.values():
        for i in range(0, len(group), batch_size):
            yield group[i : i + batch_size]


def run_tiled(
    image: torch.Tensor,
    fn: Callable[[torch.Tensor], torch.Tensor],
    core: int,
    margin: int,
    scale: int,
    batch_size: int,
    device: torch.device,
    desc: str,
    progress: bool,
    out_device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Apply ``fn`` (which divides sizes by ``scale``) to ``image`` ``(C, H, W)`` tile by tile; the
    result is assembled on ``out_device``."""
    c, h, w = image.shape
    out = torch.empty(c, h // scale, w // scale, dtype=image.dtype, device=out_device)
    plan = tiles(h, w, core, margin)
    batches = list(batched_by_shape(plan, batch_size))
    for batch in tqdm(batches, desc=desc, disable=not progress, unit="batch"):
        x = torch.stack([image[:, t.r0 : t.r1, t.c0 : t.c1] for t in batch]).to(device)
        with torch.inference_mode():
            y = fn(x).to(out_device)
        for t, yt in zip(batch, y, strict=True):
            a, b = (t.core_r0 - t.r0) // scale, (t.core_c0 - t.c0) // scale
            hh, ww = (t.core_r1 - t.core_r0) // scale, (t.core_c1 - t.core_c0) // scale
            out[
                :, t.core_r0 // scale : t.core_r0 // scale + hh, t.core_c0 // scale : t.core_c0 // scale + ww
            ] = yt[:, a : a + hh, b : b + ww]
    return out


def degrade_raster(
    model: Degradation,
    raster: Raster,
    *,
    harmonization: str | None = None,
    noise: bool = True,
    seed: int = 0,
    device: str | torch.device = "cpu",
    batch_size: int = 8,
    tile: int = 512,
    progress: bool = True,
) -> tuple[Raster, Raster]:
    """Degrade a NAIP :class:`Raster` into an S2-like one; also returns the harmonized HR.

    The LR grid has the same origin and CRS and ``scale``-times larger pixels; when the HR size is not
    a multiple of ``scale`` the last partial LR row/column is dropped. The U-Net, the histogram matching
    (over the whole image at once, so the image and its target are held on ``device``; for images larger
    than memory, stream the file with :func:`sen2naip_hub.streaming.degrade_file`) and the blur run
    on ``device``; the results come back as numpy arrays.
    """
    device = torch.device(device)
    model = model.to(device)
    scale = model.scale
    hr = torch.from_numpy(np.ascontiguousarray(raster.data))
    model.check_inputs(hr[None])
    valid = torch.isfinite(hr).all(dim=0)
    filled = torch.where(valid, hr, torch.zeros_like(hr))
    mode = model.harmonization.mode if harmonization is None else harmonization

    harmonized = filled
    if mode != "none":
        target = run_tiled(
            filled,
            model.harmonization.predict_target,
            UNET_TILE - 2 * UNET_MARGIN,
            UNET_MARGIN,
            1,
            batch_size,
            device,
            "harmonization U-Net",
            progress,
            out_device=device,
        )
        mask = None if bool(valid.all()) else valid[None].to(device)
        harmonized = model.harmonization.match(filled[None].to(device), target[None], mask, mode)[0]

    margin = -(-model.blur.reach // scale) * scale  # reach rounded up to whole LR pixels
    core = max(tile // scale * scale, scale)
    lr = run_tiled(
        harmonized, model.blur, core, margin, scale, batch_size, device, "blur + downsample", progress
    )
    harmonized = harmonized.cpu()
    lr = lr[:, : hr.shape[1] // scale, : hr.shape[2] // scale]
    if noise:
        generator = torch.Generator().manual_seed(seed)
        lr = model.noise(lr[None], generator)[0]
    if not bool(valid.all()):
        lr_valid = model.lr_valid(valid[None])[0][: lr.shape[1], : lr.shape[2]]
        lr = torch.where(lr_valid, lr, torch.nan)
        harmonized = torch.where(valid, harmonized, torch.nan)
    lr_raster = Raster(
        data=lr.numpy(),
        crs=raster.crs,
        transform=lr_transform(raster.transform, scale),
        band_names=SENTINEL2.all_bands,
    )
    return lr_raster, raster.with_data(harmonized.numpy())
