"""On-the-fly SEN2NAIP training pairs: HR batches ``(B, 4, H, W)`` in, ``(lr, hr)`` out, on their device.

Super-resolution training needs no stored LR copy: :class:`TrainingPairs` degrades each HR batch inside
the training loop with the learned SEN2NAIP degradation (λ harmonization → δ blur + ×4 downsampling →
e noise, the library's :class:`~sen2naip_hub.models.BlurModel`, :class:`~sen2naip_hub.models.NoiseModel`
and :class:`~sen2naip_hub.models.HarmonizationModel`), randomised around it per sample. Every draw comes
from one ``torch.Generator``; :func:`step_generator` seeds one per (seed, step, DataLoader worker), so
the same seed gives the same pairs. Sources of HR batches: :mod:`sen2naip_hub.training_data`.

Randomisation ranges (each drawn uniformly, independently per sample; the named constants live in
:mod:`sen2naip_hub.training_random`):

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
  2.5 m), which makes neighbouring σ harder to tell apart: on 2.5 m imagery the intervals are likely
  narrower. ``tests/test_training_pairs.py`` recomputes them.
* **Noise scale.** The learned draw is multiplied by the scale. A blind denoiser fitted on the real
  Sentinel-2 of the sample measured 0.20–0.63 × the published table's std per reflectance bin (median
  0.45); the published table (1.0) is the upper end.
* **Shift.** The HR content is translated by the drawn sub-pixel shift (linear interpolation) before
  the PSF, so the LR is misregistered against the returned HR as a real pair that passed QA1 can be.
  Linear interpolation smooths by at most σ = 0.5 HR px, which widens the PSF by ≤ 0.06 px (at the
  smallest σ drawn, 2.35 px).

**How δ is applied per sample.** δ along one axis is a matrix (:func:`~sen2naip_hub.models.blur.
axis_operator`, what :class:`~sen2naip_hub.models.BlurModel` applies as two matrix products) and it is
linear in the PSF's taps. The shift's two interpolation taps are folded into each sample's PSF taps
(one kernel per sample, band and axis), and each sample's matrices are that kernel's combination of
one basis matrix per tap, built once per image size by ``axis_operator``; the batch then costs two
batched matrix products, as the published δ does.

The returned ``hr`` (the SR target) is the HR after the sample's harmonization, unshifted: the
published pipeline (opensr-degradation 1.0.1 ``pipe.forward``) returns ``(lr, harmonized hr)`` too, so
the network learns resolution, not a change of radiometry. It is the input tensor itself where no
sample is harmonized (``target="input"`` always returns the input). ``lr`` is ``(B, 4, H/4, W/4)``,
not clipped (noise can take dark pixels slightly below 0, as with :class:`~sen2naip_hub.models.
Degradation`); both keep the input's dtype and device.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from huggingface_hub import snapshot_download

from sen2naip_hub.errors import InvalidImageError, ModelNotFoundError
from sen2naip_hub.models.blur import BlurModel, axis_operator, kernel1d, padding_mode
from sen2naip_hub.models.noise import NoiseModel
from sen2naip_hub.sensors import N_BANDS
from sen2naip_hub.training_random import (
    HARMONIZATION_CHOICES,
    NOISE_SCALE_RANGE,
    SHIFT_MAX_LR_PX,
    SIGMA_TOLERANCE_HR_PX,
    Randomization,
    TrainingPairError,
    step_generator,
    step_seed,
)

__all__ = [
    "HARMONIZATION_CHOICES",
    "NOISE_SCALE_RANGE",
    "SHIFT_MAX_LR_PX",
    "SIGMA_TOLERANCE_HR_PX",
    "TARGETS",
    "Draws",
    "Randomization",
    "TrainingPair",
    "TrainingPairError",
    "TrainingPairs",
    "operator_basis",
    "shifted_kernels",
    "step_generator",
    "step_seed",
]

#: What :class:`TrainingPairs` returns as ``hr``: the harmonized HR (as published) or the input.
TARGETS: tuple[str, ...] = ("harmonized", "input")
#: Basis matrices kept by :func:`operator_basis` (a training run sees one or two sizes).
MAX_CACHED_BASES: int = 8
_BASES: dict[tuple, torch.Tensor] = {}


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
    """``lr`` ``(B, 4, H/4, W/4)``, ``hr`` (the target) and the :class:`Draws`; unpacks as ``lr, hr``."""

    lr: torch.Tensor
    hr: torch.Tensor
    draws: Draws

    def __iter__(self) -> Iterator[torch.Tensor]:
        yield self.lr
        yield self.hr


# ------------------------------------------------------------------------------------------ pairs
class TrainingPairs(torch.nn.Module):
    """Make ``(lr, hr)`` training pairs from HR batches with the learned degradation, randomised.

    Args:
        blur: δ; its kernel family, size, downsampling and σ (the centre of the σ draws) are used.
        noise: e; its learned draw is scaled per sample.
        harmonization: λ (a :class:`~sen2naip_hub.models.HarmonizationModel`), needed only when the
            randomisation may draw ``global`` or ``local``.
        randomization: the ranges (:class:`Randomization`).
        target: ``harmonized`` (the HR after each sample's harmonization, as published) or ``input``.

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
        target: str = "harmonized",
    ) -> None:
        super().__init__()
        if target not in TARGETS:
            raise TrainingPairError(f"target must be one of {TARGETS}, got {target!r}")
        self.target = target
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
    def from_degradation(
        cls,
        degradation: torch.nn.Module,
        randomization: Randomization | None = None,
        target: str = "harmonized",
    ) -> TrainingPairs:
        """Pairs from a loaded :class:`~sen2naip_hub.models.Degradation`'s parts."""
        return cls(degradation.blur, degradation.noise, degradation.harmonization, randomization, target)

    @classmethod
    def from_pretrained(
        cls,
        path_or_repo: str | os.PathLike,
        randomization: Randomization | None = None,
        map_location: str = "cpu",
        target: str = "harmonized",
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
        return cls(blur, noise, harmonization, randomization, target)

    def train(self, mode: bool = True) -> TrainingPairs:
        """Stays in eval mode (``mode`` is ignored): the degradation is applied, never fitted, and a
        U-Net in training mode would change its BatchNorm statistics with every batch."""
        return super().train(False)

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
        x_target = self.harmonize(hr.to(work), draws.harmonization)
        lr = self.degrade(x_target, draws.sigmas, draws.shifts * self.blur.scale)
        lr = self.add_noise(lr, draws.noise_scale, generator)
        harmonized = bool((draws.harmonization != HARMONIZATION_CHOICES.index("none")).any())
        target = x_target.to(hr.dtype) if harmonized and self.target == "harmonized" else hr
        return TrainingPair(lr=lr.to(hr.dtype), hr=target, draws=draws)

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

    def degrade(self, x: torch.Tensor, sigmas: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
        """δ per sample: content shifted by ``shifts`` ``(B, 2)`` (dy, dx) HR px, then blurred with
        ``sigmas`` ``(B, 4)`` and downsampled (module docstring: how). Without a shift and at the
        model's σ, this is the model's own δ."""
        blur = self.blur
        if not bool(shifts.any()) and bool((sigmas == torch.tensor(blur.sigmas, dtype=sigmas.dtype)).all()):
            return blur(x)
        batch, bands, height, width = x.shape
        psf = kernel1d(blur.kernel, sigmas.reshape(-1), blur.kernel_size, dtype=torch.float64)
        reach = math.ceil(float(shifts.abs().max())) + 1
        padding = padding_mode(height, width, blur.kernel_size + 2 * reach)
        per_axis = []
        for axis, size in ((0, height), (1, width)):
            kernels = shifted_kernels(psf, shifts[:, axis].repeat_interleave(bands), reach)
            basis = self.basis(size, kernels.shape[1], padding, x.device)
            matrices = torch.einsum("nk,khs->nhs", kernels.to(x.device, x.dtype), basis.to(x.dtype))
            per_axis.append(matrices.reshape(batch, bands, *matrices.shape[1:]))
        rows, cols = per_axis
        return torch.matmul(rows, torch.matmul(x, cols.transpose(-1, -2)))

    def basis(self, size: int, taps: int, padding: str, device: torch.device) -> torch.Tensor:
        """:func:`operator_basis` of this model's downsampling and scale."""
        return operator_basis(size, taps, padding, self.blur.downsample, self.blur.scale, device)

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


def operator_basis(
    size: int, taps: int, padding: str, downsample: str, scale: int, device: torch.device
) -> torch.Tensor:
    """``(taps, size // scale, size)`` float64: δ along an axis of ``size`` px for each unit tap of a
    ``taps``-long kernel (:func:`~sen2naip_hub.models.blur.axis_operator`), cached per process (built
    once per size: a second or so on a CPU)."""
    key = (size, taps, padding, downsample, scale, str(device))
    if key not in _BASES:
        if len(_BASES) >= MAX_CACHED_BASES:
            _BASES.clear()
        unit = torch.eye(taps, dtype=torch.float64, device=device)
        _BASES[key] = axis_operator(unit, downsample, scale, size, padding)
    return _BASES[key]


def shifted_kernels(psf: torch.Tensor, shifts: torch.Tensor, reach: int) -> torch.Tensor:
    """``(N, K + 2·reach)`` cross-correlation taps of a shift by ``shifts`` ``(N,)`` HR px (linear
    interpolation: content moves by +shift) followed by the PSF ``psf`` ``(N, K)``, centred as the PSF.

    ``|shifts|`` must be at most ``reach - 1``.

    >>> k = shifted_kernels(torch.tensor([[0.25, 0.5, 0.25]]), torch.tensor([1.0]), reach=2)
    >>> k.tolist()
    [[0.0, 0.25, 0.5, 0.25, 0.0, 0.0, 0.0]]
    """
    whole = torch.floor(shifts.to(torch.float64))
    frac = (shifts.to(torch.float64) - whole)[:, None]
    if bool((whole.abs() > reach - 1).any()):
        raise TrainingPairError(f"shifts up to {float(shifts.abs().max())} px need reach > {reach}")
    n, size = psf.shape
    index = torch.arange(size)[None, :] + (reach - whole.long())[:, None]
    out = psf.new_zeros(n, size + 2 * reach, dtype=torch.float64)
    out.scatter_add_(1, index, (1 - frac) * psf)
    out.scatter_add_(1, index - 1, frac * psf)
    return out
