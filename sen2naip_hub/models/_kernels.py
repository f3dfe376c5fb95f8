"""Triton kernels for CUDA tensors. Optional: without Triton (or on other devices) the callers use
their torch implementations, which give the same counts.

Both kernels count per-row histograms the same way: each program walks a stretch of one row in blocks,
counts each block in registers (``tl.histogram``) and adds its total to the row's counts once, so a
row of N pixels costs N / :data:`STRETCH` × bins global atomic adds instead of N. On an H100
(``benchmarks/bench_histogram.py``, 256 NAIP tiles), :func:`source_levels` finds and counts the 8-bit
levels in 1.2 ms against 6.0 ms for the torch ops, and :func:`half_key_counts` (keys computed in the
kernel) lets the bf16 reference's CDF take 5.4 ms against 8.3 ms with keys + ``index_add_``.
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton ships with CUDA builds of torch
    triton = None

__all__ = ["HALF_WINDOW", "MAX_LEVELS", "available", "half_key_counts", "row_level_counts", "source_levels"]

#: Most levels per row :func:`row_level_counts` keeps in registers.
MAX_LEVELS: int = 1024
#: Keys per row :func:`half_key_counts` counts in registers (8 octaves of bf16 values); the rest are
#: added one by one.
HALF_WINDOW: int = 1024
#: Pixels per block, and per program (a program's stretch of its row).
BLOCK: int = 4096
STRETCH: int = 8 * BLOCK
#: Keys of a 16-bit float (see ``histogram.half_keys``).
HALF_KEYS: int = 1 << 16


def available(x: torch.Tensor) -> bool:
    """Whether the kernels can run on ``x``: a CUDA tensor, with Triton installed."""
    return triton is not None and x.is_cuda


def _grid(rows: int, n: int) -> tuple[int, int]:
    return rows, triton.cdiv(n, STRETCH)


def row_level_counts(index: torch.Tensor, n_levels: int) -> torch.Tensor:
    """``(R, n_levels)`` int32 counts of ``index`` ``(R, N)`` int32, whose values are
    ``row · n_levels + level`` with ``0 <= level < n_levels`` (a power of two)."""
    rows, n = index.shape
    if n_levels > MAX_LEVELS or n_levels & (n_levels - 1):
        raise ValueError(f"n_levels must be a power of two <= {MAX_LEVELS}, got {n_levels}")
    counts = torch.zeros(rows, n_levels, dtype=torch.int32, device=index.device)
    _level_counts_kernel[_grid(rows, n)](
        index.contiguous(), counts, n, n_levels=n_levels, block=BLOCK, stretch=STRETCH
    )
    return counts


def source_levels(
    x: torch.Tensor, n_levels: int, tolerance: float
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """For ``x`` ``(R, N)`` float32 on the grid ``k / (n_levels - 1)`` (``n_levels`` a power of two):
    the index ``row · n_levels + k`` of every pixel's nearest level ``(R, N)`` int32, the
    ``(R, n_levels)`` int32 counts of the levels, and whether every pixel lies within ``tolerance``
    (in level units) of its level (one host sync)."""
    rows, n = x.shape
    index = torch.empty(rows, n, dtype=torch.int32, device=x.device)
    counts = torch.zeros(rows, n_levels, dtype=torch.int32, device=x.device)
    off_grid = torch.zeros(1, dtype=torch.int32, device=x.device)
    _source_levels_kernel[_grid(rows, n)](
        x.contiguous(),
        index,
        counts,
        off_grid,
        n,
        tolerance,
        n_levels=n_levels,
        block=BLOCK,
        stretch=STRETCH,
    )
    return index, counts, int(off_grid.item()) == 0


def half_key_counts(x: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """``(R, 65536)`` int32 counts of the keys of ``x`` ``(R, N)`` (bfloat16 or float16): each row's
    keys in ``[base, base + HALF_WINDOW)`` (``base`` ``(R,)`` int32, at most 65536 - HALF_WINDOW) are
    counted in registers, the others one by one."""
    rows, n = x.shape
    counts = torch.zeros(rows, HALF_KEYS, dtype=torch.int32, device=x.device)
    bits = x.contiguous().view(torch.int16)
    _half_counts_kernel[_grid(rows, n)](
        bits, base.to(torch.int32).contiguous(), counts, n, window=HALF_WINDOW, block=BLOCK, stretch=STRETCH
    )
    return counts


if triton is not None:

    @triton.jit
    def _level_counts_kernel(
        index_ptr, counts_ptr, n_cols, n_levels: tl.constexpr, block: tl.constexpr, stretch: tl.constexpr
    ):
        row = tl.program_id(0)
        start = tl.program_id(1) * stretch
        bins = tl.arange(0, n_levels)
        total = tl.zeros([n_levels], dtype=tl.int32)
        for step in range(0, stretch, block):
            cols = start + step + tl.arange(0, block)
            inside = cols < n_cols
            index = tl.load(index_ptr + row.to(tl.int64) * n_cols + cols, mask=inside, other=0)
            level = tl.where(inside, index - row * n_levels, 0)  # pixels past the row's end count as 0 ...
            padding = block - tl.sum(inside.to(tl.int32), axis=0)
            total += tl.histogram(level, n_levels) - tl.where(bins == 0, padding, 0)  # ... taken back here
        tl.atomic_add(counts_ptr + row * n_levels + bins, total, mask=total > 0)

    @triton.jit
    def _source_levels_kernel(
        x_ptr,
        index_ptr,
        counts_ptr,
        off_grid_ptr,
        n_cols,
        tolerance,
        n_levels: tl.constexpr,
        block: tl.constexpr,
        stretch: tl.constexpr,
    ):
        row = tl.program_id(0)
        start = tl.program_id(1) * stretch
        bins = tl.arange(0, n_levels)
        total = tl.zeros([n_levels], dtype=tl.int32)
        off_grid = 0
        for step in range(0, stretch, block):
            cols = start + step + tl.arange(0, block)
            inside = cols < n_cols
            at = row.to(tl.int64) * n_cols + cols
            x = tl.load(x_ptr + at, mask=inside, other=0.0)
            scaled = x * (n_levels - 1)
            nearest = tl.minimum(tl.maximum(tl.floor(scaled + 0.5), 0.0), n_levels - 1.0)
            on_grid = tl.abs(scaled - nearest) <= tolerance
            off_grid += tl.sum((inside & ~on_grid).to(tl.int32), axis=0)
            level = nearest.to(tl.int32)
            tl.store(index_ptr + at, level + row * n_levels, mask=inside)
            padding = block - tl.sum(inside.to(tl.int32), axis=0)
            total += tl.histogram(level, n_levels) - tl.where(bins == 0, padding, 0)  # padding read as 0
        tl.atomic_add(counts_ptr + row * n_levels + bins, total, mask=total > 0)
        if off_grid > 0:
            tl.atomic_add(off_grid_ptr, off_grid)

    @triton.jit
    def _half_counts_kernel(
        bits_ptr,
        base_ptr,
        counts_ptr,
        n_cols,
        window: tl.constexpr,
        block: tl.constexpr,
        stretch: tl.constexpr,
    ):
        row = tl.program_id(0)
        start = tl.program_id(1) * stretch
        base = tl.load(base_ptr + row)
        row_counts = counts_ptr + row.to(tl.int64) * 65536
        bins = tl.arange(0, window)
        total = tl.zeros([window], dtype=tl.int32)
        for step in range(0, stretch, block):
            cols = start + step + tl.arange(0, block)
            inside = cols < n_cols
            bits = tl.load(bits_ptr + row.to(tl.int64) * n_cols + cols, mask=inside, other=0).to(tl.int32)
            key = tl.where(bits >= 0, bits + 32768, tl.where(bits == -32768, 32768, -1 - bits))
            offset = key - base
            near = inside & (offset >= 0) & (offset < window)
            missing = block - tl.sum(near.to(tl.int32), axis=0)
            total += tl.histogram(tl.where(near, offset, 0), window) - tl.where(bins == 0, missing, 0)
            far = inside & ~near
            tl.atomic_add(row_counts + key, far.to(tl.int32), mask=far)
        tl.atomic_add(row_counts + base + bins, total, mask=total > 0)
