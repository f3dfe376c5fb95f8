"""Histogram matching in torch: batched, on any device, with an optional validity mask.

:func:`match_histograms` reproduces ``skimage.exposure.match_histograms`` (each band's empirical CDF is
mapped onto the reference's, interpolating between the reference's distinct values) for a whole batch
at once, with sorts and ``searchsorted`` instead of a per-image numpy round trip.
:func:`match_histograms_local` does the same per overlapping window and blends the windows with
weights that sum to one everywhere, so the mapping varies smoothly and leaves no seams.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F

from sen2naip_hub.models import _kernels

__all__ = [
    "BinnedCdf",
    "half_keys",
    "half_values",
    "level_counts",
    "level_lookup",
    "match_histograms",
    "match_histograms_local",
    "source_levels",
]


#: Images whose values all lie on this grid (8-bit data such as NAIP / 255) take the fast path:
#: quantiles from a per-level histogram instead of a per-pixel sort.
QUANTIZED_LEVELS: int = 255
#: How far (in level units) a value may lie from ``k / 255`` and still count as level ``k``: the
#: float32 value of ``k / 255`` depends on how it was computed (a CPU divides; CUDA multiplies by
#: ``1 / 255``), 1 ulp apart, i.e. at most 3e-5 levels; a real off-grid value is almost never this close.
GRID_TOLERANCE: float = 1e-4


def _quantile_of_sorted(ordered: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """For sorted rows, each element's quantile: the share of its row that is <= its value."""
    n = ordered.shape[1]
    position = torch.arange(n, device=ordered.device).expand_as(ordered)
    is_last = torch.ones_like(ordered, dtype=torch.bool)
    is_last[:, :-1] = ordered[:, 1:] != ordered[:, :-1]
    last = torch.where(is_last, position, torch.full_like(position, n))
    last_of_run = torch.flip(torch.cummin(torch.flip(last, [1]), dim=1).values, [1])
    return (last_of_run + 1).to(count.dtype) / count


#: Dtypes :func:`sorted_rows` sorts with numpy on the CPU.
NUMPY_SORT_DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.float64)


def sorted_rows(x: torch.Tensor) -> torch.Tensor:
    """The rows of ``x`` ``(R, N)`` sorted ascending (NaN last), as ``torch.sort(x, dim=1).values``.

    On the CPU numpy sorts (SIMD sorts; it releases the GIL), the rows split over torch's intra-op
    threads: 3x ``torch.sort`` on 2 cores for 32 rows of 234,256 px (``bench_histogram.py --device
    cpu``). Elsewhere, and where autograd records ``x``, ``torch.sort``.

    >>> x = torch.rand(3, 1000)
    >>> torch.equal(sorted_rows(x), torch.sort(x, dim=1).values)
    True
    """
    grad = x.requires_grad and torch.is_grad_enabled()
    if x.device.type != "cpu" or grad or x.dtype not in NUMPY_SORT_DTYPES or x.ndim != 2:
        return torch.sort(x, dim=1).values
    rows = x.detach().contiguous().numpy()
    out = np.empty_like(rows)
    parts = max(1, min(torch.get_num_threads(), len(rows)))
    edges = np.linspace(0, len(rows), parts + 1).astype(int)

    def sort(part: int) -> None:
        chunk = slice(edges[part], edges[part + 1])
        out[chunk] = np.sort(rows[chunk], axis=1)

    with ThreadPoolExecutor(parts) as pool:
        list(pool.map(sort, range(parts)))
    return torch.from_numpy(out)


class _SortedReference:
    """A reference's empirical CDF from a sort of each row: exact skimage semantics."""

    def __init__(self, reference: torch.Tensor, valid: torch.Tensor | None, n_ref: torch.Tensor) -> None:
        inf = torch.tensor(float("inf"), dtype=reference.dtype, device=reference.device)
        self.sorted = sorted_rows(reference if valid is None else torch.where(valid, reference, inf))
        self.n_ref = n_ref

    def values_at(self, quantile: torch.Tensor) -> torch.Tensor:
        """``np.interp(quantile, ref_quantiles, ref_values)`` per row, over the reference's distinct
        values, where a distinct value's quantile is the share of the reference <= it (as skimage
        builds them).

        Only the queried points are located: the first sorted position whose own rank reaches the
        quantile lies in the run of equal values that holds the answer's upper point, and two
        ``searchsorted`` of that value give the run's ends.
        """
        ref_sorted, n_ref = self.sorted, self.n_ref
        count = n_ref.to(torch.long)
        k0 = torch.minimum((torch.ceil(quantile * n_ref) - 1).clamp_min(0).to(torch.long), count - 1)
        y_hi = ref_sorted.gather(1, k0)
        below = torch.searchsorted(ref_sorted, y_hi)  # first element of the run = count below it
        end = torch.searchsorted(ref_sorted, y_hi, right=True)  # one past its last element
        y_lo = ref_sorted.gather(1, (below - 1).clamp_min(0))
        return _interpolate(quantile, n_ref, below, end, y_lo, y_hi)


#: Reference dtypes whose values are all distinct 16-bit patterns: their CDF comes from a histogram
#: of every possible value, not from a sort.
HALF_DTYPES: tuple[torch.dtype, ...] = (torch.bfloat16, torch.float16)
_HALF_VALUES = 1 << 16
_half_tables: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}


def half_keys(x: torch.Tensor) -> torch.Tensor:
    """Each 16-bit float's rank among all 65,536 bit patterns (int32), ascending with the value;
    -0 shares +0's key."""
    bits = x.view(torch.int16).to(torch.int32)  # sign and magnitude, as a signed integer
    negative = torch.where(bits == -(1 << 15), 1 << 15, -1 - bits)
    return torch.where(bits >= 0, bits + (1 << 15), negative)


def half_values(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The float32 value of every :func:`half_keys` key (cached)."""
    if (dtype, device) not in _half_tables:
        key = torch.arange(_HALF_VALUES, dtype=torch.int32)
        bits = torch.where(key >= 1 << 15, key - (1 << 15), -1 - key).to(torch.int16)
        _half_tables[dtype, device] = bits.view(dtype).float().to(device)
    return _half_tables[dtype, device]


def _half_counts(reference: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """``(R, 65536)`` int32 counts of each row's :func:`half_keys`, leaving invalid pixels out. On a
    GPU, a Triton kernel counts the keys near each row's mean in registers (a row's values mostly lie
    within a few octaves: a few hundred keys) and the others one by one."""
    if valid is None and _kernels.available(reference):
        center = half_keys(reference.mean(dim=1, dtype=torch.float32).to(reference.dtype))
        base = (center - _kernels.HALF_WINDOW // 2).clamp(0, _HALF_VALUES - _kernels.HALF_WINDOW)
        return _kernels.half_key_counts(reference, base)
    rows = reference.shape[0]
    offset = torch.arange(rows, device=reference.device, dtype=torch.int32)[:, None] * _HALF_VALUES
    return level_counts(half_keys(reference) + offset, valid, rows, _HALF_VALUES)


class BinnedCdf:
    """A reference's empirical CDF from counts per bin, bins in ascending order of their values.

    Without ``highs``, each occupied bin is one distinct reference value (``values``, that of every
    pixel in it): with one bin per possible value (all 65,536 of a 16-bit float) this is exactly
    :class:`_SortedReference`'s CDF, from one counting pass and a cumulative sum instead of a sort.
    With ``highs``, a bin holds many distinct values, from ``values`` (its lowest) to ``highs`` (its
    highest), taken to be spread evenly over the bin's pixels: the streamed matching
    (:mod:`sen2naip_hub.models.histogram_stream`) bins float32 values so, and a result then lies
    within one bin's span of the exact one.

    Args:
        counts: ``(R, K)`` integer counts (int32 or int64) of each row's pixels per bin.
        values: ``(K,)`` the value of each bin, shared by the rows, or ``(R, K)`` one per row.
        n_ref: ``(R, 1)`` float64 pixel count of each row (the sum of its counts).
        highs: ``(R, K)`` the highest value in each bin (then ``values`` are the lowest), or None.
    """

    def __init__(
        self,
        counts: torch.Tensor,
        values: torch.Tensor,
        n_ref: torch.Tensor,
        highs: torch.Tensor | None = None,
    ) -> None:
        self.cumulative = counts.cumsum(dim=1, dtype=counts.dtype)
        self.values, self.highs = values, highs
        self.n_ref = n_ref

    @classmethod
    def of_half(cls, reference: torch.Tensor, valid: torch.Tensor | None, n_ref: torch.Tensor) -> BinnedCdf:
        """The CDF of a bfloat16 or float16 ``reference`` ``(R, M)`` over all 65,536 values of its type."""
        return cls(_half_counts(reference, valid), half_values(reference.dtype, reference.device), n_ref)

    @staticmethod
    def _pick(table: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return table[k] if table.ndim == 1 else table.gather(1, k)

    def values_at(self, quantile: torch.Tensor) -> torch.Tensor:
        """As :meth:`_SortedReference.values_at`, over the bins that hold reference pixels."""
        cumulative, n_ref = self.cumulative, self.n_ref
        last = cumulative.shape[1] - 1
        rank = torch.minimum(torch.ceil(quantile * n_ref).clamp_min(1), n_ref).to(cumulative.dtype)  # 1-based
        k_hi = torch.searchsorted(cumulative, rank).clamp_max(last)  # first bin reaching the rank
        below = torch.where(k_hi > 0, cumulative.gather(1, (k_hi - 1).clamp_min(0)), 0)
        end = cumulative.gather(1, k_hi)
        k_lo = torch.searchsorted(cumulative, below).clamp_max(last)  # the last occupied bin before
        k_lo = torch.where(below > 0, k_lo, k_hi)  # none before: np.interp holds the first value
        y_hi = self._pick(self.values, k_hi)
        if self.highs is None:
            return _interpolate(quantile, n_ref, below, end, self._pick(self.values, k_lo), y_hi)
        # a bin of distinct values low..high at ranks below + 1 .. end; before its first, from the last
        # bin's highest value (np.interp between distinct values, as without bins)
        previous = torch.where(below > 0, self._pick(self.highs, k_lo), y_hi)
        position = quantile * n_ref - below.to(torch.float64)  # in (0, count]
        within = ((position - 1) / (end - below - 1).clamp_min(1).to(torch.float64)).clamp(0, 1)
        inside = y_hi + within.to(y_hi.dtype) * (self._pick(self.highs, k_hi) - y_hi)
        entering = previous + position.clamp(0, 1).to(y_hi.dtype) * (y_hi - previous)
        return torch.where(position >= 1, inside, entering)


def _interpolate(
    quantile: torch.Tensor,
    n_ref: torch.Tensor,
    below: torch.Tensor,
    end: torch.Tensor,
    y_lo: torch.Tensor,
    y_hi: torch.Tensor,
) -> torch.Tensor:
    """Linear interpolation between the distinct values ``y_lo`` < ``y_hi`` at quantiles
    ``below / n`` and ``end / n``; below the first distinct value, the first value (as ``np.interp``)."""
    x_lo, x_hi = below.to(torch.float64) / n_ref, end.to(torch.float64) / n_ref
    weight = torch.where(
        below > 0, (quantile - x_lo) / (x_hi - x_lo).clamp_min(1e-12), torch.ones_like(quantile)
    )
    return y_lo + weight.clamp(0, 1).to(y_lo.dtype) * (y_hi - y_lo)


def source_levels(src: torch.Tensor, valid: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """For a source on the 8-bit grid (NAIP / 255, within :data:`GRID_TOLERANCE`): ``row · 256 +
    level`` of every valid pixel (0 elsewhere) and the ``(R, 256)`` counts of the levels; None if a
    valid pixel is off the grid. On a GPU one fused Triton kernel; one host sync either way."""
    n_levels = QUANTIZED_LEVELS + 1
    if valid is None and src.dtype == torch.float32 and _kernels.available(src):
        index, counts, on_grid = _kernels.source_levels(src, n_levels, GRID_TOLERANCE)
        return (index, counts) if on_grid else None
    scaled = src * QUANTIZED_LEVELS
    levels = torch.round(scaled)
    off_grid = ~((scaled - levels).abs() <= GRID_TOLERANCE) | (levels < 0) | (levels > QUANTIZED_LEVELS)
    if valid is not None:
        off_grid, levels = off_grid & valid, torch.where(valid, levels, 0)
    if bool(off_grid.any()):
        return None
    rows = torch.arange(src.shape[0], device=src.device, dtype=torch.int32)[:, None]
    index = levels.to(torch.int32) + rows * n_levels  # int32: half the memory traffic of int64
    return index, level_counts(index, valid, src.shape[0], n_levels)


def level_counts(index: torch.Tensor, valid: torch.Tensor | None, rows: int, n_levels: int) -> torch.Tensor:
    """``(rows, n_levels)`` int32 counts of ``index`` (row · n_levels + level), leaving invalid pixels
    out: a Triton kernel for small histograms on a GPU, else one ``index_add_`` (on an H100 6x faster
    than ``bincount``, which counts large histograms with int64 atomics)."""
    if valid is None and n_levels <= _kernels.MAX_LEVELS and _kernels.available(index):
        return _kernels.rowlevel_counts(index, n_levels)
    total = rows * n_levels
    flat = (index if valid is None else torch.where(valid, index, total)).reshape(-1)  # invalid: one bin past
    counts = torch.zeros(total + 1, dtype=torch.int32, device=index.device)
    counts.index_add_(0, flat, torch.ones(1, dtype=torch.int32, device=index.device).expand(flat.numel()))
    return counts[:total].reshape(rows, n_levels)


def level_lookup(
    counts: torch.Tensor, n_src: torch.Tensor, cdf: _SortedReference | BinnedCdf
) -> torch.Tensor:
    """The matched value of each source level (or bin) ``(R, L)``: the reference's value at the level's
    quantile, the share of the row's ``n_src`` pixels at or below it (``counts`` per level, ascending)."""
    return cdf.values_at(counts.cumsum(dim=1).to(torch.float64) / n_src)


def _match_rows(
    source: torch.Tensor,
    reference: torch.Tensor,
    src_valid: torch.Tensor | None,
    ref_valid: torch.Tensor | None,
) -> torch.Tensor:
    """Match each row of ``source`` ``(R, N)`` to the same row of ``reference`` ``(R, M)``; a mask of
    None means every pixel is valid (and saves the masking passes)."""
    rows, device = source.shape[0], source.device

    def count(valid: torch.Tensor | None, size: int) -> torch.Tensor:
        # Quantiles in float64, as skimage computes them: float32 would cost ~2e-5 of accuracy.
        if valid is None:
            return torch.full((rows, 1), float(size), dtype=torch.float64, device=device)
        return valid.sum(dim=1, keepdim=True).clamp_min(1).to(torch.float64)

    n_src, n_ref = count(src_valid, source.shape[1]), count(ref_valid, reference.shape[1])
    if reference.dtype in HALF_DTYPES:
        cdf = BinnedCdf.of_half(reference, ref_valid, n_ref)
    else:
        cdf = _SortedReference(reference, ref_valid, n_ref)
    levels = source_levels(source, src_valid)
    if levels is not None:  # fast path: a histogram of 256 levels per row
        index, counts = levels
        lookup = level_lookup(counts, n_src, cdf)
        matched = F.embedding(index, lookup.reshape(-1, 1)).reshape(source.shape)  # a table lookup
    else:
        inf = torch.tensor(float("inf"), dtype=source.dtype, device=device)
        masked = source if src_valid is None else torch.where(src_valid, source, inf)
        src_sorted, order = torch.sort(masked, dim=1)
        quantile = torch.empty_like(source, dtype=torch.float64).scatter_(
            1, order, _quantile_of_sorted(src_sorted, n_src)
        )
        matched = cdf.values_at(quantile)
    if src_valid is None and ref_valid is None:
        return matched
    keep = torch.ones_like(source, dtype=torch.bool) if src_valid is None else src_valid
    if ref_valid is not None:
        keep = keep & ref_valid.any(dim=1, keepdim=True)
    return torch.where(keep, matched, source)


def match_histograms(
    source: torch.Tensor,
    reference: torch.Tensor,
    source_valid: torch.Tensor | None = None,
    reference_valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Give each band of ``source`` ``(B, C, H, W)`` the histogram of ``reference`` ``(B, C, h, w)``.

    Optional masks ``(B, H, W)`` / ``(B, h, w)`` (True = valid) leave invalid pixels out of both
    histograms; invalid source pixels are returned unchanged.

    The result equals ``skimage.exposure.match_histograms`` up to float rounding. A float32 reference
    is sorted; a bfloat16 or float16 one (the U-Net's output in bf16) is counted in a histogram of
    all 65,536 values its type has instead, which is exact too and several times faster on a GPU.
    The result has ``source``'s dtype.

    >>> src, ref = torch.rand(2, 4, 8, 8), torch.rand(2, 4, 8, 8) * 0.5
    >>> out = match_histograms(src, ref)  # same size, no ties: out takes exactly ref's values
    >>> torch.equal(out.flatten(2).sort(-1).values, ref.flatten(2).sort(-1).values)
    True
    """
    if source.ndim != 4 or reference.ndim != 4 or source.shape[:2] != reference.shape[:2]:
        raise ValueError(
            f"expected (B, C, H, W) tensors with equal B and C, got {tuple(source.shape)} and "
            f"{tuple(reference.shape)}"
        )
    b, c = source.shape[:2]
    src_valid = _band_mask(source, source_valid)
    ref_valid = _band_mask(reference, reference_valid)

    def rows(mask: torch.Tensor | None) -> torch.Tensor | None:
        return None if mask is None else mask.reshape(b * c, -1)

    out = _match_rows(
        source.reshape(b * c, -1), reference.reshape(b * c, -1), rows(src_valid), rows(ref_valid)
    )
    return out.reshape(source.shape)


def _band_mask(x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor | None:
    """Per-band validity ``(B, C, H, W)`` (finite and in ``valid``), or None when all is valid."""
    if valid is None and all(math.isfinite(v) for v in torch.stack(torch.aminmax(x)).tolist()):
        return None  # one reduction, no mask: min and max are NaN or infinite if any value is
    finite = torch.isfinite(x)
    return finite if valid is None else finite & valid[:, None].to(torch.bool)


def _window_weights(size: int, dtype, device) -> torch.Tensor:
    """sin² profile: with 50 % overlap, shifted copies sum to exactly one."""
    x = (torch.arange(size, dtype=torch.float64, device=device) + 0.5) / size
    w1 = torch.sin(math.pi * x) ** 2
    return (w1[:, None] * w1[None, :]).to(dtype)


def match_histograms_local(
    source: torch.Tensor,
    reference: torch.Tensor,
    window: int = 128,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Local histogram matching: per ``window`` (even), windows every ``window // 2`` px, blended.

    ``source`` and ``reference`` share their shape ``(B, C, H, W)``. Each window's pixels get that
    window's mapping; every pixel lies in four windows whose sin² weights sum to one, so the result
    changes smoothly between windows. The image is padded by half a window with pixels marked invalid,
    so the borders use only real pixels.
    """
    if source.shape != reference.shape:
        raise ValueError(
            f"local matching needs equal shapes, got {tuple(source.shape)} and {tuple(reference.shape)}"
        )
    if window < 2 or window % 2:
        raise ValueError(f"window must be an even number of pixels >= 2, got {window}")
    b, c, h, w = source.shape
    stride = window // 2
    pad_h = stride + (-(h + 2 * stride - window)) % stride
    pad_w = stride + (-(w + 2 * stride - window)) % stride
    mask = torch.ones(b, 1, h, w, dtype=source.dtype, device=source.device)
    if valid is not None:
        mask = mask * valid[:, None].to(source.dtype)
    padding = (stride, pad_w, stride, pad_h)
    src_p, ref_p, mask_p = (F.pad(t, padding) for t in (source, reference, mask))
    hp, wp = src_p.shape[-2:]

    def windows(t: torch.Tensor) -> torch.Tensor:  # (B, k, Hp, Wp) -> (B * L, k, window²)
        cols = F.unfold(t, window, stride=stride)  # (B, k * window², L)
        k = t.shape[1]
        return cols.reshape(b, k, window * window, -1).permute(0, 3, 1, 2).reshape(-1, k, window * window)

    src_w, ref_w = windows(src_p), windows(ref_p)
    valid_w = windows(mask_p)[:, 0] > 0.5  # (B * L, window²)
    n_win, pixels = valid_w.shape
    matched = _match_rows(
        src_w.reshape(n_win * c, pixels),
        ref_w.reshape(n_win * c, pixels),
        valid_w.repeat_interleave(c, dim=0),
        valid_w.repeat_interleave(c, dim=0),
    ).reshape(n_win, c, pixels)
    weights = _window_weights(window, source.dtype, source.device).reshape(1, 1, -1)
    blended = (matched * weights).reshape(b, -1, c * pixels).permute(0, 2, 1)
    out = F.fold(blended, (hp, wp), window, stride=stride)
    norm = F.fold(
        weights.expand(b, -1, -1).reshape(b, -1, 1).expand(-1, -1, blended.shape[-1]),
        (hp, wp),
        window,
        stride=stride,
    )
    out = (out / norm.clamp_min(1e-12))[..., stride : stride + h, stride : stride + w]
    return torch.where(torch.isfinite(source) & (mask > 0.5), out, source)
