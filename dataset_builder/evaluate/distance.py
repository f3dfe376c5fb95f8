"""``distance``: one number saying how far a candidate set's distributions are from the reference's.

``distance = Σ_k w_k · d_k / Σ_k w_k`` over the terms below (weights :data:`EVALUATE_DISTANCE_WEIGHTS`,
all 1). Each ``d_k`` is dimensionless, ≥ 0, and exactly 0 when the two sets are identical; band terms
are averaged over the four bands:

- ``wasserstein``: per band, the 1-D Wasserstein distance of the pixel values over the reference's
  std (how far the histogram moved, in reference spreads);
- ``ks``: per band, the two-sample Kolmogorov–Smirnov statistic (largest CDF gap, in [0, 1]);
- ``std``: per band, ``|ln(std_cand / std_ref)|`` (contrast);
- ``spectral_angle``: the Wasserstein distance of the pixels' spectral angles to the reference's mean
  spectrum, over the reference angles' std (colour);
- ``power_spectrum``: per band, the mean over radial frequency bins of ``|ln(P_cand / P_ref)|`` (texture
  and blur at every scale);
- ``nyquist``: per band, ``|ln|`` of the ratio of near-Nyquist energy shares (the MTF proxy: blur, noise);
- ``noise``: the mean over reflectance bins populated in both sets of ``|ln(σ_cand / σ_ref)|``, the
  noise level measured by the project's blind denoiser.

A term that cannot be measured (``noise`` when no reflectance bin is populated in both sets) is left
out and the weights renormalised; the result lists the terms used.
"""

from __future__ import annotations

import math

import numpy as np

from dataset_builder.core.facts import EVALUATE_DISTANCE_WEIGHTS

__all__ = ["distance_terms", "weighted_distance"]


def distance_terms(metrics: dict) -> dict[str, float]:
    """The terms ``d_k`` from the metrics of :func:`dataset_builder.evaluate.run.evaluate_sets`."""
    bands, spectrum = metrics["bands"], metrics["power_spectrum"]
    return {
        "wasserstein": float(np.mean(bands["wasserstein_rel"])),
        "ks": float(np.mean(bands["ks"])),
        "std": float(
            np.mean(
                np.abs(
                    np.log(
                        np.maximum(bands["candidate_std"], 1e-12) / np.maximum(bands["reference_std"], 1e-12)
                    )
                )
            )
        ),
        "spectral_angle": float(metrics["spectral_angle"]["wasserstein_rel"]),
        "power_spectrum": float(np.mean(spectrum["log_ratio_mean_abs"])),
        "nyquist": float(np.mean(np.abs(np.log(np.maximum(spectrum["nyquist_ratio"], 1e-12))))),
        "noise": float(metrics["noise"]["log_ratio_mean_abs"]) if metrics.get("noise") else math.nan,
    }


def weighted_distance(
    terms: dict[str, float], weights: dict[str, float] = EVALUATE_DISTANCE_WEIGHTS
) -> tuple[float, list[str]]:
    """``Σ w_k d_k / Σ w_k`` over the finite terms, and the names of the terms used."""
    used = [k for k, w in weights.items() if w > 0 and math.isfinite(terms.get(k, math.nan))]
    if not used:
        return math.nan, []
    total = sum(weights[k] for k in used)
    return sum(weights[k] * terms[k] for k in used) / total, used
