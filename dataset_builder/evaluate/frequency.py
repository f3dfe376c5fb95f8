"""Radial power spectra and the share of energy near Nyquist (an MTF proxy).

Per image and band: NaN filled with the band mean, mean removed, a 2-D Hann window, ``|FFT|²`` divided
by the window's energy (a power density, comparable across image sizes). Averaged over images, per
radial frequency bin (cycles per pixel, :data:`EVALUATE_SPECTRUM_BINS` bins on [0, 0.5]); frequencies
past 0.5 (the corners) are left out. The Nyquist share is the energy in
:data:`EVALUATE_NYQUIST_BAND` over the energy of all frequencies above zero: blur lowers it, noise
raises it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dataset_builder.core.facts import EVALUATE_NYQUIST_BAND, EVALUATE_SPECTRUM_BINS

__all__ = ["RadialSpectrum", "radial_spectrum", "spectrum_comparison"]

#: Added to a power before taking a log ratio (power densities of reflectance images are ≥ ~1e-12).
_TINY_POWER: float = 1e-20


@dataclass(frozen=True)
class RadialSpectrum:
    """``power`` ``(4, bins)`` mean power density per radial bin; ``frequency`` ``(bins,)`` bin centres
    (cycles/px); ``nyquist_share`` ``(4,)`` energy share of the near-Nyquist annulus."""

    frequency: np.ndarray
    power: np.ndarray
    nyquist_share: np.ndarray


def _image_spectrum(image: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Per band mean power per radial bin ``(4, bins)`` and near-Nyquist energy share ``(4,)``."""
    data = image.astype(np.float64)
    means = np.nanmean(data, axis=(1, 2), keepdims=True)
    data = np.where(np.isfinite(data), data, means) - means
    h, w = data.shape[1:]
    window = np.outer(np.hanning(h), np.hanning(w))
    power = np.abs(np.fft.fft2(data * window)) ** 2 / (window**2).sum()
    radius = np.hypot(*np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij"))
    inside = (radius > 0) & (radius <= 0.5)
    index = np.minimum((radius[inside] / 0.5 * bins).astype(int), bins - 1)
    counts = np.maximum(np.bincount(index, minlength=bins), 1)
    flat = power[:, inside]
    radial = np.stack([np.bincount(index, weights=band, minlength=bins) / counts for band in flat])
    low, high = EVALUATE_NYQUIST_BAND
    near = (radius[inside] >= low) & (radius[inside] <= high)
    share = flat[:, near].sum(axis=1) / np.maximum(flat.sum(axis=1), _TINY_POWER)
    return radial, share


def radial_spectrum(images: Sequence[np.ndarray], bins: int = EVALUATE_SPECTRUM_BINS) -> RadialSpectrum:
    """The mean radial power spectrum and Nyquist share of ``images`` (each ``(4, H, W)``)."""
    parts = [_image_spectrum(image, bins) for image in images]
    power = np.mean([p for p, _ in parts], axis=0)
    share = np.mean([s for _, s in parts], axis=0)
    frequency = (np.arange(bins) + 0.5) * 0.5 / bins
    return RadialSpectrum(frequency, power, share)


def spectrum_comparison(
    candidate: RadialSpectrum, reference: RadialSpectrum
) -> dict[str, list[float] | float]:
    """Per band: the mean ``|ln(P_cand / P_ref)|`` over radial bins, the Nyquist shares and their ratio."""
    log_ratio = np.log((candidate.power + _TINY_POWER) / (reference.power + _TINY_POWER))
    share_ratio = candidate.nyquist_share / np.maximum(reference.nyquist_share, _TINY_POWER)
    return {
        "frequency": candidate.frequency.tolist(),
        "candidate_power": candidate.power.tolist(),
        "reference_power": reference.power.tolist(),
        "log_ratio_mean_abs": np.abs(log_ratio).mean(axis=1).tolist(),
        "candidate_nyquist_share": candidate.nyquist_share.tolist(),
        "reference_nyquist_share": reference.nyquist_share.tolist(),
        "nyquist_ratio": share_ratio.tolist(),
    }
