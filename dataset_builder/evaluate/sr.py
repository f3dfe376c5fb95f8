"""``evaluate_sr``: consistency of super-resolved images with their LR inputs through the learned δ.

Each SR image (Sentinel-2 radiometry, ``scale`` times the LR size) is degraded with the learned
degradation (:class:`sen2naip_hub.models.Degradation`) and compared with its LR input (paired by file
name): per-band reflectance L1, the mean spectral angle (degrees, :func:`sen2naip_hub.metrics.spectral_angle`)
and the residual shift (:func:`dataset_builder.cross_sensor.align.estimate_shift`). Harmonization and
noise are off by default: SR outputs are already in Sentinel-2 radiometry, and noise would only add a
random floor. With HR images (same names, the SR's size), per-band PSNR and SSIM of SR against HR.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from dataset_builder.cross_sensor.align import estimate_shift
from dataset_builder.evaluate.paired import band_scores
from dataset_builder.evaluate.sources import EvaluationError, ImageSet, pair_by_name
from sen2naip_hub.errors import InvalidImageError
from sen2naip_hub.metrics import spectral_angle

__all__ = ["evaluate_sr"]


def _degrade(model, name: str, sr: np.ndarray, harmonization: str, device: str) -> np.ndarray:
    hr = torch.from_numpy(sr[None].astype(np.float32)).to(device)
    try:
        with torch.no_grad():
            lr = model(hr, harmonization=harmonization, noise=False).lr
    except InvalidImageError as err:
        raise EvaluationError(f"{name}: the SR image cannot be degraded ({err})") from err
    return lr[0].cpu().numpy()


def _consistency(degraded: np.ndarray, lr: np.ndarray) -> dict:
    valid = np.isfinite(degraded).all(0) & np.isfinite(lr).all(0)
    l1 = [float(np.abs(degraded[b][valid] - lr[b][valid]).mean()) for b in range(lr.shape[0])]
    angle = torch.rad2deg(spectral_angle(torch.from_numpy(degraded), torch.from_numpy(lr))).numpy()
    shift = estimate_shift(lr, degraded)
    return {
        "l1": l1,
        "spectral_angle_deg": float(np.nanmean(angle[valid])),
        "shift": [float(shift[0]), float(shift[1])],
    }


def _check_sizes(name: str, sr: np.ndarray, lr: np.ndarray, scale: int) -> None:
    expected = (lr.shape[1] * scale, lr.shape[2] * scale)
    if sr.shape[1:] != expected:
        raise EvaluationError(
            f"{name}: the SR image is {sr.shape[1]}×{sr.shape[2]} px but its LR input is "
            f"{lr.shape[1]}×{lr.shape[2]} px; expected SR of {expected[0]}×{expected[1]} px (×{scale})"
        )


def evaluate_sr(
    sr: ImageSet,
    lr: ImageSet,
    model,
    hr: ImageSet | None = None,
    *,
    harmonization: str = "none",
    device: str = "cpu",
) -> dict:
    """Per pair and averaged: consistency with LR, and PSNR/SSIM against HR when ``hr`` is given."""
    names = pair_by_name(sr, lr)
    if not names:
        raise EvaluationError(f"no file of {sr.source} has a namesake in {lr.source}: nothing to compare")
    srs, lrs = sr.by_name(), lr.by_name()
    hrs = hr.by_name() if hr is not None else {}
    model = model.to(device)
    per_pair = {}
    for name in names:
        _check_sizes(name, srs[name], lrs[name], model.scale)
        result = _consistency(_degrade(model, name, srs[name], harmonization, device), lrs[name])
        if name in hrs:
            if hrs[name].shape != srs[name].shape:
                raise EvaluationError(
                    f"{name}: the SR image is {srs[name].shape[1]}×{srs[name].shape[2]} px but the HR is "
                    f"{hrs[name].shape[1]}×{hrs[name].shape[2]} px; paired files must have the same size"
                )
            result["against_hr"] = band_scores(srs[name], hrs[name])
        per_pair[name] = result
    shifts = np.asarray([per_pair[n]["shift"] for n in names])
    out = {
        "sr": {"source": sr.source, "images": len(sr)},
        "lr": {"source": lr.source, "images": len(lr)},
        "pairs": len(names),
        "harmonization": harmonization,
        "l1": np.mean([per_pair[n]["l1"] for n in names], axis=0).tolist(),
        "spectral_angle_deg": float(np.mean([per_pair[n]["spectral_angle_deg"] for n in names])),
        "shift_mean_abs_px": float(np.hypot(shifts[:, 0], shifts[:, 1]).mean()),
        "per_pair": per_pair,
    }
    with_hr = [n for n in names if "against_hr" in per_pair[n]]
    if hr is not None:
        if not with_hr:
            raise EvaluationError(f"no file of {sr.source} has a namesake in {hr.source}")
        out["hr"] = {"source": hr.source, "pairs": len(with_hr)}
        for key in ("psnr", "ssim"):
            values = np.asarray([per_pair[n]["against_hr"][key] for n in with_hr])
            out[key] = [float(v) if math.isfinite(v) else math.inf for v in values.mean(axis=0)]
    return out
