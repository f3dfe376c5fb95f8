"""Triton kernels for CUDA tensors. Optional: without Triton (or on other devices) the callers use
their torch implementations, which give the same results.

:func:`row_level_counts` counts small histograms (≤ 1,024 levels per row) in each program's registers
and adds them to the row's counts once per block of pixels: on an H100, 256 tiles' 8-bit histograms
take a fraction of a millisecond, against 2.2 ms for one global atomic add per pixel (``index_add_``)
and 12 ms for ``bincount``.
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton ships with CUDA builds of torch
    triton = None

__all__ = ["MAX_LEVELS", "available", "row_level_counts"]

#: Most levels per row one program's register histogram holds.
MAX_LEVELS: int = 1024
#: Pixels per program.
BLOCK: int = 4096


def available(x: torch.Tensor) -> bool:
    """Whether the kernels can run on ``x``: a CUDA tensor, with Triton installed."""
    return triton is not None and x.is_cuda


def row_level_counts(index: torch.Tensor, n_levels: int) -> torch.Tensor:
    """``(R, n_levels)`` int32 counts of ``index`` ``(R, N)`` int32, whose values are
    ``row · n_levels + level`` with ``0 <= level < n_levels`` (a power of two)."""
    rows, n = index.shape
    if n_levels > MAX_LEVELS or n_levels & (n_levels - 1):
        raise ValueError(f"n_levels must be a power of two <= {MAX_LEVELS}, got {n_levels}")
    counts = torch.zeros(rows, n_levels, dtype=torch.int32, device=index.device)
    _row_counts_kernel[(rows, triton.cdiv(n, BLOCK))](
        index.contiguous(), counts, n, n_levels_c=n_levels, block=BLOCK
    )
    return counts


if triton is not None:

    @triton.jit
    def _row_counts_kernel(index_ptr, counts_ptr, n_cols, n_levels_c: tl.constexpr, block: tl.constexpr):
        row = tl.program_id(0)
        cols = tl.program_id(1) * block + tl.arange(0, block)
        inside = cols < n_cols
        index = tl.load(index_ptr + row.to(tl.int64) * n_cols + cols, mask=inside, other=0)
        level = tl.where(inside, index - row * n_levels_c, 0)  # pixels past the row's end count as 0 ...
        counts = tl.histogram(level, n_levels_c)
        bins = tl.arange(0, n_levels_c)
        padding = block - tl.sum(inside.to(tl.int32), axis=0)
        counts = counts - tl.where(bins == 0, padding, 0)  # ... and are taken back here
        tl.atomic_add(counts_ptr + row * n_levels_c + bins, counts)
