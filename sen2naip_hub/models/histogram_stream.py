"""Global histogram matching of an image read window by window, in two passes and bounded memory.

Pass 1 adds each window's pixels to per-band histograms of the source and of the target
(:class:`StreamedHistograms`); :meth:`StreamedHistograms.mapping` turns them into one lookup table per
band (:class:`GlobalMapping`), and pass 2 applies it to each window. The quantile and lookup code is
:mod:`sen2naip_hub.models.histogram`'s (:class:`~sen2naip_hub.models.histogram.BinnedCdf`,
:func:`~sen2naip_hub.models.histogram.level_lookup`), so the streamed result is the in-memory
:func:`~sen2naip_hub.models.histogram.match_histograms` wherever the histograms are exact:

- a source on the 8-bit grid (NAIP uint8 / 255) is counted per level (256 per band), exactly;
- a bfloat16 or float16 target is counted over all 65,536 values of its type, exactly;
- a float32 target (the U-Net at ``fp32``) or an off-grid source (an area-averaged finer input, float
  files) is counted in bins of :data:`FLOAT_KEY_SHIFT` dropped float32 bits, each spanning at most
  :data:`FLOAT_BIN_RELATIVE_WIDTH` of its values, with the lowest and highest value in each bin; a
  bin's pixels are taken to be spread evenly between the two (a target value and a source pixel's
  rank are interpolated within its bin). A target value is then off by less than one bin's span,
  and a source pixel's quantile by less than its bin's share of the pixels;
  ``tests/test_streaming.py`` states and checks the tolerances.

Memory is fixed by the bins (about 0.1 GB), whatever the image size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sen2naip_hub.errors import InvalidImageError
from sen2naip_hub.models.histogram import (
    HALF_DTYPES,
    QUANTIZED_LEVELS,
    BinnedCdf,
    half_keys,
    half_values,
    level_counts,
    level_lookup,
    source_levels,
)

__all__ = [
    "FLOAT_BIN_RELATIVE_WIDTH",
    "FLOAT_KEY_SHIFT",
    "GlobalMapping",
    "StreamedHistograms",
    "float32_keys",
]

#: Low float32 bits dropped to bin float values: 2^20 bins over all float32 values, each spanning
#: 2^-11 of its values (float32 has 23 mantissa bits). 4 bands × 2^20 bins of int64 counts and float32
#: lowest and highest values take 64 MB.
FLOAT_KEY_SHIFT: int = 12
#: Relative width of a float bin: 2^-(23 - FLOAT_KEY_SHIFT) ≈ 4.9e-4 of the values it holds.
FLOAT_BIN_RELATIVE_WIDTH: float = 2.0 ** -(23 - FLOAT_KEY_SHIFT)
_FLOAT_BINS = 1 << (32 - FLOAT_KEY_SHIFT)
_HALF_BINS = 1 << 16
_LEVELS = QUANTIZED_LEVELS + 1


def float32_keys(x: torch.Tensor, shift: int = FLOAT_KEY_SHIFT) -> torch.Tensor:
    """Each float32 value's bin (int64, ascending with the value): its bit pattern ordered as the
    values are, without the ``shift`` low bits.

    >>> float32_keys(torch.tensor([-1.0, 0.0, 0.5, 1.0]), 0).diff().gt(0).all().item()
    True
    """
    bits = x.contiguous().view(torch.int32).to(torch.int64)
    ordered = torch.where(bits >= 0, bits + (1 << 31), (1 << 31) - 1 - (bits & 0x7FFFFFFF))
    return ordered >> shift


#: Source bins: reflectance lies in [0, 1], so only the keys of 0.0 ... 1.0 are kept.
_SOURCE_KEY0 = int(float32_keys(torch.tensor([0.0]))[0])
_SOURCE_BINS = int(float32_keys(torch.tensor([1.0]))[0]) - _SOURCE_KEY0 + 1


def _row_offsets(rows: int, bins: int, device: torch.device) -> torch.Tensor:
    return torch.arange(rows, device=device, dtype=torch.int64)[:, None] * bins


class StreamedHistograms:
    """Per-band histograms of a source image and its matching target, added to window by window.

    Args:
        bands: number of bands (rows of the histograms).
        target_dtype: the target's dtype: bfloat16 / float16 (exact histogram) or float32 (binned).
        device: where the counts live.
    """

    def __init__(self, bands: int, target_dtype: torch.dtype, device: torch.device | str = "cpu") -> None:
        self.bands, self.target_dtype, self.device = bands, target_dtype, torch.device(device)
        self.half = target_dtype in HALF_DTYPES
        zeros = lambda n, dtype=torch.int64: torch.zeros(bands, n, dtype=dtype, device=self.device)  # noqa: E731
        self.levels: torch.Tensor | None = zeros(_LEVELS)  # None once a valid pixel lies off the 8-bit grid
        self.source = _Bins(bands, _SOURCE_BINS, self.device)
        self.target = None if self.half else _Bins(bands, _FLOAT_BINS, self.device)
        self.target_counts = zeros(_HALF_BINS) if self.half else self.target.counts
        self.n_source = torch.zeros(bands, dtype=torch.int64, device=self.device)
        self.n_target = torch.zeros(bands, dtype=torch.int64, device=self.device)

    def add(self, source: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None) -> None:
        """Count ``source`` and ``target`` ``(C, H, W)`` (one window's pixels, each pixel of the image
        added once), leaving out pixels where ``valid`` ``(H, W)`` is False (and non-finite targets)."""
        rows = source.to(self.device).reshape(self.bands, -1)
        ref = target.to(self.device).reshape(self.bands, -1)
        src_valid = None if valid is None else valid.to(self.device).reshape(1, -1).expand_as(rows)
        finite = torch.isfinite(ref)
        ref_valid = finite if src_valid is None else finite & src_valid
        if self.levels is not None:
            found = source_levels(rows, src_valid)
            self.levels = None if found is None else self.levels + found[1]
        self.source.add(_source_keys(rows), rows, src_valid)
        if self.half:
            keys = half_keys(ref.to(self.target_dtype)) + _row_offsets(self.bands, _HALF_BINS, self.device)
            self.target_counts += level_counts(keys, ref_valid, self.bands, _HALF_BINS)
        else:
            self.target.add(float32_keys(ref.float()), ref.float(), ref_valid)
        self.n_source += rows.shape[1] if src_valid is None else src_valid.sum(dim=1)
        self.n_target += ref_valid.sum(dim=1)

    def mapping(self) -> GlobalMapping:
        """The per-band lookup tables that give the source the target's histogram.

        Raises:
            InvalidImageError: no valid pixel was added.
        """
        if not bool((self.n_source > 0).all()):
            raise InvalidImageError("every pixel is nodata: no histogram to match")
        n_source = self.n_source.to(torch.float64)[:, None]
        n_target = self.n_target.to(torch.float64)[:, None].clamp_min(1)
        if self.half:
            cdf = BinnedCdf(self.target_counts, half_values(self.target_dtype, self.device), n_target)
        else:
            cdf = BinnedCdf(self.target.counts, self.target.lows, n_target, highs=self.target.highs)
        has_target = self.n_target > 0
        if self.levels is not None:
            return GlobalMapping(cdf, has_target, lookup=level_lookup(self.levels, n_source, cdf))
        return GlobalMapping(cdf, has_target, source=self.source, n_source=n_source)


class _Bins:
    """Counts and the lowest and highest value of ``(R, bins)`` float bins."""

    def __init__(self, rows: int, bins: int, device: torch.device) -> None:
        self.rows, self.bins = rows, bins
        self.counts = torch.zeros(rows, bins, dtype=torch.int64, device=device)
        self.lows = torch.full((rows, bins), float("inf"), device=device)
        self.highs = torch.full((rows, bins), float("-inf"), device=device)

    def index(self, keys: torch.Tensor) -> torch.Tensor:
        """Flat indexes of ``(R, N)`` bin keys."""
        return keys + _row_offsets(self.rows, self.bins, keys.device)

    def add(self, keys: torch.Tensor, values: torch.Tensor, valid: torch.Tensor | None) -> None:
        index = self.index(keys)
        self.counts += level_counts(index, valid, self.rows, self.bins).to(torch.int64)
        flat, kept = (index, values) if valid is None else (index[valid], values[valid])
        flat, kept = flat.reshape(-1), kept.reshape(-1)
        self.lows.view(-1).scatter_reduce_(0, flat, kept, reduce="amin")
        self.highs.view(-1).scatter_reduce_(0, flat, kept, reduce="amax")

    def quantiles(self, keys: torch.Tensor, values: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        """Each of ``values`` ``(R, N)`` (in bins ``keys``) as its share of the row's ``n`` pixels at or
        below it, its rank interpolated between the first and last of its bin's pixels."""
        end = self.counts.cumsum(dim=1).gather(1, keys)
        count = self.counts.gather(1, keys)
        low, high = self.lows.gather(1, keys), self.highs.gather(1, keys)
        span = (high - low).to(torch.float64)
        spread = torch.where(span > 0, (values - low).to(torch.float64) / span.clamp_min(1e-30), 1.0)
        rank = end - count + 1 + spread.clamp(0, 1) * (count - 1)
        return rank / n


def _source_keys(rows: torch.Tensor) -> torch.Tensor:
    """Bins of reflectance in [0, 1]."""
    return (float32_keys(rows.clamp(0.0, 1.0)) - _SOURCE_KEY0).clamp(0, _SOURCE_BINS - 1)


class GlobalMapping:
    """Global histogram matching from histograms, applied window by window: a source on the 8-bit grid
    through a ``lookup`` table ``(C, 256)``, any other through its float ``source`` bins (each pixel's
    quantile, then the target ``cdf``'s value there).

    Args:
        cdf: the target's CDF per band.
        has_target: ``(C,)`` whether a band's target had valid pixels (bands without keep the source).
        lookup: the matched value of each 8-bit level, for a source on the grid.
        source, n_source: the source's float bins and ``(C, 1)`` pixel counts, for any other source.
    """

    def __init__(
        self,
        cdf: BinnedCdf,
        has_target: torch.Tensor,
        lookup: torch.Tensor | None = None,
        source: _Bins | None = None,
        n_source: torch.Tensor | None = None,
    ) -> None:
        self.cdf, self.has_target, self.lookup = cdf, has_target, lookup
        self.source, self.n_source = source, n_source
        self.on_grid = lookup is not None

    def apply(self, source: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        """Match ``source`` ``(C, H, W)``; pixels where ``valid`` ``(H, W)`` is False stay as they are.

        Raises:
            InvalidImageError: a valid pixel off the 8-bit grid when pass 1 found them all on it (the
                input changed between the passes).
        """
        bands = source.shape[0]
        rows = source.to(self.has_target.device).reshape(bands, -1)
        row_valid = None if valid is None else valid.to(rows.device).reshape(1, -1).expand_as(rows)
        if self.on_grid:
            found = source_levels(rows, row_valid)
            if found is None:
                raise InvalidImageError(
                    "the input changed between the two passes: a pixel left the 8-bit grid"
                )
            matched = F.embedding(found[0], self.lookup.reshape(-1, 1)).reshape(rows.shape)
        else:
            clamped = rows.clamp(0.0, 1.0)
            matched = self.cdf.values_at(self.source.quantiles(_source_keys(rows), clamped, self.n_source))
        keep = self.has_target.to(rows.device)[:, None].expand_as(rows)
        if row_valid is not None:
            keep = keep & row_valid
        return torch.where(keep, matched, rows).reshape(source.shape).to(source.device)
