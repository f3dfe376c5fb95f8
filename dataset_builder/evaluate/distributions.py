"""Distribution metrics of two image sets: per-band statistics, Wasserstein distance, KS, spectral angle.

Every metric here compares the sets' pixel distributions only (no pairing): valid pixels (every band
finite) of all images are pooled per set and, past :data:`EVALUATE_MAX_PIXELS`, subsampled with a seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy import stats

from dataset_builder.core.facts import EVALUATE_MAX_PIXELS, EVALUATE_MIN_SPREAD
from sen2naip_hub.metrics import spectral_angle
from sen2naip_hub.sensors import N_BANDS

__all__ = ["band_statistics", "pooled_pixels", "spectral_angle_statistics", "spectral_angles"]


def pooled_pixels(
    images: Sequence[np.ndarray], seed: int = 0, limit: int = EVALUATE_MAX_PIXELS
) -> np.ndarray:
    """``(N, 4)`` float64 valid pixels of all ``images``; at most ``limit`` (seeded subsample)."""
    pixels = np.concatenate([im.reshape(N_BANDS, -1).T for im in images]).astype(np.float64)
    pixels = pixels[np.isfinite(pixels).all(axis=1)]
    if len(pixels) > limit:
        pick = np.random.default_rng(seed).choice(len(pixels), limit, replace=False)
        pixels = pixels[np.sort(pick)]
    return pixels


def band_statistics(candidate: np.ndarray, reference: np.ndarray) -> dict[str, list[float]]:
    """Per band: means, stds, 1-D Wasserstein distance (reflectance) and its ratio to the reference std,
    and the two-sample Kolmogorov–Smirnov statistic with its p-value."""
    keys = ("candidate_mean", "reference_mean", "candidate_std", "reference_std")
    keys += ("wasserstein", "wasserstein_rel", "ks", "ks_pvalue")
    out: dict[str, list[float]] = {key: [] for key in keys}
    for band in range(N_BANDS):
        c, r = candidate[:, band], reference[:, band]
        spread = max(float(r.std()), EVALUATE_MIN_SPREAD)
        w1 = float(stats.wasserstein_distance(c, r))
        ks = stats.ks_2samp(c, r)
        for key, value in (
            ("candidate_mean", c.mean()),
            ("reference_mean", r.mean()),
            ("candidate_std", c.std()),
            ("reference_std", r.std()),
            ("wasserstein", w1),
            ("wasserstein_rel", w1 / spread),
            ("ks", ks.statistic),
            ("ks_pvalue", ks.pvalue),
        ):
            out[key].append(float(value))
    return out


def spectral_angles(pixels: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Angle (degrees) of each pixel's band vector ``(N, 4)`` to ``direction`` ``(4,)``, through
    :func:`sen2naip_hub.metrics.spectral_angle`."""
    a = torch.from_numpy(pixels.T[:, :, None])
    b = torch.from_numpy(np.asarray(direction, dtype=np.float64)).reshape(N_BANDS, 1, 1).expand_as(a)
    angles = torch.rad2deg(spectral_angle(a, b)).reshape(-1).numpy()
    return angles[np.isfinite(angles)]


def spectral_angle_statistics(candidate: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """The distribution of each pixel's spectral angle to the reference set's mean spectrum: means
    (degrees), the Wasserstein distance (degrees) and its ratio to the reference angles' std."""
    direction = reference.mean(axis=0)
    c, r = spectral_angles(candidate, direction), spectral_angles(reference, direction)
    w1 = float(stats.wasserstein_distance(c, r)) if len(c) and len(r) else math.nan
    spread = max(float(r.std()), EVALUATE_MIN_SPREAD)
    return {
        "candidate_mean_deg": float(c.mean()),
        "reference_mean_deg": float(r.mean()),
        "wasserstein_deg": w1,
        "wasserstein_rel": w1 / spread,
        "candidate_angles": c,
        "reference_angles": r,
    }
