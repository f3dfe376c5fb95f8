"""On-the-fly SEN2NAIP training pairs: HR batches ``(B, 4, H, W)`` in, ``(lr, hr)`` out, on their device.

Super-resolution training needs no stored LR copy: :class:`TrainingPairs` degrades each HR batch inside
the training loop with the learned SEN2NAIP degradation (λ harmonization → δ blur + ×4 downsampling →
e noise, the library's :class:`~sen2naip_hub.models.BlurModel`, :class:`~sen2naip_hub.models.NoiseModel`
and :class:`~sen2naip_hub.models.HarmonizationModel`), randomised around it per sample. Every draw comes
from one ``torch.Generator``; :func:`step_generator` seeds one per (seed, step, DataLoader worker), so
the same seed gives the same pairs. Sources of HR batches: :mod:`sen2naip_hub.training_data`.

Randomisation ranges (each drawn uniformly, independently per sample; named constants below):

================  ==============================================  =========================================
draw              range                                           source
================  ==============================================  =========================================
blur σ per band   model σ + :data:`SIGMA_TOLERANCE_HR_PX`          the blur fit's MAE error curve (below)
                  (R −0.40/+0.55, G −0.45/+0.65, B −0.55/+0.95,
                  NIR −0.30/+0.40 HR px around 3.0/2.9/2.9/3.4)
noise scale       :data:`NOISE_SCALE_RANGE` = 0.2 … 1.0 × the      measured/published noise std on real
                  learned table's draw                             Sentinel-2 (benchmarks/RESULTS.md)
shift (LR vs HR)  a disc of radius :data:`SHIFT_MAX_LR_PX` = 1      SEN2NAIP's QA1 threshold (kept pairs are
                  LR px (4 HR px), uniform over its area           misaligned by ≤ 1 LR px)
harmonization     ``global`` / ``local`` / ``none``, equal odds     the modes of HarmonizationModel
================  ==============================================  =========================================

* **σ tolerance.** The blur fit (``dataset_builder/fit/blur_search.py``) picks each band's σ at the
  minimum of its MAE-vs-σ error curve. The tolerance is the σ interval on that curve whose MAE stays
  within the noise the degradation adds anyway: the curve of δ_σ against the published δ on the 20 real
  484-px NAIP tiles of ``../shared/sample`` (two per date; Gaussian + bilinear, grid step 0.05 px) stays
  below each band's mean |noise| of the published table (R 0.0025, G 0.0024, B 0.0026, NIR 0.0018
  reflectance) over these intervals. The sample NAIP is resampled to 5 m (smoother than SEN2NAIP's
  2.5 m), which widens the curve a little. ``tests/test_training_pairs.py`` recomputes them.
* **Noise scale.** The learned draw is multiplied by the scale. A blind denoiser fitted on the real
  Sentinel-2 of the sample measured 0.20–0.63 × the published table's std per reflectance bin (median
  0.45); the published table (1.0) is the upper end.
* **Shift.** The HR content is translated by the drawn sub-pixel shift (bilinear, reflected borders)
  before the blur, so the LR is misregistered against the returned HR as a real pair that passed QA1
  can be. Bilinear resampling smooths by at most σ = 0.5 HR px, which changes the PSF's σ by ≤ 0.04 px.

The returned ``hr`` is the input tensor itself (the SR target, not harmonized), as in the SEN2NAIP
synthetic split; ``lr`` is ``(B, 4, H/4, W/4)`` in ``hr``'s dtype and on its device.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import torch
import torch.nn.functional as F
from huggingface_hub import snapshot_download

from sen2naip_hub.errors import InvalidImageError, ModelNotFoundError, Sen2NaipError
from sen2naip_hub.models.blur import BlurModel, blur_downsample, kernel1d
from sen2naip_hub.models.noise import NoiseModel
from sen2naip_hub.sensors import N_BANDS

__all__ = [
    "HARMONIZATION_CHOICES",
    "NOISE_SCALE_RANGE",
    "SHIFT_MAX_LR_PX",
    "SIGMA_TOLERANCE_HR_PX",
    "Draws",
    "Randomization",
    "TrainingPair",
    "TrainingPairError",
    "TrainingPairs",
    "step_generator",
    "step_seed",
]

#: Per band (R, G, B, NIR), the (below, above) offsets of σ from the model's σ, in HR pixels: the
#: interval where the blur fit's MAE error curve stays within the published noise's mean |noise|
#: (module docstring; measured on the real NAIP sample, recomputed by tests/test_training_pairs.py).
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
#: residual misalignment is ≤ 1 LR px (Aybar et al. 2024; ``dataset_builder.qa.QA1_MAX_RESIDUAL_LR_PX``).
SHIFT_MAX_LR_PX: float = 1.0
#: Harmonization modes a sample can draw, in the order :attr:`Draws.harmonization` indexes them.
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


@dataclass
class Draws:
    """Per-sample draws of one batch (CPU tensors): ``sigmas`` ``(B, 4)`` HR px, ``shifts`` ``(B, 2)``
    (dy, dx) LR px, ``noise_scale`` ``(B,)``, ``harmonization`` ``(B,)`` indices into
    :data:`HARMONIZATION_CHOICES`."""

    sigmas: torch.Tensor
    shifts: torch.Tensor
    noise_scale: torch.Tensor
    harmonization: torch.Tensor


@dataclass
class TrainingPair:
    """``lr`` ``(B, 4, H/4, W/4)``, ``hr`` (the input) and the :class:`Draws`; unpacks as ``lr, hr``."""

    lr: torch.Tensor
    hr: torch.Tensor
    draws: Draws

    def __iter__(self) -> Iterator[torch.Tensor]:
        yield self.lr
        yield self.hr


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
    values = (seed, step, worker + 1)
    if any(not isinstance(v, int | np.integer) or v < 0 for v in values):
        raise TrainingPairError(f"seed, step and worker must be integers >= 0 (worker >= -1), got {values}")
    state = np.random.SeedSequence([int(v) for v in values]).generate_state(1, dtype=np.uint64)[0]
    return int(state >> np.uint64(1))


def step_generator(
    seed: int, step: int, device: str | torch.device = "cpu", worker: int | None = None
) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded by :func:`step_seed` ``(seed, step, worker)``."""
    return torch.Generator(device=device).manual_seed(step_seed(seed, step, worker))


# ------------------------------------------------------------------------------------------ pairs
class TrainingPairs(torch.nn.Module):
    """Make ``(lr, hr)`` training pairs from HR batches with the learned degradation, randomised.

    Args:
        blur: δ; its kernel family, size, downsampling and σ (the centre of the σ draws) are used.
        noise: e; its learned draw is scaled per sample.
        harmonization: λ (a :class:`~sen2naip_hub.models.HarmonizationModel`), needed only when the
            randomisation may draw ``global`` or ``local``.
        randomization: the ranges (:class:`Randomization`).

    >>> pairs = TrainingPairs(BlurModel(), NoiseModel(mode="none"),
    ...                       randomization=Randomization(harmonization={"none": 1}))
    >>> lr, hr = pairs(torch.rand(2, 4, 64, 64), step_generator(seed=0, step=0))
    >>> tuple(lr.shape)
    (2, 4, 16, 16)
    """

    def __init__(
        self,
        blur: BlurModel,
        noise: NoiseModel,
        harmonization: torch.nn.Module | None = None,
        randomization: Randomization | None = None,
    ) -> None:
        super().__init__()
        self.randomization = randomization or Randomization()
        if self.randomization.needs_harmonization and harmonization is None:
            raise TrainingPairError(
                "the randomisation draws global/local harmonization but no harmonization model was given; "
                "load one or use harmonization={'none': 1}"
            )
        lowest = [
            s + below for s, (below, _) in zip(blur.sigmas, self.randomization.sigma_tolerance, strict=True)
        ]
        if min(lowest) <= 0:
            raise TrainingPairError(
                f"sigma_tolerance reaches σ <= 0 around the model's σ {blur.sigmas}: {lowest}"
            )
        self.blur, self.noise, self.harmonization = blur, noise, harmonization
        self.eval()

    @classmethod
    def from_degradation(cls, degradation: torch.nn.Module, randomization: Randomization | None = None):
        """Pairs from a loaded :class:`~sen2naip_hub.models.Degradation`'s parts."""
        return cls(degradation.blur, degradation.noise, degradation.harmonization, randomization)

    @classmethod
    def from_pretrained(
        cls,
        path_or_repo: str | os.PathLike,
        randomization: Randomization | None = None,
        map_location: str = "cpu",
    ) -> TrainingPairs:
        """Load the parts from a ``Degradation`` repo (local folder or Hub id); ``harmonization/`` (and
        the U-Net's segmentation_models_pytorch) only when the randomisation needs it."""
        randomization = randomization or Randomization()
        parts = ["blur", "noise"] + (["harmonization"] if randomization.needs_harmonization else [])
        folder = str(path_or_repo)
        if not os.path.isdir(folder):
            try:
                folder = snapshot_download(repo_id=folder, allow_patterns=[f"{p}/*" for p in parts])
            except Exception as err:  # huggingface_hub raises several unrelated types here
                raise ModelNotFoundError(
                    f"{path_or_repo}: not a local folder nor a reachable Hub repo ({err})"
                ) from err
        missing = [p for p in parts if not os.path.isdir(os.path.join(folder, p))]
        if missing:
            raise ModelNotFoundError(
                f"{path_or_repo}: not a Degradation repo (no {', '.join(missing)}/ subfolder)"
            )
        blur = BlurModel.from_pretrained(os.path.join(folder, "blur"), map_location=map_location)
        noise = NoiseModel.from_pretrained(os.path.join(folder, "noise"), map_location=map_location)
        harmonization = None
        if "harmonization" in parts:
            from sen2naip_hub.models.harmonization import HarmonizationModel

            harmonization = HarmonizationModel.from_pretrained(
                os.path.join(folder, "harmonization"), map_location=map_location
            )
        return cls(blur, noise, harmonization, randomization)

    # -------------------------------------------------------------------------------------- draws
    def draw(self, batch: int, generator: torch.Generator | None = None) -> Draws:
        """The :class:`Draws` of ``batch`` samples from ``generator`` (on any device; one transfer)."""
        rand = self.randomization
        device = generator.device if generator is not None else torch.device("cpu")
        uniform = torch.rand(batch, N_BANDS + 4, generator=generator, device=device, dtype=torch.float64)
        modes = torch.multinomial(rand.odds().to(device), batch, replacement=True, generator=generator)
        uniform, modes = uniform.cpu(), modes.cpu()
        tol = torch.tensor(rand.sigma_tolerance, dtype=torch.float64)
        centre = torch.tensor(self.blur.sigmas, dtype=torch.float64)
        sigmas = centre + tol[:, 0] + uniform[:, :N_BANDS] * (tol[:, 1] - tol[:, 0])
        radius = rand.shift_lr_px * uniform[:, N_BANDS].sqrt()  # uniform over the disc's area
        angle = 2 * math.pi * uniform[:, N_BANDS + 1]
        shifts = torch.stack([radius * torch.sin(angle), radius * torch.cos(angle)], dim=1)
        low, high = rand.noise_scale
        scale = low + uniform[:, N_BANDS + 2] * (high - low)
        return Draws(sigmas=sigmas, shifts=shifts, noise_scale=scale, harmonization=modes)

    # -------------------------------------------------------------------------------------- pairs
    @torch.no_grad()
    def forward(self, hr: torch.Tensor, generator: torch.Generator | None = None) -> TrainingPair:
        """Degrade ``hr`` ``(B, 4, H, W)`` reflectance in [0, 1] (H, W multiples of the scale, no NaN).

        ``generator`` (any device; e.g. :func:`step_generator`) is the source of every draw: the
        parameters and the noise. Without one, torch's global generator is used (not reproducible).
        """
        self.check_inputs(hr)
        draws = self.draw(hr.shape[0], generator)
        work = torch.float64 if hr.dtype == torch.float64 else torch.float32
        x = self.harmonize(hr.to(work), draws.harmonization)
        x = shift_content(x, draws.shifts * self.blur.scale)
        lr = self.degrade(x, draws.sigmas)
        lr = self.add_noise(lr, draws.noise_scale, generator)
        return TrainingPair(lr=lr.to(hr.dtype), hr=hr, draws=draws)

    def harmonize(self, x: torch.Tensor, modes: torch.Tensor) -> torch.Tensor:
        """λ per sample: ``modes`` ``(B,)`` indexes :data:`HARMONIZATION_CHOICES`; one U-Net pass for all
        samples that need it, then each mode's matching on its samples."""
        need = modes != HARMONIZATION_CHOICES.index("none")
        if not bool(need.any()):
            return x
        out = x.clone()
        index = need.nonzero()[:, 0].to(x.device)
        sub = x.index_select(0, index).float()
        target = self.harmonization.predict_target(sub, dtype=None)
        for mode_index, mode in enumerate(HARMONIZATION_CHOICES[:2]):
            chosen = (modes[need] == mode_index).nonzero()[:, 0].to(x.device)
            if chosen.numel():
                matched = self.harmonization.match(sub[chosen], target[chosen], None, mode)
                out[index[chosen]] = matched.to(x.dtype)
        return out

    def degrade(self, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
        """δ with one σ per sample and band (``sigmas`` ``(B, 4)``): the library's
        :func:`~sen2naip_hub.models.blur.blur_downsample`, each (sample, band) a group of its own."""
        batch, bands, height, width = x.shape
        blur = self.blur
        if bool((sigmas == torch.tensor(blur.sigmas, dtype=sigmas.dtype)).all()):
            return blur(x)  # the published δ exactly (its cached operator matrices)
        kernels = kernel1d(blur.kernel, sigmas.reshape(-1), blur.kernel_size)
        flat = x.reshape(1, batch * bands, height, width)
        lr = blur_downsample(flat, kernels, blur.downsample, blur.scale)
        return lr.reshape(batch, bands, *lr.shape[-2:])

    def add_noise(
        self, lr: torch.Tensor, scale: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        """``lr`` + the noise model's draw × each sample's ``scale``."""
        if self.noise.mode == "none" or not bool(scale.any()):
            return lr
        noise = self.noise.sample(lr, generator)
        return lr + noise * scale.to(device=lr.device, dtype=lr.dtype)[:, None, None, None]

    def check_inputs(self, hr: torch.Tensor) -> None:
        """Fail early, naming the value found and what was expected (one host sync for the range)."""
        scale = self.blur.scale
        if not isinstance(hr, torch.Tensor) or hr.ndim != 4 or hr.shape[1] != N_BANDS:
            shape = tuple(hr.shape) if isinstance(hr, torch.Tensor) else type(hr).__name__
            raise InvalidImageError(f"expected a (B, {N_BANDS}, H, W) HR tensor (R, G, B, NIR), got {shape}")
        if not hr.is_floating_point():
            raise InvalidImageError(f"expected float reflectance in [0, 1], got dtype {hr.dtype}")
        height, width = hr.shape[-2:]
        if height % scale or width % scale or min(height, width) <= self.blur.kernel_size:
            raise InvalidImageError(
                f"HR of {height}×{width} px: expected sides that are multiples of {scale} and larger than "
                f"the {self.blur.kernel_size}-px PSF"
            )
        low, high = (float(v) for v in torch.stack(torch.aminmax(hr)).tolist())
        if not (low >= 0.0 and high <= 1.0):  # NaN fails both
            raise InvalidImageError(
                f"expected reflectance in [0, 1] without nodata, found values in [{low:.4g}, {high:.4g}] "
                "(drop or fill tiles with NaN first)"
            )


def shift_content(x: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Translate each image's content by ``shifts`` ``(B, 2)`` (dy, dx) pixels: ``out[y, x] = in[y − dy,
    x − dx]``, bilinear, reflected at the borders. Zero shifts return ``x`` unchanged."""
    if not bool(shifts.any()):
        return x
    batch, _, height, width = x.shape
    theta = torch.zeros(batch, 2, 3, dtype=x.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = -2.0 * shifts[:, 1] / width  # normalised coordinates (align_corners=False)
    theta[:, 1, 2] = -2.0 * shifts[:, 0] / height
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
