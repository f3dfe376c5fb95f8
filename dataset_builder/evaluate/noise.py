"""Noise level against reflectance, measured with the project's noise estimator.

The estimator is :class:`dataset_builder.fit.denoiser.BlindDenoiser` (what ``sen2naip fit noise``
learns): residual = image − denoised(image), tabulated by the denoised reflectance with
:func:`~dataset_builder.fit.noise.accumulate_noise_table`, and its std per reflectance bin read with
:func:`~dataset_builder.fit.noise.std_comparison` (bins with ≥ ``MIN_BIN_COUNT`` pixels count).
Both sets are measured with one denoiser: a ``denoiser.safetensors`` written by ``sen2naip fit noise``,
or one trained here, seeded, on the reference set (:data:`EVALUATE_DENOISER`). NaN pixels are filled
with the band mean first (their residual is then ~0, which lowers the measured level slightly).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from dataset_builder.core.facts import EVALUATE_DENOISER
from dataset_builder.evaluate.sources import EvaluationError
from dataset_builder.fit.denoiser import BlindDenoiser, DenoiserTraining, train_denoiser
from dataset_builder.fit.noise import BORDER_PX, accumulate_noise_table, std_comparison

__all__ = ["check_noise_sizes", "load_denoiser", "noise_comparison", "noise_levels", "reference_denoiser"]


def _scenes(images: Sequence[np.ndarray]) -> list[torch.Tensor]:
    out = []
    for image in images:
        means = np.nanmean(image, axis=(1, 2), keepdims=True)
        out.append(torch.from_numpy(np.where(np.isfinite(image), image, means).astype(np.float32)))
    return out


def load_denoiser(path: str | os.PathLike) -> BlindDenoiser:
    """A :class:`BlindDenoiser` from ``denoiser.safetensors`` (a file or a ``sen2naip fit noise`` folder);
    its widths and depth are read from the weights' shapes."""
    import safetensors.torch

    path = Path(path)
    path = path / "denoiser.safetensors" if path.is_dir() else path
    if not path.is_file():
        raise EvaluationError(
            f"{path}: no such file (expected a denoiser.safetensors from `sen2naip fit noise`)"
        )
    state = safetensors.torch.load_file(str(path))
    try:
        depth = sum(1 for k in state if k.startswith("denoiser.body.") and k.endswith(".weight"))
        model = BlindDenoiser(
            int(state["estimator.features.0.weight"].shape[0]),
            int(state["denoiser.body.0.weight"].shape[0]),
            depth,
        )
        model.load_state_dict(state)
    except (KeyError, RuntimeError) as err:
        raise EvaluationError(f"{path}: not a BlindDenoiser's weights ({str(err).splitlines()[0]})") from err
    return model.eval()


def reference_denoiser(
    images: Sequence[np.ndarray], steps: int | None = None, seed: int = 0
) -> BlindDenoiser:
    """A small denoiser trained (seeded) on ``images``, with :data:`EVALUATE_DENOISER` settings."""
    scenes = _scenes(images)
    smallest = min(min(s.shape[1:]) for s in scenes)
    settings = {**EVALUATE_DENOISER, "seed": seed, "patch": min(int(EVALUATE_DENOISER["patch"]), smallest)}
    if steps is not None:
        settings["steps"] = steps
    model, _ = train_denoiser(scenes, DenoiserTraining(**settings))
    return model


def check_noise_sizes(images: Sequence[np.ndarray], source: str) -> None:
    """At least one image must be larger than twice the denoiser's border on both sides."""
    if not any(min(image.shape[1:]) > 2 * BORDER_PX for image in images):
        raise EvaluationError(
            f"{source}: every image is smaller than {2 * BORDER_PX + 1} px, too small to measure noise"
        )


def noise_levels(images: Sequence[np.ndarray], denoiser: BlindDenoiser) -> dict:
    """Noise std per reflectance bin (shared by the bands), the pixels per bin and the populated bins
    (images no larger than twice the denoiser's border are left out; see :func:`check_noise_sizes`)."""
    scenes = [s for s in _scenes(images) if min(s.shape[1:]) > 2 * BORDER_PX]
    return std_comparison(accumulate_noise_table(denoiser, scenes), None)


def noise_comparison(candidate: dict, reference: dict) -> dict:
    """Bins populated in both sets, their reflectance centres, both stds and the mean ``|ln ratio|``
    (NaN when no bin is populated in both)."""
    from sen2naip_hub.models.noise import published_noise_axes

    edges = published_noise_axes()[0].numpy()
    step = float(edges[1] - edges[0])
    centres = np.concatenate([[edges[0] - step / 2], edges + step / 2])
    common = sorted(set(candidate["populated_bins"]) & set(reference["populated_bins"]))
    c = np.asarray(candidate["shared_std"])[common]
    r = np.asarray(reference["shared_std"])[common]
    log_ratio = np.log(np.maximum(c, 1e-12) / np.maximum(r, 1e-12))
    return {
        "reflectance": centres[common].tolist(),
        "candidate_std": c.tolist(),
        "reference_std": r.tolist(),
        "log_ratio_mean_abs": float(np.abs(log_ratio).mean()) if common else float("nan"),
        "std_ratio_median": float(np.median(np.exp(log_ratio))) if common else float("nan"),
    }
