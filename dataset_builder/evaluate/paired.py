"""Paired metrics for images that pair by name: per-band L1, PSNR and SSIM after sub-pixel alignment.

The candidate is aligned onto the reference with the project's phase correlation
(:func:`dataset_builder.cross_sensor.align.estimate_shift`, :func:`~.align.apply_shift`); the
``ceil(|shift|) + 1`` outer pixels, which the shift extrapolates, are left out of the scores. PSNR and
SSIM use a reflectance range of :data:`EVALUATE_DATA_RANGE` (SSIM: scikit-image's
``structural_similarity``, Wang et al. 2004, 7×7 window).
"""

from __future__ import annotations

import math

import numpy as np
from skimage.metrics import structural_similarity

from dataset_builder.core.facts import EVALUATE_DATA_RANGE
from dataset_builder.cross_sensor.align import apply_shift, estimate_shift
from dataset_builder.evaluate.sources import EvaluationError, ImageSet, pair_by_name
from sen2naip_hub.sensors import N_BANDS

__all__ = ["band_scores", "check_pairs", "paired_metrics"]


def _check_same_size(name: str, candidate: np.ndarray, reference: np.ndarray, what: str) -> None:
    if candidate.shape != reference.shape:
        raise EvaluationError(
            f"{name}: the {what} is {candidate.shape[1]}×{candidate.shape[2]} px but its pair is "
            f"{reference.shape[1]}×{reference.shape[2]} px; paired files must have the same size"
        )


def band_scores(candidate: np.ndarray, reference: np.ndarray) -> dict[str, list[float]]:
    """Per band L1 (reflectance), PSNR (dB) and SSIM of two ``(4, H, W)`` images (NaN pixels left out
    of L1 and PSNR, filled with the reference band mean for SSIM)."""
    out: dict[str, list[float]] = {"l1": [], "psnr": [], "ssim": []}
    for band in range(N_BANDS):
        c, r = candidate[band].astype(np.float64), reference[band].astype(np.float64)
        valid = np.isfinite(c) & np.isfinite(r)
        diff = c[valid] - r[valid]
        mse = float((diff**2).mean()) if diff.size else math.nan
        out["l1"].append(float(np.abs(diff).mean()) if diff.size else math.nan)
        out["psnr"].append(10 * math.log10(EVALUATE_DATA_RANGE**2 / mse) if mse > 0 else math.inf)
        fill = float(r[valid].mean()) if diff.size else 0.0
        out["ssim"].append(
            float(
                structural_similarity(
                    np.where(valid, c, fill), np.where(valid, r, fill), data_range=EVALUATE_DATA_RANGE
                )
            )
        )
    return out


def _aligned(name: str, candidate: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Candidate shifted onto the reference, both cropped of the extrapolated border, and the shift."""
    shift = estimate_shift(reference, candidate)
    moved = apply_shift(candidate, (-shift[0], -shift[1]))
    border = math.ceil(max(abs(shift[0]), abs(shift[1]))) + 1
    inner = (slice(None), slice(border, -border), slice(border, -border))
    return moved[inner], reference[inner], shift


def check_pairs(candidate: ImageSet, reference: ImageSet) -> list[str]:
    """The names that pair, after checking that each pair has one size (before any heavy work)."""
    names = pair_by_name(candidate, reference)
    cand, ref = candidate.by_name(), reference.by_name()
    for name in names:
        _check_same_size(name, cand[name], ref[name], "candidate")
    return names


def paired_metrics(candidate: ImageSet, reference: ImageSet) -> dict | None:
    """Per pair and averaged: ``shift`` (dy, dx, LR px) and per-band L1/PSNR/SSIM after alignment;
    ``None`` when no file names match."""
    names = check_pairs(candidate, reference)
    if not names:
        return None
    cand, ref = candidate.by_name(), reference.by_name()
    pairs = {}
    for name in names:
        moved, target, shift = _aligned(name, cand[name], ref[name])
        pairs[name] = {"shift": [float(shift[0]), float(shift[1])], **band_scores(moved, target)}
    mean = {
        key: np.nanmean([pairs[n][key] for n in names], axis=0).tolist() for key in ("l1", "psnr", "ssim")
    }
    shifts = np.asarray([pairs[n]["shift"] for n in names])
    return {
        "pairs": len(names),
        **mean,
        "shift_mean_abs_px": float(np.hypot(shifts[:, 0], shifts[:, 1]).mean()),
        "per_pair": pairs,
    }
