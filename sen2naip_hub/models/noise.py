"""e: sensor noise. A table P(noise | reflectance) learned from real Sentinel-2: each pixel's noise is
drawn from the row of its reflectance bin (opensr-degradation 1.0.1 ``naipd/noise.py``, which samples
pixel by pixel with ``np.vectorize``). Here the draw is one inverse-CDF lookup for the whole batch, in
torch, from an explicit ``torch.Generator``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, get_args

import numpy as np
import torch

from sen2naip_hub.constants import NOISE_REFLECTANCE_EDGES, NOISE_VALUES
from sen2naip_hub.errors import InvalidModelError
from sen2naip_hub.models.hub import HubModel
from sen2naip_hub.sensors import N_BANDS

NoiseMode = Literal["table", "gaussian", "none"]
NOISE_MODES: tuple[str, ...] = get_args(NoiseMode)

#: ``gaussian`` mode, as the published ``create_noisy_2``: noise std = this × the band's RMS reflectance.
GAUSSIAN_RELATIVE_STD: float = 0.025
#: The noise's source: one generator, one per batch item (see :func:`draw`), or None (torch's default).
Generators = torch.Generator | Sequence[torch.Generator] | None

__all__ = [
    "NOISE_MODES",
    "Generators",
    "NoiseModel",
    "draw",
    "published_noise_axes",
    "sample_table_noise",
    "table_uniform",
]


def published_noise_axes() -> tuple[torch.Tensor, torch.Tensor]:
    """The published table's reflectance bin edges (100) and noise values (101), as float64."""
    edges = torch.from_numpy(np.arange(*NOISE_REFLECTANCE_EDGES))
    values = torch.from_numpy(np.arange(*NOISE_VALUES))
    return edges, values


def draw(
    sampler: Callable[..., torch.Tensor],
    shape: torch.Size | tuple[int, ...],
    generator: Generators,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """``sampler`` (``torch.rand`` or ``torch.randn``) of ``shape``, drawn on the generator's device (so a
    CPU generator gives the same draw for a CUDA input), then moved to ``device``.

    ``generator`` may be a sequence of generators, one per batch item (``shape[0]`` of them, on one
    device): item ``i`` is then drawn from ``generator[i]`` alone, exactly as if it were noised by itself,
    so its noise does not depend on the batch it is in; the draws cross to ``device`` in one copy.
    """
    if generator is None or isinstance(generator, torch.Generator):
        gen_device = generator.device if generator is not None else device
        return sampler(shape, generator=generator, device=gen_device, dtype=dtype).to(device)
    generators = list(generator)
    if len(generators) != shape[0] or len({g.device for g in generators}) > 1:
        raise ValueError(
            f"expected one generator per batch item ({shape[0]}) on one device, got {len(generators)} "
            f"on {sorted({str(g.device) for g in generators})}"
        )
    # One buffer, each item drawn into its own slice (no per-item tensors to join); pinned when the draws
    # go from the CPU to a GPU, so that their copy does not wait on pageable memory.
    source = generators[0].device if generators else torch.device("cpu")
    pinned = source.type == "cpu" and torch.device(device).type == "cuda"
    out = torch.empty(shape, dtype=dtype, device=source, pin_memory=pinned)
    item = (1, *shape[1:])
    for index, each in enumerate(generators):
        sampler(item, generator=each, out=out[index : index + 1])
    return out.to(device, non_blocking=pinned)


def table_uniform(
    shape: torch.Size | tuple[int, ...], generator: Generators = None, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """The uniform draws (float64, ``[0, 1)``, one per pixel) that :func:`sample_table_noise` makes for
    an ``x`` of ``shape`` from ``generator``, on ``device``. Draw them ahead (in a loader thread, say)
    and pass them as its ``uniform``: the noise is the same as drawing them there.

    >>> a = table_uniform((2, 4, 3, 3), [torch.Generator().manual_seed(s) for s in (1, 2)])
    >>> b = table_uniform((1, 4, 3, 3), torch.Generator().manual_seed(2))
    >>> bool((a[1:] == b).all())
    True
    """
    return draw(torch.rand, shape, generator, torch.device(device), torch.float64)


def sample_table_noise(
    x: torch.Tensor,
    table: torch.Tensor,
    edges: torch.Tensor,
    values: torch.Tensor,
    generator: Generators = None,
    *,
    uniform: torch.Tensor | None = None,
) -> torch.Tensor:
    """Draw noise for every pixel of ``x`` ``(B, C, H, W)`` from ``table`` by inverse-CDF sampling.

    ``table`` is ``(R, K)`` (shared by all bands) or ``(C, R, K)`` (one per band): row ``r`` is
    P(noise = values[k] | reflectance bin r), bins as ``np.digitize(x, edges)`` (``R = len(edges) + 1``).
    Rows are normalised here, so counts work as well as probabilities. ``generator``: see :func:`draw`;
    ``uniform``: the draws made ahead by :func:`table_uniform` (then ``generator`` is not used).
    """
    if uniform is not None and tuple(uniform.shape) != tuple(x.shape):
        raise ValueError(f"uniform draws of shape {tuple(uniform.shape)} for noise of shape {tuple(x.shape)}")
    per_band = table.ndim == 3
    tables = table if per_band else table[None]
    n_tables, n_rows, n_values = tables.shape
    if n_rows != edges.numel() + 1 or n_values != values.numel():
        raise ValueError(
            f"table of shape {tuple(table.shape)} does not fit "
            f"{edges.numel()} edges and {values.numel()} values"
        )
    cdf = torch.cumsum(tables.to(torch.float64), dim=-1)
    cdf = cdf / cdf[..., -1:].clamp_min(1e-300)
    cdf[..., -1] = 1.0
    # One sorted sequence for all rows: row i's CDF shifted by i, so a single searchsorted finds the
    # column for (row + u) directly.
    shift = torch.arange(n_tables * n_rows, dtype=torch.float64, device=cdf.device)
    flat = (cdf.reshape(-1, n_values) + shift[:, None]).reshape(-1).to(x.device)

    row = torch.bucketize(x.detach().contiguous(), edges.to(device=x.device, dtype=x.dtype), right=True)
    if per_band:
        row = row + torch.arange(x.shape[1], device=x.device).reshape(1, -1, 1, 1) * n_rows
    if uniform is None:
        uniform = table_uniform(x.shape, generator, x.device)
    key = row.to(torch.float64) + uniform.to(device=x.device, dtype=torch.float64)
    column = torch.searchsorted(flat, key.reshape(-1), right=True).reshape(x.shape) - row * n_values
    column = column.clamp(0, n_values - 1)
    return values.to(device=x.device, dtype=x.dtype)[column]


class NoiseModel(
    HubModel,
    tags=["sen2naip", "degradation", "noise", "sentinel-2"],
):
    """e as a Hub model: P(noise | reflectance) sampling (``table``), ``gaussian`` or ``none``.

    Args:
        mode: ``table`` (SEN2NAIP), ``gaussian`` (std = 0.025 × band RMS, as published) or ``none``.
        table_shape: ``(R, K)`` for one table shared by all bands, ``(4, R, K)`` for one per band.

    Buffers ``table``, ``edges`` (``R - 1`` reflectance bin edges) and ``values`` (``K`` noise values)
    hold the model. ``NoiseModel()`` alone has an empty (all-zero) table: the published table is
    learned data, not a constant, so load it (``NoiseModel.from_pretrained("sen2naip-hub/sen2naip-noise")``
    or a folder written by ``sen2naip convert-reference``) or build one with :meth:`from_table`.
    Sampling ``table`` noise from an empty table raises :class:`InvalidModelError` instead of silently
    adding zero noise; ``mode="none"`` is the way to ask for no noise.
    """

    def __init__(self, mode: str = "table", table_shape: tuple[int, ...] = (101, 101)) -> None:
        super().__init__()
        if mode not in NOISE_MODES:
            raise ValueError(f"noise mode must be one of {NOISE_MODES}, got {mode!r}")
        table_shape = tuple(int(n) for n in table_shape)
        if len(table_shape) not in (2, 3) or (len(table_shape) == 3 and table_shape[0] != N_BANDS):
            raise ValueError(f"table_shape must be (R, K) or ({N_BANDS}, R, K), got {table_shape}")
        self.mode = mode
        self.table_shape = table_shape
        self.register_buffer("table", torch.zeros(table_shape, dtype=torch.float64))  # empty until loaded
        self.register_buffer("edges", torch.zeros(table_shape[-2] - 1, dtype=torch.float64))
        self.register_buffer("values", torch.zeros(table_shape[-1], dtype=torch.float64))

    @classmethod
    def from_table(
        cls, table: torch.Tensor, edges: torch.Tensor, values: torch.Tensor, mode: str = "table"
    ) -> NoiseModel:
        """A model holding ``table`` ``(R, K)`` or ``(4, R, K)`` with its ``edges`` and ``values``."""
        model = cls(mode=mode, table_shape=tuple(table.shape))
        model.table.copy_(torch.as_tensor(table, dtype=torch.float64))
        model.edges.copy_(torch.as_tensor(edges, dtype=torch.float64))
        model.values.copy_(torch.as_tensor(values, dtype=torch.float64))
        return model

    def sample(
        self,
        x: torch.Tensor,
        generator: Generators = None,
        mode: str | None = None,
        *,
        uniform: torch.Tensor | None = None,
    ):
        """Noise for ``x`` ``(B, 4, h, w)`` LR reflectance (not yet added). ``uniform``: ``table`` mode's
        draws made ahead (:func:`table_uniform`, in place of drawing from ``generator``)."""
        mode = self.mode if mode is None else mode
        if uniform is not None and mode != "table":
            raise ValueError(f"uniform draws are the table mode's; this noise's mode is {mode!r}")
        if mode == "none":
            return torch.zeros_like(x)
        if mode == "gaussian":
            rms = torch.sqrt(torch.nanmean(x**2, dim=(-2, -1), keepdim=True))
            return rms * GAUSSIAN_RELATIVE_STD * draw(torch.randn, x.shape, generator, x.device, x.dtype)
        if mode == "table":
            self._check_table()
            return sample_table_noise(x, self.table, self.edges, self.values, generator, uniform=uniform)
        raise ValueError(f"noise mode must be one of {NOISE_MODES}, got {mode!r}")

    def _check_table(self) -> None:
        if not bool((self.table > 0).any()):
            raise InvalidModelError(
                "NoiseModel has no noise table (all zeros): load one with NoiseModel.from_pretrained"
                "(...) or NoiseModel.from_table(...), or use mode='none' for no noise"
            )

    def forward(
        self,
        x: torch.Tensor,
        generator: Generators = None,
        mode: str | None = None,
        *,
        uniform: torch.Tensor | None = None,
    ):
        """``x`` plus noise (arguments as :meth:`sample`)."""
        return x + self.sample(x, generator, mode, uniform=uniform)

    def noise_std(self) -> torch.Tensor:
        """Standard deviation of the noise in each reflectance bin: ``(R,)`` or ``(4, R)``."""
        p = self.table / self.table.sum(dim=-1, keepdim=True)
        mean = (p * self.values).sum(-1, keepdim=True)
        return torch.sqrt((p * (self.values - mean) ** 2).sum(-1))
