"""``evaluate_sets``: every metric of a candidate set against a reference set, and their ``distance``."""

from __future__ import annotations

import os

from dataset_builder.evaluate.distance import distance_terms, weighted_distance
from dataset_builder.evaluate.distributions import band_statistics, pooled_pixels, spectral_angle_statistics
from dataset_builder.evaluate.frequency import radial_spectrum, spectrum_comparison
from dataset_builder.evaluate.noise import (
    check_noise_sizes,
    load_denoiser,
    noise_comparison,
    noise_levels,
    reference_denoiser,
)
from dataset_builder.evaluate.paired import check_pairs, paired_metrics
from dataset_builder.evaluate.sources import EvaluationError, ImageSet
from dataset_builder.fit.denoiser import BlindDenoiser

__all__ = ["evaluate_sets"]


def _check_pixels(images: ImageSet, pixels) -> None:
    if len(pixels) == 0:
        raise EvaluationError(f"{images.source}: no valid pixel (every pixel is nodata in some band)")


def _denoiser(denoiser, reference: ImageSet, steps: int | None, seed: int) -> BlindDenoiser:
    if isinstance(denoiser, BlindDenoiser):
        return denoiser
    if denoiser is not None:
        return load_denoiser(denoiser)
    return reference_denoiser(reference.images, steps, seed)


def evaluate_sets(
    candidate: ImageSet,
    reference: ImageSet,
    *,
    denoiser: BlindDenoiser | str | os.PathLike | None = None,
    denoiser_steps: int | None = None,
    seed: int = 0,
) -> dict:
    """Distribution metrics (always), paired metrics (when names match), the terms and ``distance``.

    ``denoiser``: a :class:`BlindDenoiser` or a ``denoiser.safetensors`` (or its folder) for the noise
    metric; without it one is trained on ``reference`` (``denoiser_steps`` steps, seeded by ``seed``).
    Sizes are checked before any heavy work. Keys starting with ``plot_`` hold arrays for the plot only.
    """
    check_pairs(candidate, reference)
    check_noise_sizes(candidate.images, candidate.source)
    check_noise_sizes(reference.images, reference.source)
    cand_pixels, ref_pixels = pooled_pixels(candidate.images, seed), pooled_pixels(reference.images, seed)
    _check_pixels(candidate, cand_pixels)
    _check_pixels(reference, ref_pixels)
    angles = spectral_angle_statistics(cand_pixels, ref_pixels)
    model = _denoiser(denoiser, reference, denoiser_steps, seed)
    metrics = {
        "candidate": {"source": candidate.source, "images": len(candidate)},
        "reference": {"source": reference.source, "images": len(reference)},
        "bands": band_statistics(cand_pixels, ref_pixels),
        "spectral_angle": {k: v for k, v in angles.items() if not k.endswith("_angles")},
        "power_spectrum": spectrum_comparison(
            radial_spectrum(candidate.images), radial_spectrum(reference.images)
        ),
        "noise": noise_comparison(
            noise_levels(candidate.images, model), noise_levels(reference.images, model)
        ),
        "paired": paired_metrics(candidate, reference),
    }
    terms = distance_terms(metrics)
    distance, used = weighted_distance(terms)
    metrics["plot_pixels"] = {"candidate": cand_pixels, "reference": ref_pixels}
    metrics["plot_angles"] = {
        "candidate": angles["candidate_angles"],
        "reference": angles["reference_angles"],
    }
    return {"distance": distance, "terms": terms, "terms_used": used, **metrics}
