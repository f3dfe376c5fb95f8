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
from scipy import ndimage

from sen2naip_hub.errors import InvalidImageError

__all__ = [
    "DEFAULT_LOWPASS_SIGMA",
    "DEFAULT_MAX_SHIFT_PX",
    "DEFAULT_UPSAMPLE_FACTOR",
    "Alignment",
    "apply_shift",
    "coregister",
    "estimate_shift",
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
    """``(H, W)`` or ``(C, H, W)`` → float64 ``(C, H, W)``, NaN-free, each band zero-mean."""
    array = np.asarray(image, dtype=np.float64)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or min(array.shape[1:]) < 8:
        raise InvalidImageError(f"{name}: expected (H, W) or (C, H, W) with H, W >= 8, found {image.shape}")
    if not np.isfinite(array).any(axis=(1, 2)).all():
        raise InvalidImageError(f"{name}: a band has no finite pixel")
    means = np.nanmean(array, axis=(1, 2), keepdims=True)
    return np.where(np.isfinite(array), array, means) - means


def _window(height: int, width: int) -> np.ndarray:
    """Separable Hann window: tapers the borders so the FFT's wrap-around adds no false edge."""
    return np.outer(np.hanning(height), np.hanning(width))


def _cross_power(reference: np.ndarray, moving: np.ndarray, lowpass_sigma: float | None) -> np.ndarray:
    """Normalized, low-pass weighted cross-power spectrum summed over bands (inverse FFT peaks at +shift)."""
    win = _window(*reference.shape[1:])
    ref_f = np.fft.fft2(reference * win)
    mov_f = np.fft.fft2(moving * win)
    product = (mov_f * np.conj(ref_f)).sum(axis=0)
    magnitude = np.abs(product)
    product = product / (magnitude + _PHASE_EPS * magnitude.mean() + np.finfo(float).tiny)
    if lowpass_sigma is not None:
        fy = np.fft.fftfreq(product.shape[0])[:, None]
        fx = np.fft.fftfreq(product.shape[1])[None, :]
        product = product * np.exp(-0.5 * (fy**2 + fx**2) / lowpass_sigma**2)
    return product


def _signed_index(index: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """FFT index → signed shift (indices past the midpoint are negative shifts)."""
    size = np.asarray(shape)
    return np.where(index > size // 2, index - size, index).astype(np.float64)


def _coarse_peak(product: np.ndarray, max_shift: float | None) -> np.ndarray:
    """Integer shift at the correlation maximum, searched within ``|shift| <= max_shift`` per axis."""
    surface = np.fft.ifft2(product).real
    if max_shift is not None:
        rows = np.abs(_signed_index(np.arange(surface.shape[0]), (surface.shape[0],)))
        cols = np.abs(_signed_index(np.arange(surface.shape[1]), (surface.shape[1],)))
        allowed = (rows[:, None] <= math.ceil(max_shift)) & (cols[None, :] <= math.ceil(max_shift))
        surface = np.where(allowed, surface, -np.inf)
    peak = np.array(np.unravel_index(np.argmax(surface), surface.shape))
    return _signed_index(peak, surface.shape)


def _upsampled_correlation(product: np.ndarray, region: int, factor: int, offset: np.ndarray) -> np.ndarray:
    """Inverse DFT of ``product`` on a ``region``² grid of step ``1/factor`` starting at ``-offset/factor``.

    Matrix-multiply DFT (Guizar-Sicairos et al. 2008, eq. 12): costs O(region · N²) instead of an
    FFT of size (factor · N)².
    """
    height, width = product.shape
    row_kernel = np.exp(2j * np.pi * np.outer(np.arange(region) - offset[0], np.fft.fftfreq(height, factor)))
    col_kernel = np.exp(2j * np.pi * np.outer(np.fft.fftfreq(width, factor), np.arange(region) - offset[1]))
    return row_kernel @ product @ col_kernel


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
    if upsample_factor < 1:
        raise ValueError(f"upsample_factor must be >= 1, found {upsample_factor}")
    if band is not None:
        ref, mov = ref[band : band + 1], mov[band : band + 1]
    product = _cross_power(ref, mov, lowpass_sigma)
    shift = _coarse_peak(product, max_shift)
    if upsample_factor > 1:
        region = math.ceil(1.5 * upsample_factor)
        centre = region // 2
        offset = centre - shift * upsample_factor
        surface = _upsampled_correlation(product, region, upsample_factor, offset).real
        fine = np.array(np.unravel_index(np.argmax(surface), surface.shape), dtype=np.float64)
        shift = shift + (fine - centre) / upsample_factor
    if max_shift is not None:
        shift = np.clip(shift, -max_shift, max_shift)
    return float(shift[0]), float(shift[1])


def apply_shift(image: np.ndarray, shift: tuple[float, float], *, order: int = 3) -> np.ndarray:
    """Translate ``image`` (``(H, W)`` or ``(C, H, W)``) by ``(dy, dx)`` pixels (spline interpolation).

    Content moves by ``+shift``: ``out[y, x] = image[y - dy, x - dx]``. Pixels that come from outside
    the image repeat the nearest edge pixel (``mode="nearest"``), so the outer ``ceil(|shift|)``
    rows/columns are extrapolated. NaN pixels are filled with the band mean before interpolating.
    """
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
