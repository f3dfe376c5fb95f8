"""δ from data: a batched grid search of the PSF (σ × kernel family) and the downsampling mode.

SEN2NAIP chose each band's blur by MAE error curves of degraded NAIP against real Sentinel-2
(Aybar et al. 2024, Fig. 4: Gaussian, Sigmoid and Gumbel kernels; nearest, bilinear and bicubic
downsampling; Gaussian + bilinear won). This module evaluates the whole grid at once.

**Why it is fast.** Blur and every downsampling mode of :func:`sen2naip_hub.models.blur.downsample`
are separable and linear, so for LR pixel ``i`` (along one axis) ``δ(x)[i] = Σ_q e[q] x[4i + q]`` with
one short *effective kernel* ``e`` = PSF ⊛ downsampling taps ⊛ shift-interpolation taps (about 30
taps). The search therefore runs two strided passes: rows by a batched matmul (all pairs × all σ ×
all families at once), then columns by one grouped, strided ``conv2d``. There is no Python loop over
pairs or σ; the loops are over the 4 downsampling modes and over chunks of pairs sized to a memory
budget. The downsampling taps are measured from the library's own ``downsample`` (impulse responses),
so the search evaluates exactly the operator a :class:`BlurModel` applies.

**Misalignment.** Real HR/LR pairs are off by a fraction of an LR pixel. A shift looks like extra
blur and would bias σ upwards, so every pair is registered first, vectorised over pairs: a batched
phase correlation (:func:`dataset_builder.cross_sensor.align.estimate_shifts`, batched) between the LR and
the HR degraded by a reference PSF (published σ) for each family × mode. A mode changes the phase
centre of an LR pixel (nearest samples ``4i``; bilinear, bicubic and area centre on ``4i + 1.5``) and
the Gumbel PSF is asymmetric, so each family × mode gets its own shift. The shift ``t`` (HR pixels)
then enters the effective kernel as Lanczos-3 interpolation taps, i.e. the HR content is translated by
``t`` before the PSF, as a geolocation error does. Shifts are bounded by ``max_shift`` LR pixels
(default 1: larger offsets should be removed first by the builder's co-registration).

**Which pixels.** MAE is taken over the interior LR pixels whose whole effective kernel lies inside
the HR tile, so padding never enters the error (with 484-px tiles: 113 × 113 of 121 × 121).

**The choice.** A :class:`BlurModel` has one kernel family and one downsampling mode for all bands.
The search picks the family × mode whose sum over bands of each band's lowest MAE is smallest, then
each band's σ as the minimum of its curve, refined by a parabola through the three grid points
around it.

Imports torch, numpy and ``sen2naip_hub.models.blur`` only (matplotlib lazily, for the plot).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from dataset_builder.cross_sensor.align import estimate_shifts
from sen2naip_hub import constants as _constants
from sen2naip_hub import sensors as _sensors
from sen2naip_hub.errors import Sen2NaipError
from sen2naip_hub.models import blur as _blur

BlurModel = _blur.BlurModel
KERNEL_FAMILIES: tuple[str, ...] = _blur.KERNEL_FAMILIES
DOWNSAMPLE_MODES: tuple[str, ...] = _blur.DOWNSAMPLE_MODES

__all__ = [
    "DEFAULT_MAX_SHIFT_LR_PX",
    "DEFAULT_SIGMA_GRID",
    "BlurSearchError",
    "BlurSearchResult",
    "downsample_taps",
    "effective_kernels",
    "evaluate_grid",
    "search_blur",
]

#: σ grid (HR pixels): 1.0, 1.1, …, 4.9 — 40 values, as in the issue's benchmark. It brackets the
#: published σ (2.9–3.4, ``PUBLISHED_SIGMAS``) widely; with the 13-tap kernel, σ beyond ~5 px changes
#: the PSF little (it is truncated at ±6 px). The minimum is refined between grid points.
DEFAULT_SIGMA_GRID: tuple[float, ...] = tuple(round(1.0 + 0.1 * k, 1) for k in range(40))
#: Largest |shift| (LR pixels, per axis) the search corrects: "sub-pixel" misalignment with margin.
#: Pairs that passed the builder's QA1 (co-registered, residual < 1 LR px) stay well within it.
DEFAULT_MAX_SHIFT_LR_PX: float = 1.0
#: Lanczos window (lobes) of the shift interpolation: the usual a = 3 (Duchon 1979), 6 taps.
LANCZOS_A: int = 3
#: Default working-memory budget per chunk of pairs (bytes) for the two passes.
DEFAULT_MEMORY_BUDGET: int = 1 << 30


class BlurSearchError(Sen2NaipError, ValueError):
    """Pairs of the wrong shape, an empty grid or a tile too small for the kernel."""


# ----------------------------------------------------------------------------- kernels
def downsample_taps(mode: str, scale: int = _sensors.SCALE_FACTOR) -> torch.Tensor:
    """``(scale,)`` weights of HR samples ``scale·i + j`` (``j < scale``) in LR pixel ``i`` (one axis).

    Measured as the impulse response of :func:`sen2naip_hub.models.blur.downsample`, so it matches the
    library exactly (bilinear: 0, ½, ½, 0; area: ¼ × 4; nearest: 1, 0, 0, 0; bicubic: Keys a = −0.75).
    Raises :class:`BlurSearchError` if the mode reaches outside the LR pixel's ``scale`` samples.
    """
    n_lr = 8
    width = n_lr * scale
    impulses = torch.zeros(width, 1, scale, width, dtype=torch.float64)
    impulses[torch.arange(width), 0, :, torch.arange(width)] = 1.0
    response = _blur.downsample(impulses, mode, scale)[:, 0, 0, n_lr // 2]  # weight of each HR column
    start = scale * (n_lr // 2)
    taps = response[start : start + scale]
    if not torch.allclose(response.sum(), taps.sum()) or not math.isclose(float(taps.sum()), 1.0):
        raise BlurSearchError(f"downsampling {mode!r} reaches outside its {scale} HR samples: {response}")
    return taps


def _lanczos(x: torch.Tensor, a: int = LANCZOS_A) -> torch.Tensor:
    return torch.where(x.abs() < a, torch.sinc(x) * torch.sinc(x / a), torch.zeros_like(x))


def shift_taps(shifts: torch.Tensor, reach: int) -> torch.Tensor:
    """``(N, 2·(a + reach) + 1)`` Lanczos taps translating content by ``shifts`` ``(N,)`` HR px.

    Tap ``a`` (offset ``−(A + reach)`` … ``A + reach``) weights ``x[p + a]`` in ``x_shifted[p] = x(p − t)``.
    """
    half = LANCZOS_A + reach
    offsets = torch.arange(-half, half + 1, dtype=torch.float64, device=shifts.device)
    taps = _lanczos(offsets[None, :] + shifts.to(torch.float64)[:, None])
    return taps / taps.sum(dim=1, keepdim=True)


def effective_kernels(
    psf: torch.Tensor, taps: torch.Tensor, shifts: torch.Tensor, reach: int
) -> tuple[torch.Tensor, int]:
    """Combine PSFs ``(S, K)``, downsampling taps ``(scale,)`` and per-pair shifts ``(N,)`` (HR px).

    Returns ``(N, S, L)`` kernels ``e`` and the offset ``q0`` of their first tap: LR sample ``i`` of the
    shifted, blurred, downsampled signal is ``Σ_l e[l] · x[scale·i + q0 + l]``. ``L = K + scale + 2(A +
    reach) − 1``. PSF taps follow ``F.conv2d`` (cross-correlation, centred), as :func:`blur` applies them.
    """
    n_sigma, size = psf.shape
    scale = taps.numel()
    psf = psf.to(torch.float64)
    # PSF then downsampling: offsets j + k - size//2, j < scale
    pd = psf.new_zeros(n_sigma, size + scale - 1)
    for j in range(scale):
        pd[:, j : j + size] += taps[j].to(psf) * psf
    shift = shift_taps(shifts.to(psf.device), reach)  # (N, A2)
    n_shift = shift.shape[1]
    kernels = psf.new_zeros(shifts.numel(), n_sigma, pd.shape[1] + n_shift - 1)
    for a in range(n_shift):
        kernels[:, :, a : a + pd.shape[1]] += shift[:, a, None, None] * pd[None]
    return kernels, -(size // 2) - (LANCZOS_A + reach)


def _interior(length: int, q0: int, n_taps: int, scale: int) -> tuple[int, int]:
    """First LR index and count of LR samples whose kernel support lies inside ``[0, length)``."""
    first = math.ceil(-q0 / scale)
    last = (length - 1 - (q0 + n_taps - 1)) // scale
    return first, last - first + 1


# ----------------------------------------------------------------------------- grid
def _check_pairs(hr: torch.Tensor, lr: torch.Tensor, scale: int) -> None:
    if hr.ndim != 4 or lr.ndim != 4 or hr.shape[:2] != lr.shape[:2]:
        raise BlurSearchError(
            f"expected hr (N, C, H, W) and lr (N, C, h, w) with equal N and C, "
            f"got {tuple(hr.shape)} and {tuple(lr.shape)}"
        )
    if hr.shape[-2] != lr.shape[-2] * scale or hr.shape[-1] != lr.shape[-1] * scale:
        raise BlurSearchError(f"hr {tuple(hr.shape[-2:])} must be {scale}× lr {tuple(lr.shape[-2:])}")
    if not (torch.isfinite(hr).all() and torch.isfinite(lr).all()):
        raise BlurSearchError("pairs contain NaN/inf (nodata): drop or fill those ROIs first")


def _chunk_size(hr: torch.Tensor, n_ops: int, budget: int, scale: int) -> int:
    c, h, w = hr.shape[1:]
    per_pair = 4 * c * n_ops * (h // scale) * w * 3 + 4 * c * h * w * 8  # 3 row-pass copies + inputs
    return max(1, budget // per_pair)


def predict_grid(
    hr: torch.Tensor,
    psf: torch.Tensor,
    taps: torch.Tensor,
    shifts: torch.Tensor,
    reach: int,
    n_families: int,
) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """δ for every PSF of ``psf`` ``(F·S, K)`` and one downsampling mode (``taps``), interior pixels only.

    ``shifts`` ``(N, F, 2)`` HR pixels per pair and family. Returns ``(N, C, F·S, ni, nj)`` and the
    interior window ``(i0, ni, j0, nj)`` of the LR grid it covers.
    """
    n, c, height, width = hr.shape
    scale = taps.numel()
    n_sigma = psf.shape[0] // n_families
    ky, kx = [], []
    for f in range(n_families):
        fam = psf[f * n_sigma : (f + 1) * n_sigma]
        ky.append(effective_kernels(fam, taps, shifts[:, f, 0], reach)[0])
        kx.append(effective_kernels(fam, taps, shifts[:, f, 1], reach)[0])
    q0 = -(psf.shape[1] // 2) - (LANCZOS_A + reach)
    ky_t = torch.cat(ky, dim=1).to(hr.dtype)  # (N, O, L)
    kx_t = torch.cat(kx, dim=1).to(hr.dtype)
    n_ops, n_taps = ky_t.shape[1:]
    i0, ni = _interior(height, q0, n_taps, scale)
    j0, nj = _interior(width, q0, n_taps, scale)
    if ni < 1 or nj < 1:
        raise BlurSearchError(f"HR tile {height}×{width} px is too small for a {n_taps}-tap kernel")
    rows = hr[:, :, scale * i0 + q0 :].unfold(2, n_taps, scale)[:, :, :ni]  # (N, C, ni, W, L)
    y = torch.einsum("nciwl,nol->ncoiw", rows, ky_t).contiguous()  # (N, C, O, ni, W)
    y = y.reshape(1, n * c * n_ops, ni, width)[..., scale * j0 + q0 :]
    weight = kx_t[:, None].expand(n, c, n_ops, n_taps).reshape(n * c * n_ops, 1, 1, n_taps)
    pred = F.conv2d(y, weight, stride=(1, scale), groups=n * c * n_ops)[..., :nj]
    return pred.reshape(n, c, n_ops, ni, nj), (i0, ni, j0, nj)


def _mode_mae(hr, lr, psf, taps, shifts, reach, n_families) -> torch.Tensor:
    """Interior MAE ``(N, C, F·S)`` of one downsampling mode for a chunk of pairs."""
    pred, (i0, ni, j0, nj) = predict_grid(hr, psf, taps, shifts, reach, n_families)
    target = lr[:, :, None, i0 : i0 + ni, j0 : j0 + nj]
    return (pred - target).abs().mean(dim=(-2, -1))


def evaluate_grid(
    hr: torch.Tensor,
    lr: torch.Tensor,
    shifts: torch.Tensor,
    sigmas: Sequence[float] = DEFAULT_SIGMA_GRID,
    families: Sequence[str] = KERNEL_FAMILIES,
    modes: Sequence[str] = DOWNSAMPLE_MODES,
    kernel_size: int = _constants.PUBLISHED_KERNEL_SIZE,
    max_shift: float = DEFAULT_MAX_SHIFT_LR_PX,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Per-pair interior MAE for every band × family × mode × σ: ``(N, C, F, M, S)`` float64.

    ``hr`` ``(N, C, H, W)`` and ``lr`` ``(N, C, H/scale, W/scale)`` reflectance on the compute device;
    ``shifts`` ``(N, F, M, 2)`` LR pixels (``(dy, dx)`` of the LR against the degraded HR).
    ``progress`` is called with the number of pairs finished after each chunk of each mode.
    """
    scale = hr.shape[-1] // lr.shape[-1]
    _check_pairs(hr, lr, scale)
    if not len(sigmas) or not len(families) or not len(modes):
        raise BlurSearchError("the grid is empty: give at least one σ, family and mode")
    sigma_t = torch.tensor([float(s) for s in sigmas], dtype=torch.float64)
    psf = torch.cat([_blur.kernel1d(f, sigma_t, kernel_size, dtype=torch.float64) for f in families])
    psf = psf.to(hr.device)
    reach = math.ceil(scale * max_shift)
    n, c = hr.shape[:2]
    out = torch.empty(n, c, len(families), len(modes), len(sigmas), dtype=torch.float64)
    chunk = _chunk_size(hr, psf.shape[0], memory_budget, scale)
    for m, mode in enumerate(modes):
        taps = downsample_taps(mode, scale).to(hr.device)
        for start in range(0, n, chunk):
            sl = slice(start, start + chunk)
            shift_hr = shifts[sl, :, m].to(hr.device, torch.float64) * scale
            mae = _mode_mae(hr[sl], lr[sl], psf, taps, shift_hr, reach, len(families))
            out[sl, :, :, m] = mae.reshape(mae.shape[0], c, len(families), len(sigmas)).double().cpu()
            if progress is not None:
                progress(min(chunk, n - start))
    return out


def register_pairs(
    hr: torch.Tensor,
    lr: torch.Tensor,
    families: Sequence[str] = KERNEL_FAMILIES,
    modes: Sequence[str] = DOWNSAMPLE_MODES,
    reference_sigmas: Sequence[float] = _constants.PUBLISHED_SIGMAS,
    kernel_size: int = _constants.PUBLISHED_KERNEL_SIZE,
    max_shift: float = DEFAULT_MAX_SHIFT_LR_PX,
    chunk: int = 64,
) -> torch.Tensor:
    """``(N, F, M, 2)`` LR-pixel shifts of each LR against its HR degraded by each family × mode
    (reference σ per band: the published ones; only the PSF's phase matters here)."""
    scale = hr.shape[-1] // lr.shape[-1]
    sig = torch.tensor([float(s) for s in reference_sigmas], dtype=torch.float64)
    out = torch.zeros(hr.shape[0], len(families), len(modes), 2, dtype=torch.float64)
    for f, family in enumerate(families):
        kernels = _blur.kernel1d(family, sig, kernel_size).to(hr.device, hr.dtype)
        for m, mode in enumerate(modes):
            for start in range(0, hr.shape[0], chunk):
                sl = slice(start, start + chunk)
                reference = _blur.blur_downsample(hr[sl], kernels, mode, scale)
                out[sl, f, m] = estimate_shifts(reference, lr[sl], max_shift=max_shift).cpu()
    return out


# ----------------------------------------------------------------------------- result
def _refine_minimum(curve: torch.Tensor, grid: torch.Tensor) -> tuple[float, float]:
    """(σ, MAE) at the curve's minimum, refined by a parabola through its neighbours (uniform grid)."""
    k = int(curve.argmin())
    sigma, value = float(grid[k]), float(curve[k])
    if 0 < k < curve.numel() - 1:
        left, mid, right = (float(v) for v in curve[k - 1 : k + 2])
        denom = left - 2 * mid + right
        if denom > 0:
            step = float(grid[k + 1] - grid[k])
            delta = 0.5 * (left - right) / denom
            sigma = sigma + step * max(-1.0, min(1.0, delta))
            value = mid - 0.25 * (left - right) * delta
    return sigma, value


@dataclass
class BlurSearchResult:
    """What :func:`search_blur` measured and chose.

    Attributes:
        mae: ``(C, F, M, S)`` MAE (reflectance) averaged over pairs.
        shifts: ``(N, F, M, 2)`` estimated ``(dy, dx)`` of each LR, LR pixels.
        kernel, downsample: the chosen family and mode (shared by all bands).
        sigmas: the chosen σ per band (refined between grid points), HR pixels.
        band_mae: each band's MAE at its chosen σ (parabola value).
    """

    sigma_grid: tuple[float, ...]
    families: tuple[str, ...]
    modes: tuple[str, ...]
    mae: torch.Tensor
    shifts: torch.Tensor
    kernel: str
    downsample: str
    sigmas: tuple[float, ...]
    band_mae: tuple[float, ...]
    kernel_size: int
    scale: int
    band_names: tuple[str, ...] = field(default_factory=lambda: tuple(_sensors.SENTINEL2.all_bands))

    @property
    def n_pairs(self) -> int:
        return int(self.shifts.shape[0])

    def family_mode_totals(self) -> torch.Tensor:
        """``(F, M)``: sum over bands of each band's lowest grid MAE — the selection criterion."""
        return self.mae.min(dim=-1).values.sum(dim=0)

    def to_model(self) -> torch.nn.Module:
        """The chosen δ as a :class:`BlurModel`."""
        return BlurModel(
            sigmas=self.sigmas,
            kernel=self.kernel,
            kernel_size=self.kernel_size,
            downsample=self.downsample,
            scale=self.scale,
        )

    def summary(self) -> dict:
        """JSON-able summary (choice, totals per family × mode, curves of the choice, shifts)."""
        f, m = self.families.index(self.kernel), self.modes.index(self.downsample)
        totals = self.family_mode_totals()
        return {
            "kernel": self.kernel,
            "downsample": self.downsample,
            "sigmas": dict(zip(self.band_names, self.sigmas, strict=True)),
            "band_mae": dict(zip(self.band_names, self.band_mae, strict=True)),
            "n_pairs": self.n_pairs,
            "kernel_size": self.kernel_size,
            "sigma_grid": list(self.sigma_grid),
            "totals": {
                fam: {mode: float(totals[i, j]) for j, mode in enumerate(self.modes)}
                for i, fam in enumerate(self.families)
            },
            "curves": {b: self.mae[c, f, m].tolist() for c, b in enumerate(self.band_names)},
            "median_abs_shift_lr_px": float(self.shifts[:, f, m].abs().median()) if self.n_pairs else 0.0,
        }


def choose(mae: torch.Tensor, sigma_grid: Sequence[float], families, modes, **kwargs) -> BlurSearchResult:
    """Pick family × mode (lowest summed per-band minimum) and refine each band's σ."""
    totals = mae.min(dim=-1).values.sum(dim=0)
    flat = int(totals.argmin())
    f, m = divmod(flat, totals.shape[1])
    grid = torch.tensor([float(s) for s in sigma_grid], dtype=torch.float64)
    refined = [_refine_minimum(mae[c, f, m], grid) for c in range(mae.shape[0])]
    return BlurSearchResult(
        sigma_grid=tuple(float(s) for s in sigma_grid),
        families=tuple(families),
        modes=tuple(modes),
        mae=mae,
        kernel=families[f],
        downsample=modes[m],
        sigmas=tuple(round(s, 4) for s, _ in refined),
        band_mae=tuple(v for _, v in refined),
        **kwargs,
    )


def search_blur(
    hr: torch.Tensor,
    lr: torch.Tensor,
    *,
    sigmas: Sequence[float] = DEFAULT_SIGMA_GRID,
    families: Sequence[str] = KERNEL_FAMILIES,
    modes: Sequence[str] = DOWNSAMPLE_MODES,
    kernel_size: int = _constants.PUBLISHED_KERNEL_SIZE,
    max_shift: float = DEFAULT_MAX_SHIFT_LR_PX,
    register: bool = True,
    device: str | torch.device = "cpu",
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    progress: bool = False,
) -> BlurSearchResult:
    """Fit δ to pairs: ``hr`` ``(N, 4, H, W)`` and ``lr`` ``(N, 4, H/4, W/4)`` float reflectance.

    Args:
        sigmas, families, modes: the grid (module docstring for the defaults).
        kernel_size: PSF taps (odd), as the :class:`BlurModel` that is written.
        max_shift: largest misalignment (LR px, per axis) that registration corrects.
        register: estimate and correct each pair's shift (``False``: assume perfectly aligned pairs).
        device: ``cpu`` or ``cuda``; pairs are moved there in chunks sized by ``memory_budget`` bytes.
        progress: show a tqdm bar.
    """
    scale = hr.shape[-1] // max(lr.shape[-1], 1)
    _check_pairs(hr, lr, scale)
    device = torch.device(device)
    hr_d, lr_d = hr.to(device, torch.float32), lr.to(device, torch.float32)
    if register:
        shifts = register_pairs(hr_d, lr_d, families, modes, kernel_size=kernel_size, max_shift=max_shift)
    else:
        shifts = torch.zeros(hr.shape[0], len(families), len(modes), 2, dtype=torch.float64)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=hr.shape[0] * len(modes), desc="blur grid", unit="pair·mode")
    per_pair = evaluate_grid(
        hr_d, lr_d, shifts, sigmas, families, modes, kernel_size, max_shift, memory_budget,
        progress=bar.update if bar is not None else None,
    )  # fmt: skip
    if bar is not None:
        bar.close()
    return choose(
        per_pair.mean(dim=0), sigmas, families, modes, shifts=shifts, kernel_size=kernel_size, scale=scale
    )
