"""Sub-pixel co-registration of a moving image against a reference by phase correlation.

Method (Guizar-Sicairos, Thurman & Fienup 2008, "Efficient subpixel image registration algorithms",
Opt. Lett. 33(2):156): the normalized cross-power spectrum of the two images (weighted towards low
frequencies, see :data:`DEFAULT_LOWPASS_SIGMA`) gives a correlation surface whose peak is the
translation; the integer peak is refined by evaluating the inverse DFT on an
``upsample_factor``-times finer grid in a 1.5-pixel neighbourhood of it (a matrix-multiply DFT, so
no large zero-padded FFT is needed).

Multi-band images: the cross-power spectra of the bands are **summed** before normalization (the
phase correlation of the stacked band vectors). A plain band mean is not used because visible and
NIR contrasts are often opposite (vegetation is dark in red, bright in NIR) and partly cancel when
averaged; summing the spectra lets every band contribute its own edges. This assumes each band has
the same contrast sign in both images (true for the same band seen by two sensors); a band whose
contrast is inverted between the images pulls against the others. Pass ``band=3`` to use NIR alone.

Sign convention everywhere in this module: a shift ``(dy, dx)`` is the displacement of the moving
image's content relative to the reference, i.e. ``moving ≈ scipy.ndimage.shift(reference, (dy, dx))``;
:func:`apply_shift` with ``(-dy, -dx)`` undoes it. Units are pixels of the images passed in (LR
pixels in the cross-sensor pipeline).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from sen2naip_hub.errors import InvalidImageError

__all__ = [
    "DEFAULT_LOWPASS_SIGMA",
    "DEFAULT_MAX_SHIFT_PX",
    "DEFAULT_UPSAMPLE_FACTOR",
    "Alignment",
    "apply_shift",
    "coregister",
    "estimate_shift",
    "estimate_shifts",
]

#: Refinement grid: 1/100 pixel. Guizar-Sicairos et al. (2008) reach ~0.01 px with this factor.
DEFAULT_UPSAMPLE_FACTOR: int = 100

#: Largest shift (per axis, LR pixels) the aligner may correct. Sentinel-2 L1C absolute geolocation
#: is about 10 m (95 %) with the Global Reference Image refinement and NAIP's specification about 6 m
#: (95 %), so genuine offsets between them stay within ~2 LR pixels; 3 px leaves a margin. A larger
#: offset means a wrong footprint or a different scene, which alignment must not "fix": the
#: correlation peak is searched within this bound only, and the residual check (:func:`coregister`)
#: then sees what is left.
DEFAULT_MAX_SHIFT_PX: float = 3.0

#: Standard deviation (cycles per pixel) of the Gaussian weight applied to the normalized cross-power
#: spectrum. Pure phase correlation weights every frequency equally, so the near-Nyquist band, where
#: aliasing, resampling and the two sensors' different MTFs corrupt the phase, biases the sub-pixel
#: peak. Damping it (the idea of discarding aliased high frequencies of Stone et al. 2001, "A fast
#: direct Fourier-based algorithm for subpixel registration of images", IEEE TGRS 39(10)) took the
#: largest error over 24 seeded offsets (±2 px) on the four real Sentinel-2 sample scenes from
#: 0.12 px (pure phase) to 0.016 px (measured while writing this module; tests/test_align.py asserts
#: < 0.1 px).
DEFAULT_LOWPASS_SIGMA: float = 0.1

#: Added to the cross-power magnitude before normalizing, relative to its mean, so that frequencies
#: carrying no energy do not divide by zero.
_PHASE_EPS: float = 1e-3


@dataclass(frozen=True)
class Alignment:
    """The result of :func:`coregister`.

    Attributes:
        aligned: the moving image shifted onto the reference, same shape and dtype as the input.
        shift: estimated ``(dy, dx)`` of the moving image against the reference, pixels.
        residual: magnitude ``hypot(dy, dx)`` of the shift re-estimated between ``aligned`` and the
            reference (unbounded search), pixels. This is QA1.
    """

    aligned: np.ndarray
    shift: tuple[float, float]
    residual: float


def _as_stack(image: np.ndarray, name: str) -> np.ndarray:
    """``(H, W)`` or ``(C, H, W)`` → float64 ``(C, H, W)``, checked: each band has a finite pixel."""
    array = np.asarray(image, dtype=np.float64)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or min(array.shape[1:]) < 8:
        raise InvalidImageError(f"{name}: expected (H, W) or (C, H, W) with H, W >= 8, found {image.shape}")
    if not np.isfinite(array).any(axis=(1, 2)).all():
        raise InvalidImageError(f"{name}: a band has no finite pixel")
    return array


def _signed(index: torch.Tensor, size: int) -> torch.Tensor:
    """FFT index → signed shift (indices past the midpoint are negative shifts)."""
    return torch.where(index > size // 2, index - size, index).to(torch.float64)


def _cross_power(reference: torch.Tensor, moving: torch.Tensor, lowpass_sigma: float | None) -> torch.Tensor:
    """Normalized, low-pass weighted cross-power spectra ``(N, h, w)``, summed over bands (peak at +shift)."""
    h, w = reference.shape[-2:]
    options = {"dtype": torch.float64, "device": reference.device}
    win = torch.outer(
        torch.hann_window(h, periodic=False, **options), torch.hann_window(w, periodic=False, **options)
    )
    product = (torch.fft.fft2(moving * win) * torch.fft.fft2(reference * win).conj()).sum(dim=1)
    magnitude = product.abs()
    tiny = torch.finfo(torch.float64).tiny
    product = product / (magnitude + _PHASE_EPS * magnitude.mean(dim=(-2, -1), keepdim=True) + tiny)
    if lowpass_sigma is not None:
        fy = torch.fft.fftfreq(h, **options)[:, None]
        fx = torch.fft.fftfreq(w, **options)[None, :]
        product = product * torch.exp(-0.5 * (fy**2 + fx**2) / lowpass_sigma**2)
    return product


def _coarse_peaks(product: torch.Tensor, max_shift: float | None) -> torch.Tensor:
    """``(N, 2)`` integer shifts at the correlation maxima, searched within ``|shift| <= max_shift``."""
    n, h, w = product.shape
    surface = torch.fft.ifft2(product).real
    if max_shift is not None:
        rows = _signed(torch.arange(h, device=product.device), h).abs()[:, None]
        cols = _signed(torch.arange(w, device=product.device), w).abs()[None, :]
        allowed = (rows <= math.ceil(max_shift)) & (cols <= math.ceil(max_shift))
        surface = torch.where(allowed, surface, -torch.inf)
    flat = surface.reshape(n, -1).argmax(dim=1)
    return torch.stack([_signed(flat // w, h), _signed(flat % w, w)], dim=1)


def _refine(product: torch.Tensor, coarse: torch.Tensor, factor: int) -> torch.Tensor:
    """Refine ``coarse`` to ``1/factor`` px with a matrix-multiply DFT on a 1.5-px neighbourhood
    (Guizar-Sicairos et al. 2008, eq. 12: O(region · N²) instead of an FFT of size (factor · N)²)."""
    n, h, w = product.shape
    region = math.ceil(1.5 * factor)
    centre = region // 2
    offset = centre - coarse * factor  # (N, 2)
    options = {"dtype": torch.float64, "device": product.device}
    grid = torch.arange(region, **options)
    fh = torch.fft.fftfreq(h, d=factor, **options)
    fw = torch.fft.fftfreq(w, d=factor, **options)
    row_k = torch.exp(2j * math.pi * (grid[None, :, None] - offset[:, 0, None, None]) * fh[None, None, :])
    col_k = torch.exp(2j * math.pi * fw[None, :, None] * (grid[None, None, :] - offset[:, 1, None, None]))
    fine_surface = (row_k @ product @ col_k).real.reshape(n, -1).argmax(dim=1)
    fine = torch.stack([fine_surface // region, fine_surface % region], dim=1).to(torch.float64)
    return coarse + (fine - centre) / factor


def _centred(stack: torch.Tensor) -> torch.Tensor:
    """``(N, C, h, w)`` float64 with NaN replaced by the band mean, each band zero-mean."""
    finite = torch.isfinite(stack)
    means = torch.where(finite, stack, 0).sum(dim=(-2, -1), keepdim=True) / finite.sum(
        dim=(-2, -1), keepdim=True
    )
    return torch.where(finite, stack, means) - means


def estimate_shifts(
    reference: torch.Tensor,
    moving: torch.Tensor,
    *,
    upsample_factor: int = DEFAULT_UPSAMPLE_FACTOR,
    max_shift: float | None = DEFAULT_MAX_SHIFT_PX,
    lowpass_sigma: float | None = DEFAULT_LOWPASS_SIGMA,
) -> torch.Tensor:
    """``(N, 2)`` sub-pixel ``(dy, dx)`` of each ``moving`` against its ``reference`` (``(N, C, h, w)``).

    The one phase correlation of the project (module docstring), batched on any device: the
    cross-sensor co-registration calls it through :func:`estimate_shift`, the blur search
    (:mod:`dataset_builder.fit.blur_search`) on batches of pairs. NaN is replaced by the band mean.
    ``max_shift`` bounds the integer peak search (``ceil(max_shift)``) and clips the result; ``None``
    searches the whole circular surface. ``lowpass_sigma=None`` gives pure phase correlation.
    """
    if upsample_factor < 1:
        raise ValueError(f"upsample_factor must be >= 1, found {upsample_factor}")
    ref = _centred(reference.to(torch.float64))
    mov = _centred(moving.to(torch.float64))
    product = _cross_power(ref, mov, lowpass_sigma)
    shift = _coarse_peaks(product, max_shift)
    if upsample_factor > 1:
        shift = _refine(product, shift, upsample_factor)
    return shift if max_shift is None else shift.clamp(-max_shift, max_shift)


def estimate_shift(
    reference: np.ndarray,
    moving: np.ndarray,
    *,
    upsample_factor: int = DEFAULT_UPSAMPLE_FACTOR,
    max_shift: float | None = DEFAULT_MAX_SHIFT_PX,
    band: int | None = None,
    lowpass_sigma: float | None = DEFAULT_LOWPASS_SIGMA,
) -> tuple[float, float]:
    """Estimate the sub-pixel ``(dy, dx)`` displacement of ``moving`` relative to ``reference``.

    Args:
        reference, moving: ``(H, W)`` or ``(C, H, W)`` arrays of the same shape (NaN is replaced by
            the band mean). Bands are combined by summing their cross-power spectra.
        upsample_factor: the refinement grid is ``1 / upsample_factor`` pixel.
        max_shift: search the integer peak within ``|dy|, |dx| <= ceil(max_shift)`` only, and clip the
            refined result to ``±max_shift``; ``None`` searches the whole (circular) correlation surface.
        band: use this band only instead of all bands.
        lowpass_sigma: Gaussian frequency weight, cycles/pixel (see :data:`DEFAULT_LOWPASS_SIGMA`);
            ``None`` gives pure phase correlation.

    Returns:
        ``(dy, dx)`` such that ``moving ≈ scipy.ndimage.shift(reference, (dy, dx))``.

    >>> import numpy as np
    >>> from scipy import ndimage
    >>> ref = ndimage.gaussian_filter(np.random.default_rng(0).random((64, 64)), 2)
    >>> dy, dx = estimate_shift(ref, ndimage.shift(ref, (1.3, -0.6), mode="nearest"))
    >>> round(dy, 1), round(dx, 1)
    (1.3, -0.6)
    """
    ref = _as_stack(reference, "reference")
    mov = _as_stack(moving, "moving")
    if ref.shape != mov.shape:
        raise InvalidImageError(f"reference {ref.shape} and moving {mov.shape} must have the same shape")
    if band is not None:
        ref, mov = ref[band : band + 1], mov[band : band + 1]
    shift = estimate_shifts(
        torch.from_numpy(ref)[None],
        torch.from_numpy(mov)[None],
        upsample_factor=upsample_factor,
        max_shift=max_shift,
        lowpass_sigma=lowpass_sigma,
    )[0]
    return float(shift[0]), float(shift[1])


def apply_shift(image: np.ndarray, shift: tuple[float, float], *, order: int = 3) -> np.ndarray:
    """Translate ``image`` (``(H, W)`` or ``(C, H, W)``) by ``(dy, dx)`` pixels (spline interpolation).

    Content moves by ``+shift``: ``out[y, x] = image[y - dy, x - dx]``. Pixels that come from outside
    the image repeat the nearest edge pixel (``mode="nearest"``), so the outer ``ceil(|shift|)``
    rows/columns are extrapolated. NaN pixels are filled with the band mean before interpolating.
    """
    from scipy import ndimage  # here: a synthetic-only build (e.g. on a GPU machine) needs no scipy

    array = np.asarray(image)
    stack = array[None] if array.ndim == 2 else array
    means = np.nanmean(stack, axis=(1, 2), keepdims=True)
    filled = np.where(np.isfinite(stack), stack, means)
    out = np.stack(
        [ndimage.shift(b, shift, order=order, mode="nearest", prefilter=order > 1) for b in filled]
    )
    out = out.astype(array.dtype if array.dtype.kind == "f" else np.float32)
    return out[0] if array.ndim == 2 else out


def coregister(
    moving: np.ndarray,
    reference: np.ndarray,
    *,
    max_shift: float | None = DEFAULT_MAX_SHIFT_PX,
    upsample_factor: int = DEFAULT_UPSAMPLE_FACTOR,
    band: int | None = None,
) -> Alignment:
    """Align ``moving`` onto ``reference`` and measure what misalignment is left.

    The shift is estimated within ``max_shift`` (see :data:`DEFAULT_MAX_SHIFT_PX`), removed with
    :func:`apply_shift`, and then re-estimated between the aligned image and the reference with an
    unbounded search: the magnitude of that second estimate is the residual misalignment. A true
    offset beyond ``max_shift`` cannot be removed and shows up as a large residual.
    """
    dy, dx = estimate_shift(
        reference, moving, upsample_factor=upsample_factor, max_shift=max_shift, band=band
    )
    aligned = apply_shift(moving, (-dy, -dx))
    ry, rx = estimate_shift(reference, aligned, upsample_factor=upsample_factor, max_shift=None, band=band)
    return Alignment(aligned=aligned, shift=(dy, dx), residual=float(math.hypot(ry, rx)))
