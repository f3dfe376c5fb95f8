"""The blind denoiser that measures Sentinel-2 noise: a noise-level estimator and a non-blind denoiser,
trained together on real Sentinel-2 patches with synthetic noise (see :mod:`dataset_builder.fit.noise`,
which applies it to real scenes to learn the noise table).

Imports torch only, so it trains on the GPU machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BlindDenoiser",
    "DenoiserTraining",
    "NoiseLevelEstimator",
    "NonBlindDenoiser",
    "estimator_error",
    "random_patches",
    "synthetic_noise",
    "train_denoiser",
]

#: Synthetic training noise, reflectance: σ(x) = a + b·x per patch and band, a ~ U[a0, a1], b ~ U[b0, b1].
#: It spans the published table's std (≈ 0.001 at dark to ≈ 0.004 at bright pixels) several times over.
SYNTHETIC_NOISE: dict[str, tuple[float, float]] = {"a": (0.0, 0.006), "b": (0.0, 0.02)}
#: The networks see reflectance minus each patch's band mean, divided by this (reflectance), so that
#: noise of ~0.001–0.01 is not lost against signal levels of ~0.05–0.5; σ maps and residuals are fed
#: and predicted in the same unit.
SIGNAL_UNIT: float = 0.02
#: Unit of the high-pass input of the noise-level estimator (reflectance; the order of the noise).
HIGH_PASS_UNIT: float = 0.005
#: Weight of the estimator's L1 loss beside the denoiser's.
ESTIMATOR_WEIGHT: float = 1.0


def random_patches(
    scenes: Sequence[torch.Tensor], n: int, size: int, generator: torch.Generator
) -> torch.Tensor:
    """``(n, 4, size, size)`` random crops (uniform scene, position, flip and 90° rotation)."""
    out = []
    picks = torch.randint(len(scenes), (n,), generator=generator)
    for k in picks.tolist():
        scene = scenes[k]
        y = int(torch.randint(scene.shape[1] - size + 1, (1,), generator=generator))
        x = int(torch.randint(scene.shape[2] - size + 1, (1,), generator=generator))
        patch = scene[:, y : y + size, x : x + size]
        rot, flip = torch.randint(4, (2,), generator=generator).tolist()
        patch = torch.rot90(patch, rot, (1, 2))
        out.append(patch.flip(2) if flip % 2 else patch)
    return torch.stack(out)


def synthetic_noise(
    clean: torch.Tensor, generator: torch.Generator, ranges: dict[str, tuple[float, float]] = SYNTHETIC_NOISE
) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy patches and their true σ map for ``clean`` ``(B, 4, H, W)`` (draws on the CPU generator)."""
    shape = (clean.shape[0], clean.shape[1], 1, 1)
    a = torch.empty(shape).uniform_(*ranges["a"], generator=generator)
    b = torch.empty(shape).uniform_(*ranges["b"], generator=generator)
    sigma = (a.to(clean.device) + b.to(clean.device) * clean).clamp_min(0)
    draw = torch.randn(clean.shape, generator=generator).to(clean.device)
    return clean + sigma * draw, sigma


# ----------------------------------------------------------------------------- networks
def _normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - x.mean(dim=(-2, -1), keepdim=True)) / SIGNAL_UNIT


def _high_pass(x: torch.Tensor) -> torch.Tensor:
    """x minus its 3×3 mean, in :data:`HIGH_PASS_UNIT`: the finest scale, where noise dominates texture
    (the classic cue of noise-level estimation, e.g. Donoho's finest-wavelet MAD)."""
    low = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), 3, stride=1)
    return (x - low) / HIGH_PASS_UNIT


def _conv(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1, padding_mode="reflect")


class NoiseLevelEstimator(nn.Module):
    """Image ``(B, 4, H, W)`` → σ map ``(B, 4, H, W)`` (reflectance) through a noise-level function.

    A small CNN whose features are averaged over the image give, per band, ``a`` and ``b`` of
    σ(x) = a + b·x (the affine noise-level function of signal-dependent sensor noise, Foi et al. 2008,
    "Practical Poissonian-Gaussian noise modeling", IEEE TIP 17(10)); the map is that function of the
    pixel's reflectance. Pooling over the whole patch makes the estimate far steadier than a per-pixel
    regression from a small receptive field; the head also sees each band's high-pass std and mean.
    On 10 m Sentinel-2 the finest-scale texture (high-pass std ≈ 0.007–0.010 on the sample) is larger
    than the noise (≈ 0.001–0.004), so per-patch estimates stay rough.
    """

    def __init__(self, channels: int = 32, depth: int = 5) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv(8, channels), nn.ReLU(inplace=True)]
        for _ in range(depth - 1):
            layers += [_conv(channels, channels), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels + 8, 8)

    def noise_level_function(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(a, b)``, each ``(B, 4, 1, 1)``, reflectance (``a``) and per unit reflectance (``b``)."""
        high = _high_pass(x)
        pooled = self.features(torch.cat([_normalise(x), high], dim=1)).mean(dim=(-2, -1))
        stats = torch.cat([high.std(dim=(-2, -1)), x.mean(dim=(-2, -1)) / SIGNAL_UNIT], dim=1)
        params = F.softplus(self.head(torch.cat([pooled, stats], dim=1)))
        a, b = params[:, :4], params[:, 4:]
        return (a * SIGNAL_UNIT)[..., None, None], (b * SIGNAL_UNIT)[..., None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.noise_level_function(x)
        return a + b * x.clamp_min(0)


class NonBlindDenoiser(nn.Module):
    """Residual denoiser conditioned on a σ map (DnCNN-style, Zhang et al. 2017; FFDNet-like input)."""

    def __init__(self, channels: int = 48, depth: int = 8) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv(8, channels), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [_conv(channels, channels), nn.ReLU(inplace=True)]
        layers.append(_conv(channels, 4))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        residual = self.body(torch.cat([_normalise(x), sigma / SIGNAL_UNIT], dim=1)) * SIGNAL_UNIT
        return x - residual


class BlindDenoiser(nn.Module):
    """Estimator + non-blind denoiser; ``forward`` returns ``(denoised, σ map)``."""

    def __init__(self, estimator_channels: int = 32, denoiser_channels: int = 48, depth: int = 8) -> None:
        super().__init__()
        self.config = {
            "estimator_channels": estimator_channels,
            "denoiser_channels": denoiser_channels,
            "depth": depth,
        }
        self.estimator = NoiseLevelEstimator(estimator_channels)
        self.denoiser = NonBlindDenoiser(denoiser_channels, depth)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sigma = self.estimator(x)
        return self.denoiser(x, sigma), sigma


# ----------------------------------------------------------------------------- training
@dataclass
class DenoiserTraining:
    """Training settings (every random draw from ``seed``)."""

    steps: int = 2000
    batch_size: int = 16
    patch: int = 48
    lr: float = 1e-3
    seed: int = 0
    device: str = "cpu"
    estimator_channels: int = 32
    denoiser_channels: int = 48
    depth: int = 8


def train_denoiser(
    scenes: Sequence[torch.Tensor], settings: DenoiserTraining | None = None, progress: bool = False
) -> tuple[BlindDenoiser, list[float]]:
    """Train a :class:`BlindDenoiser` on ``scenes`` with synthetic noise; returns it and the losses."""
    settings = settings or DenoiserTraining()
    torch.manual_seed(settings.seed)
    device = torch.device(settings.device)
    model = BlindDenoiser(settings.estimator_channels, settings.denoiser_channels, settings.depth).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(settings.steps, 1))
    generator = torch.Generator().manual_seed(settings.seed)
    scenes = [s.to(device) for s in scenes]
    losses = []
    steps = range(settings.steps)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="denoiser", unit="step")
    model.train()
    for _ in steps:
        clean = random_patches(scenes, settings.batch_size, settings.patch, generator)
        noisy, sigma = synthetic_noise(clean, generator)
        denoised, estimate = model(noisy)
        loss = (denoised - clean).abs().mean() + ESTIMATOR_WEIGHT * (estimate - sigma).abs().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
    return model.eval(), losses


@torch.no_grad()
def estimator_error(
    model: BlindDenoiser, scenes: Sequence[torch.Tensor], n: int = 64, patch: int = 48, seed: int = 1
) -> dict[str, float]:
    """Mean |σ̂ − σ| on synthetic noise over ``n`` patches of ``scenes`` (held out by the caller),
    beside the error of the best fixed guess of the training distribution (its mean σ)."""
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    clean = random_patches([s.to(device) for s in scenes], n, patch, generator)
    noisy, sigma = synthetic_noise(clean, generator)
    denoised, estimate = model(noisy)
    crop = (slice(None), slice(None), slice(4, -4), slice(4, -4))
    truth = sigma.expand_as(clean)[crop]
    guess = float(_training_mean_sigma(clean))
    return {
        "estimator_mae": float((estimate[crop] - truth).abs().mean()),
        "fixed_guess_mae": float((guess - truth).abs().mean()),
        "fixed_guess": guess,
        "denoised_mae": float((denoised - clean)[crop].abs().mean()),
        "noisy_mae": float((noisy - clean)[crop].abs().mean()),
    }


def _training_mean_sigma(clean: torch.Tensor) -> torch.Tensor:
    a, b = SYNTHETIC_NOISE["a"], SYNTHETIC_NOISE["b"]
    return (a[0] + a[1]) / 2 + (b[0] + b[1]) / 2 * clean.mean()
