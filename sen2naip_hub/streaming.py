"""Degrade a GeoTIFF of any size file to file, window by window, in memory bounded by the window and
batch sizes (not by the image size). ``sen2naip degrade`` runs this for every file.

- Pass 1 (``global`` harmonization only): λ's U-Net on the overlapping tiles of
  :func:`sen2naip_hub.pipeline.run_tiled` (same plan and margins); each tile's core adds its source
  pixels and their target to per-band histograms (:mod:`sen2naip_hub.models.histogram_stream`).
- Pass 2: each window (``tile`` px, rounded up to whole noise blocks, with the PSF's margin as
  :func:`~sen2naip_hub.pipeline.degrade_raster`) is re-read, matched with the global lookup tables,
  blurred and downsampled, given noise and written into the output.
- ``none`` harmonization is pass 2 alone. ``local`` harmonization is not streamed: it is refused
  with one line (use :func:`~sen2naip_hub.pipeline.degrade_raster` on an image in memory).

Equal to :func:`~sen2naip_hub.pipeline.degrade_raster` up to float rounding without noise, exactly
where the histograms are exact (see :mod:`~sen2naip_hub.models.histogram_stream`). The noise is drawn
per block of :data:`NOISE_BLOCK` LR pixels from a generator seeded with ``(seed, block row, block
column)``, so it does not depend on the window size, but it is a different draw from
``degrade_raster``'s single draw for the whole image (same distribution). ``gaussian`` noise, whose
scale is the image's RMS reflectance, takes each block's RMS.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import torch
from tqdm.auto import tqdm

from sen2naip_hub.errors import AllNodataError, InvalidImageError
from sen2naip_hub.io import ALL_NODATA, lr_transform
from sen2naip_hub.models import Degradation
from sen2naip_hub.models.harmonization import PRECISIONS
from sen2naip_hub.models.histogram_stream import GlobalMapping, StreamedHistograms
from sen2naip_hub.pipeline import UNET_MARGIN, UNET_TILE, Tile, batched_by_shape, tiles
from sen2naip_hub.sensors import N_BANDS, NAIP, SENTINEL2
from sen2naip_hub.windowed import HrWindowReader, WindowWriter, streamed_cog

__all__ = [
    "GDAL_CACHE_MB",
    "NOISE_BLOCK",
    "StreamResult",
    "add_block_noise",
    "block_generator",
    "degrade_file",
]

#: LR pixels per side of a noise block: the unit the noise is drawn in (and windows are rounded to).
NOISE_BLOCK: int = 64
#: GDAL's block cache (MB) during a streamed run; GDAL's default (5 % of RAM) would grow with the image.
GDAL_CACHE_MB: int = 64
#: Harmonization modes that stream.
STREAMED_MODES: tuple[str, ...] = ("global", "none")


@dataclass(frozen=True)
class StreamResult:
    """What :func:`degrade_file` wrote: the LR size and band names, and whether pass 1 ran."""

    height: int
    width: int
    band_names: tuple[str, ...]
    two_passes: bool


def block_generator(seed: int, row: int, col: int) -> torch.Generator:
    """The generator of noise block ``(row, col)``: seeded from ``(seed, row, col)`` by numpy's
    ``SeedSequence``, so neighbouring blocks and seeds give unrelated streams."""
    state = np.random.SeedSequence([seed, row, col]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & ((1 << 63) - 1))


def degrade_file(
    model: Degradation,
    reader: HrWindowReader,
    output: str | Path,
    *,
    hr_out: str | Path | None = None,
    harmonization: str | None = None,
    noise: bool = True,
    seed: int = 0,
    device: str | torch.device = "cpu",
    batch_size: int = 8,
    tile: int = 512,
    progress: bool = True,
) -> StreamResult:
    """Degrade the image ``reader`` reads into an S2-like COG at ``output`` (and the harmonized HR at
    ``hr_out``), window by window; LR grid and nodata as :func:`~sen2naip_hub.pipeline.degrade_raster`.

    Raises:
        InvalidImageError: ``local`` harmonization, an image smaller than one LR pixel, bad pixel
            values in a window (as :func:`~sen2naip_hub.io.read_raster`).
        AllNodataError: every pixel is nodata.
    """
    device = torch.device(device)
    model = model.to(device)
    mode = model.harmonization.mode if harmonization is None else harmonization
    if mode not in STREAMED_MODES:
        raise InvalidImageError(
            f"--harmonization {mode} is not streamed (it needs the whole image's target at once); "
            f"use one of {', '.join(STREAMED_MODES)}"
        )
    if min(reader.height, reader.width) < model.scale:
        raise InvalidImageError(
            f"{reader.path}: image of {reader.height}×{reader.width} px is smaller than one LR pixel "
            f"({model.scale} px)"
        )
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        if not reader.has_data():
            raise AllNodataError(f"{reader.path}: {ALL_NODATA}")
        mapping = _collect(model, reader, device, batch_size, progress) if mode == "global" else None
        return _write(model, reader, mapping, output, hr_out, noise, seed, device, batch_size, tile, progress)


def _read_batch(reader: HrWindowReader, batch: list[Tile]) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's windows, nodata filled with 0, and their ``(B, H, W)`` validity."""
    x = torch.from_numpy(np.stack([reader.read(t.r0, t.r1, t.c0, t.c1) for t in batch]))
    valid = torch.isfinite(x).all(dim=1)
    return torch.where(valid[:, None], x, torch.zeros_like(x)), valid


def _core(t: Tile, scale: int = 1) -> tuple[slice, slice]:
    """The tile's core inside its window (in pixels divided by ``scale``)."""
    a, b = (t.core_r0 - t.r0) // scale, (t.core_c0 - t.c0) // scale
    return (
        slice(a, a + (t.core_r1 - t.core_r0) // scale),
        slice(b, b + (t.core_c1 - t.core_c0) // scale),
    )


def _batches(plan: list[Tile], batch_size: int, desc: str, progress: bool) -> Iterator[list[Tile]]:
    batches = list(batched_by_shape(plan, batch_size))
    return iter(tqdm(batches, desc=desc, disable=not progress, unit="batch"))


def _collect(
    model: Degradation, reader: HrWindowReader, device: torch.device, batch_size: int, progress: bool
) -> GlobalMapping:
    """Pass 1: the U-Net target of every tile core, counted with its source into global histograms."""
    bf16 = PRECISIONS[model.harmonization.precision] != torch.float32
    target_dtype = None if bf16 else torch.float32  # a bf16 target is counted exactly, as it is
    histograms = StreamedHistograms(N_BANDS, torch.bfloat16 if bf16 else torch.float32)
    plan = tiles(reader.height, reader.width, UNET_TILE - 2 * UNET_MARGIN, UNET_MARGIN)
    for batch in _batches(plan, batch_size, "pass 1: harmonization U-Net", progress):
        filled, valid = _read_batch(reader, batch)
        with torch.inference_mode():
            target = model.harmonization.predict_target(filled.to(device), dtype=target_dtype).cpu()
        for i, t in enumerate(batch):
            rows, cols = _core(t)
            histograms.add(filled[i][:, rows, cols], target[i][:, rows, cols], valid[i][rows, cols])
    try:
        return histograms.mapping()
    except InvalidImageError:
        raise AllNodataError(f"{reader.path}: {ALL_NODATA}") from None


def _write(
    model: Degradation,
    reader: HrWindowReader,
    mapping: GlobalMapping | None,
    output: str | Path,
    hr_out: str | Path | None,
    noise: bool,
    seed: int,
    device: torch.device,
    batch_size: int,
    tile: int,
    progress: bool,
) -> StreamResult:
    """Pass 2: match, blur + downsample, noise and write each window."""
    scale = model.scale
    height, width = reader.height // scale, reader.width // scale
    margin = -(-model.blur.reach // scale) * scale  # reach rounded up to whole LR pixels
    block = NOISE_BLOCK * scale
    core = max(-(-tile // block), 1) * block
    lr_grid = lr_transform(reader.transform, scale)
    valid_pixels = 0
    with ExitStack() as stack:
        lr_writer = stack.enter_context(
            streamed_cog(output, SENTINEL2, reader.crs, lr_grid, height, width, SENTINEL2.all_bands)
        )
        hr_writer = None
        if hr_out is not None:
            hr_writer = stack.enter_context(
                streamed_cog(
                    hr_out, NAIP, reader.crs, reader.transform, reader.height, reader.width, NAIP.all_bands
                )
            )
        plan = tiles(reader.height, reader.width, core, margin)
        for batch in _batches(plan, batch_size, "pass 2: blur + downsample", progress):
            filled, valid = _read_batch(reader, batch)
            valid_pixels += int(valid.sum())
            if mapping is not None:
                filled = torch.stack([mapping.apply(x, v) for x, v in zip(filled, valid, strict=True)])
            with torch.inference_mode():
                lr = model.blur(filled.to(device)).cpu()
                lr_valid = model.lr_valid(valid.to(device)).cpu()
            for i, t in enumerate(batch):
                rows, cols = _core(t, scale)
                out = lr[i][:, rows, cols]
                if noise:
                    out = add_block_noise(model.noise, out, t.core_r0 // scale, t.core_c0 // scale, seed)
                out = torch.where(lr_valid[i][rows, cols], out, torch.nan)
                lr_writer.write(out.numpy(), t.core_r0 // scale, t.core_c0 // scale)
                if hr_writer is not None:
                    _write_hr(hr_writer, filled[i], valid[i], t)
        if valid_pixels == 0:
            raise AllNodataError(f"{reader.path}: {ALL_NODATA}")
    return StreamResult(height, width, SENTINEL2.all_bands, mapping is not None)


def _write_hr(writer: WindowWriter, harmonized: torch.Tensor, valid: torch.Tensor, t: Tile) -> None:
    rows, cols = _core(t)
    core = torch.where(valid[rows, cols], harmonized[:, rows, cols], torch.nan)
    writer.write(core.numpy(), t.core_r0, t.core_c0)


def add_block_noise(
    noise: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
    lr: torch.Tensor,
    row: int,
    col: int,
    seed: int,
) -> torch.Tensor:
    """``lr`` ``(C, h, w)`` (top-left LR pixel ``row, col``, a multiple of :data:`NOISE_BLOCK`) plus
    noise drawn block by block."""
    out = torch.empty_like(lr)
    for r in range(0, lr.shape[1], NOISE_BLOCK):
        for c in range(0, lr.shape[2], NOISE_BLOCK):
            part = lr[None, :, r : r + NOISE_BLOCK, c : c + NOISE_BLOCK]
            generator = block_generator(seed, (row + r) // NOISE_BLOCK, (col + c) // NOISE_BLOCK)
            out[:, r : r + NOISE_BLOCK, c : c + NOISE_BLOCK] = noise(part, generator)[0]
    return out
