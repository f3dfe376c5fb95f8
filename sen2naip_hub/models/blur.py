"""δ: per-band point-spread function (separable blur) followed by ×4 downsampling.

The functions are pure and batched; :class:`BlurModel` is a thin Hub-loadable module around them.
With the defaults it reproduces SEN2NAIP's published δ (opensr-degradation 1.0.1 ``naipd/blur.py``):
Gaussian σ = 3.0, 2.9, 2.9, 3.4 HR px, kernel 13, reflect padding, bilinear ×1/4 without antialias.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, get_args

import torch
import torch.nn.functional as F

from sen2naip_hub.constants import PUBLISHED_DOWNSAMPLE, PUBLISHED_KERNEL_SIZE, PUBLISHED_SIGMAS
from sen2naip_hub.errors import InvalidImageError
from sen2naip_hub.models.hub import HubModel
from sen2naip_hub.sensors import N_BANDS, SCALE_FACTOR

KernelFamily = Literal["gaussian", "sigmoid", "gumbel"]
DownsampleMode = Literal["nearest", "bilinear", "bicubic", "area"]
KERNEL_FAMILIES: tuple[str, ...] = get_args(KernelFamily)
DOWNSAMPLE_MODES: tuple[str, ...] = get_args(DownsampleMode)

__all__ = [
    "DOWNSAMPLE_MODES",
    "KERNEL_FAMILIES",
    "BlurModel",
    "apply_separable",
    "axis_operator",
    "blur",
    "blur_downsample",
    "downsample",
    "kernel1d",
]

#: Largest image side (HR px) that :class:`BlurModel` degrades with dense per-axis operator matrices
#: (two matrix products: 2.5x faster than convolutions on 2 CPU cores, more on a GPU); larger images
#: use the convolutions, whose cost grows with the area only.
OPERATOR_MAX_SIDE: int = 1024


def kernel1d(family: str, sigma: float | torch.Tensor, size: int, dtype=torch.float32) -> torch.Tensor:
    """A normalised 1-D PSF of ``size`` taps whose spread is ``sigma`` (HR pixels).

    ``sigma`` may be a tensor of shape ``(N,)``; the result then has shape ``(N, size)``. Families:

    - ``gaussian``: exp(-x²/2σ²), as torchvision's ``GaussianBlur`` builds it;
    - ``sigmoid``: the logistic density (derivative of a sigmoid) with standard deviation σ;
    - ``gumbel``: the Gumbel (max) density with standard deviation σ, shifted to zero mean (asymmetric).

    >>> k = kernel1d("gaussian", 3.0, 13)
    >>> tuple(k.shape), round(float(k.sum()), 6)
    ((13,), 1.0)
    """
    if family not in KERNEL_FAMILIES:
        raise ValueError(f"kernel family must be one of {KERNEL_FAMILIES}, got {family!r}")
    if size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be a positive odd number, got {size}")
    sigma_t = torch.as_tensor(sigma, dtype=torch.float64)
    if (sigma_t <= 0).any():
        raise ValueError(f"sigma must be > 0, got {sigma_t.tolist()}")
    half = (size - 1) / 2
    x = torch.linspace(-half, half, size, dtype=torch.float64)
    s = sigma_t.reshape(-1, 1)
    if family == "gaussian":
        pdf = torch.exp(-0.5 * (x / s) ** 2)
    elif family == "sigmoid":
        scale = s * math.sqrt(3.0) / math.pi  # logistic std = scale·π/√3
        z = x / scale
        pdf = torch.exp(-z) / (1 + torch.exp(-z)) ** 2
    else:
        beta = s * math.sqrt(6.0) / math.pi  # Gumbel std = β·π/√6, mean = μ + γβ
        z = (x + 0.5772156649015329 * beta) / beta
        pdf = torch.exp(-(z + torch.exp(-z)))
    kernel = (pdf / pdf.sum(dim=-1, keepdim=True)).to(dtype)
    return kernel.reshape(size) if sigma_t.ndim == 0 else kernel


def _check_batch(x: torch.Tensor, channels: int | None = None) -> None:
    if x.ndim != 4:
        raise InvalidImageError(f"expected a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    if channels is not None and x.shape[1] != channels:
        raise InvalidImageError(f"expected {channels} bands, got shape {tuple(x.shape)}")


def padding_mode(height: int, width: int, kernel_size: int) -> str:
    """Border handling of :func:`blur`: ``reflect`` (as torchvision's ``GaussianBlur``), or
    ``replicate`` for images no larger than the kernel's half-width (which reflection cannot pad)."""
    return "reflect" if min(height, width) > kernel_size // 2 else "replicate"


def blur(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Blur each band of ``x`` ``(B, C, H, W)`` with its own separable kernel ``kernels`` ``(C, K)``.

    Borders are padded as :func:`padding_mode` says; the output keeps ``x``'s shape.
    """
    _check_batch(x, kernels.shape[0])
    channels, size = kernels.shape
    pad = size // 2
    mode = padding_mode(*x.shape[-2:], size)
    weight = kernels.to(dtype=x.dtype, device=x.device)
    out = F.pad(x, (pad, pad, pad, pad), mode=mode)
    out = F.conv2d(out, weight.reshape(channels, 1, 1, size), groups=channels)
    return F.conv2d(out, weight.reshape(channels, 1, size, 1), groups=channels)


def downsample(x: torch.Tensor, mode: str, scale: int = SCALE_FACTOR) -> torch.Tensor:
    """Downsample ``(B, C, H, W)`` by ``scale`` with ``mode`` (no antialiasing: the PSF is the blur)."""
    if mode not in DOWNSAMPLE_MODES:
        raise ValueError(f"downsampling mode must be one of {DOWNSAMPLE_MODES}, got {mode!r}")
    if min(x.shape[-2:]) < scale:
        raise InvalidImageError(
            f"image of {tuple(x.shape[-2:])} px is smaller than one LR pixel ({scale} px)"
        )
    if mode == "area":
        return F.avg_pool2d(x, scale)
    align = None if mode == "nearest" else False
    return F.interpolate(x, scale_factor=1 / scale, mode=mode, align_corners=align, antialias=False)


def blur_downsample(
    x: torch.Tensor, kernels: torch.Tensor, mode: str, scale: int = SCALE_FACTOR
) -> torch.Tensor:
    """δ(x): :func:`blur` then :func:`downsample`, by convolutions (the definition of δ)."""
    return downsample(blur(x, kernels), mode, scale)


def axis_operator(kernels: torch.Tensor, mode: str, scale: int, size: int, padding: str) -> torch.Tensor:
    """δ along one image axis of ``size`` HR pixels as a matrix per band, ``(C, size // scale, size)``:
    row ``i`` holds the weight of every HR pixel in LR pixel ``i`` (border padding included).

    Built by pushing the identity through the blur and the downsampling (float64): the matrix is
    δ itself, for every kernel family and downsampling mode. Along the other axis the probe images
    are constant, which every mode keeps constant (its weights sum to one).
    """
    channels, taps = kernels.shape
    pad = taps // 2
    eye = torch.eye(size, dtype=torch.float64, device=kernels.device)
    probes = eye[:, None, None, :].expand(size, channels, scale, size)  # image j: HR pixel j lit
    padded = F.pad(probes, (pad, pad, 0, 0), mode=padding)
    blurred = F.conv2d(padded, kernels.to(torch.float64).reshape(channels, 1, 1, taps), groups=channels)
    sampled = downsample(blurred, mode, scale)[:, :, 0, :]  # (size, C, size // scale)
    return sampled.permute(1, 2, 0).contiguous()


def apply_separable(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``rows[c] @ x[:, c] @ cols[c]ᵀ`` for ``x`` ``(B, C, H, W)``, ``rows`` ``(C, h, H)`` and
    ``cols`` ``(C, w, W)``: two batched matrix products."""
    across = torch.matmul(x, cols.transpose(-1, -2).unsqueeze(0))  # (B, C, H, w)
    return torch.matmul(rows.unsqueeze(0), across)  # (B, C, h, w)


def _state(tensor: torch.Tensor) -> int | tuple[float, ...]:
    """What tells a tensor's values apart over time: its version counter (bumped by every in-place
    change), or, for an inference tensor (made under ``torch.inference_mode``, which has none), its
    values themselves (a kernel table is a few dozen numbers)."""
    return tuple(tensor.reshape(-1).tolist()) if tensor.is_inference() else tensor._version


class BlurModel(
    HubModel,
    tags=["sen2naip", "degradation", "psf", "sentinel-2", "naip"],
):
    """δ as a Hub model: per-band PSF (``kernel`` family, ``sigmas`` in HR px) + downsampling.

    Args:
        sigmas: PSF spread per band (R, G, B, NIR), in HR pixels.
        kernel: PSF family, one of ``gaussian``, ``sigmoid``, ``gumbel``.
        kernel_size: taps of the separable kernel (odd).
        downsample: ``nearest``, ``bilinear``, ``bicubic`` or ``area``.
        scale: HR pixels per LR pixel.

    >>> model = BlurModel()
    >>> tuple(model(torch.rand(2, 4, 64, 64)).shape)
    (2, 4, 16, 16)
    """

    def __init__(
        self,
        sigmas: Sequence[float] = PUBLISHED_SIGMAS,
        kernel: str = "gaussian",
        kernel_size: int = PUBLISHED_KERNEL_SIZE,
        downsample: str = PUBLISHED_DOWNSAMPLE,
        scale: int = SCALE_FACTOR,
    ) -> None:
        super().__init__()
        if len(sigmas) != N_BANDS:
            raise ValueError(f"expected {N_BANDS} sigmas (R, G, B, NIR), got {list(sigmas)}")
        if downsample not in DOWNSAMPLE_MODES:
            raise ValueError(f"downsample must be one of {DOWNSAMPLE_MODES}, got {downsample!r}")
        self.sigmas = tuple(float(s) for s in sigmas)
        self.kernel = kernel
        self.kernel_size = kernel_size
        self.downsample = downsample
        self.scale = scale
        self.register_buffer("kernels", kernel1d(kernel, torch.tensor(self.sigmas), kernel_size))
        self._operators: dict[tuple, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 4, H, W)`` HR reflectance → ``(B, 4, H // scale, W // scale)`` LR reflectance.

        Equal to :func:`blur_downsample` up to float rounding, nodata included: an LR pixel is NaN
        exactly when a NaN HR pixel carries weight in it, so NaN spreads only as far as the PSF and the
        downsampling reach. Images up to :data:`OPERATOR_MAX_SIDE` px go through :meth:`operator`
        matrices (cached per size, device and dtype)."""
        _check_batch(x, N_BANDS)
        height, width = x.shape[-2:]
        if max(height, width) > OPERATOR_MAX_SIDE or min(height, width) < self.scale:
            return blur_downsample(x, self.kernels, self.downsample, self.scale)
        padding = padding_mode(height, width, self.kernel_size)
        rows = self.operator(height, padding, x.dtype)
        cols = rows if width == height else self.operator(width, padding, x.dtype)
        nan = torch.isnan(x)
        if not bool(nan.any()):  # one reduction; a dense product would spread a NaN to every pixel
            return apply_separable(x, rows, cols)
        out = apply_separable(torch.where(nan, torch.zeros_like(x), x), rows, cols)
        reached = apply_separable(nan.to(x.dtype), (rows != 0).to(x.dtype), (cols != 0).to(x.dtype))
        return torch.where(reached > 0, torch.nan, out)

    def operator(self, size: int, padding: str, dtype: torch.dtype) -> torch.Tensor:
        """:func:`axis_operator` of this model's δ for an axis of ``size`` px, cached."""
        kernels = self.kernels
        key = (size, padding, dtype, kernels.device, kernels.data_ptr(), _state(kernels))
        if key not in self._operators:
            if len(self._operators) >= 16:  # sizes seen by a tiled run: a handful; bound it anyway
                self._operators.clear()
            built = axis_operator(kernels, self.downsample, self.scale, size, padding)
            self._operators[key] = built.to(dtype)
        return self._operators[key]

    @property
    def reach(self) -> int:
        """HR pixels of context a pixel of the output depends on, on each side."""
        return self.kernel_size // 2 + self.scale
