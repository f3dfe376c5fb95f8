"""What :class:`~sen2naip_hub.training.TrainingPairs` draws around the learned degradation, within which
ranges (each a named constant with its source; the table is in :mod:`sen2naip_hub.training`), and from
which generator: :func:`step_generator` seeds one ``torch.Generator`` per (seed, step, DataLoader worker).

Needs torch and numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import torch

from sen2naip_hub.errors import Sen2NaipError
from sen2naip_hub.sensors import N_BANDS

__all__ = [
    "HARMONIZATION_CHOICES",
    "NOISE_SCALE_RANGE",
    "SHIFT_MAX_LR_PX",
    "SIGMA_TOLERANCE_HR_PX",
    "Randomization",
    "TrainingPairError",
    "step_generator",
    "step_seed",
]

#: Per band (R, G, B, NIR), the (below, above) offsets of σ from the model's σ, in HR pixels: the
#: interval where the blur fit's MAE error curve stays within the published noise's mean |noise|
#: (:mod:`sen2naip_hub.training`'s docstring; measured on the real NAIP sample, recomputed by
#: tests/test_training_pairs.py).
SIGMA_TOLERANCE_HR_PX: tuple[tuple[float, float], ...] = (
    (-0.40, 0.55),
    (-0.45, 0.65),
    (-0.55, 0.95),
    (-0.30, 0.40),
)
#: Factor on the learned noise draw: 0.20 = the lowest measured/published noise std ratio on the real
#: Sentinel-2 sample (benchmarks/RESULTS.md, "The noise model learned from real Sentinel-2"); 1.0 = the
#: published table.
NOISE_SCALE_RANGE: tuple[float, float] = (0.2, 1.0)
#: Largest misregistration of LR against HR, LR pixels (radius): SEN2NAIP's QA1 keeps pairs whose
#: residual misalignment is ≤ 1 LR px (Aybar et al. 2024; the builder's ``QA1_MAX_RESIDUAL_LR_PX``).
SHIFT_MAX_LR_PX: float = 1.0
#: Harmonization modes a sample can draw, in the order
#: :attr:`sen2naip_hub.training.Draws.harmonization` indexes them.
HARMONIZATION_CHOICES: tuple[str, ...] = ("global", "local", "none")
#: Default odds of each harmonization mode: equal.
DEFAULT_HARMONIZATION_ODDS: Mapping[str, float] = MappingProxyType(dict.fromkeys(HARMONIZATION_CHOICES, 1.0))


class TrainingPairError(Sen2NaipError, ValueError):
    """A randomisation setting out of range, or a model that cannot make the requested pairs."""


def _check_range(name: str, low: float, high: float, floor: float = -math.inf) -> None:
    if not (math.isfinite(low) and math.isfinite(high) and floor <= low <= high):
        raise TrainingPairError(f"{name}: expected finite low <= high (low >= {floor}), got ({low}, {high})")


@dataclass(frozen=True)
class Randomization:
    """What is drawn around the learned degradation, per sample.

    Args:
        sigma_tolerance: per band ``(below, above)`` σ offsets, HR px (``below <= 0 <= above``).
        noise_scale: ``(low, high)`` factor on the learned noise draw; ``(0, 0)`` adds no noise.
        shift_lr_px: radius of the misregistration disc, LR px (0: none).
        harmonization: odds of ``global`` / ``local`` / ``none`` (need not sum to 1; missing = 0).

    >>> Randomization.published().noise_scale
    (1.0, 1.0)
    """

    sigma_tolerance: tuple[tuple[float, float], ...] = SIGMA_TOLERANCE_HR_PX
    noise_scale: tuple[float, float] = NOISE_SCALE_RANGE
    shift_lr_px: float = SHIFT_MAX_LR_PX
    harmonization: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_HARMONIZATION_ODDS))

    def __post_init__(self) -> None:
        if len(self.sigma_tolerance) != N_BANDS:
            raise TrainingPairError(
                f"sigma_tolerance: expected {N_BANDS} (below, above) pairs, got {self.sigma_tolerance}"
            )
        for band, (below, above) in enumerate(self.sigma_tolerance):
            _check_range(f"sigma_tolerance[{band}]", below, above)
            if below > 0 or above < 0:
                raise TrainingPairError(
                    f"sigma_tolerance[{band}]: expected below <= 0 <= above, got {(below, above)}"
                )
        _check_range("noise_scale", *self.noise_scale, floor=0.0)
        if not (math.isfinite(self.shift_lr_px) and self.shift_lr_px >= 0):
            raise TrainingPairError(f"shift_lr_px: expected a finite value >= 0, got {self.shift_lr_px}")
        unknown = set(self.harmonization) - set(HARMONIZATION_CHOICES)
        odds = list(self.harmonization.values())
        if unknown or any(not math.isfinite(p) or p < 0 for p in odds) or sum(odds) <= 0:
            raise TrainingPairError(
                f"harmonization: expected non-negative odds of {HARMONIZATION_CHOICES} with a positive sum, "
                f"got {dict(self.harmonization)}"
            )

    @classmethod
    def published(cls, harmonization: str = "global") -> Randomization:
        """No randomisation: the published degradation (σ fixed, full noise, no shift, one mode)."""
        return cls(((0.0, 0.0),) * N_BANDS, (1.0, 1.0), 0.0, {harmonization: 1.0})

    def odds(self) -> torch.Tensor:
        """``(3,)`` float64 probabilities of :data:`HARMONIZATION_CHOICES`."""
        odds = torch.tensor([float(self.harmonization.get(m, 0.0)) for m in HARMONIZATION_CHOICES])
        return (odds / odds.sum()).double()

    @property
    def needs_harmonization(self) -> bool:
        """True when a sample may draw ``global`` or ``local`` (the U-Net is needed)."""
        return any(self.harmonization.get(m, 0.0) > 0 for m in HARMONIZATION_CHOICES[:2])


# ------------------------------------------------------------------------------------------ seeding
def step_seed(seed: int, step: int, worker: int | None = None) -> int:
    """A 63-bit seed for ``(seed, step, worker)``, mixed by numpy's ``SeedSequence`` (nearby inputs give
    unrelated seeds). ``worker`` None: the current DataLoader worker's id, or the main process.

    >>> step_seed(0, 1, 0) == step_seed(0, 1, 0) != step_seed(0, 1, 1)
    True
    """
    if worker is None:
        info = torch.utils.data.get_worker_info()
        worker = -1 if info is None else info.id
    values = (seed, step, worker)
    if any(not isinstance(v, int | np.integer) for v in values) or min(seed, step) < 0 or worker < -1:
        raise TrainingPairError(
            f"expected integers seed >= 0, step >= 0, worker >= -1 (the main process), got {values}"
        )
    entropy = [int(seed), int(step), int(worker) + 1]
    state = np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0]
    return int(state >> np.uint64(1))


def step_generator(
    seed: int, step: int, device: str | torch.device = "cpu", worker: int | None = None
) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded by :func:`step_seed` ``(seed, step, worker)``."""
    return torch.Generator(device=device).manual_seed(step_seed(seed, step, worker))
