"""e from data: a blind denoiser trained with synthetic noise, then P(noise | reflectance) from real S2.

SEN2NAIP learned its noise table from Sentinel-2 scenes with a blind denoiser: a noise-level estimator
followed by a non-blind denoiser conditioned on the estimated noise map (after Zhou et al. 2019,
"When AWGN-based Denoiser Meets Real Noises", arXiv:1904.03485, and CBDNet, Guo et al. 2019).
Here:

1. :class:`BlindDenoiser` = :class:`NoiseLevelEstimator` (5 convolutions → a per-pixel, per-band σ map)
   + :class:`NonBlindDenoiser` (a residual DnCNN-style stack fed the image and the σ map);
2. :func:`train_denoiser` adds synthetic noise to clean Sentinel-2 patches — per patch and band
   ``σ(x) = a + b·x`` with ``a``, ``b`` uniform (:data:`SYNTHETIC_NOISE`) — and trains the denoiser
   (L1 to the clean patch) and the estimator (L1 to the true σ map) together;
3. :func:`accumulate_noise_table` applies it to real Sentinel-2: residual = S2 − denoised, reflectance
   = denoised; counts per reflectance bin (``np.digitize`` on the published edges) × noise value (the
   nearest of the published 101 values), per band and shared; rows normalised to probabilities.

The "clean" patches are real Sentinel-2 and so already carry the sensor's own noise; a denoiser
trained to remove *added* noise on top of them learns to keep part of it. The measured table is
therefore a lower bound on the sensor noise, and the report states the measured ratio to the
published table as it is.

Imports torch and numpy only (and ``sen2naip_hub``'s noise module), so it trains on the GPU machine.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dataset_builder.fit._files import atomic_dir, write_json
from sen2naip_hub.errors import Sen2NaipError
from sen2naip_hub.files import save_figure
from sen2naip_hub.models import noise as _noise

NoiseModel = _noise.NoiseModel
published_noise_axes = _noise.published_noise_axes

__all__ = [
    "BlindDenoiser",
    "NoiseFitError",
    "NoiseLevelEstimator",
    "NoiseTable",
    "NonBlindDenoiser",
    "accumulate_noise_table",
    "load_s2_scenes",
    "plot_noise_std",
    "save_noise_fit",
    "train_denoiser",
]

#: ``spyndex_S2_10m.json`` (PyPI spyndex 0.12.0, ``data/S2_10m.json``): 4 arrays B02, B03, B04, B08, DN.
SPYNDEX_FILE = "s2/spyndex_S2_10m.json"
SPYNDEX_TO_PROJECT_ORDER: tuple[int, ...] = (2, 1, 0, 3)  # → B04, B03, B02, B08
#: ``REFERENCE_SCENES.npy`` (eo-learn example data): (5 dates, 101, 100, 13 bands B01…B12 incl. B8A,
#: B10), L1C reflectance. B04, B03, B02, B08 are indices 3, 2, 1, 7; dates 0–1 are cloudy, 2–4 clear.
REFERENCE_FILE = "s2/REFERENCE_SCENES.npy"
REFERENCE_BANDS: tuple[int, ...] = (3, 2, 1, 7)
REFERENCE_CLEAR_DATES: tuple[int, ...] = (2, 3, 4)
#: Sentinel-2 digital numbers per unit reflectance.
S2_DN_SCALE: float = 10000.0

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
#: Pixels dropped at each scene border when accumulating residuals (the networks' receptive field
#: reaches 8 px; reflect padding keeps the border reasonable but not exact).
BORDER_PX: int = 8
#: A reflectance bin needs this many pixels before its std is plotted and compared.
MIN_BIN_COUNT: int = 200


class NoiseFitError(Sen2NaipError, ValueError):
    """No Sentinel-2 scenes, scenes of the wrong shape, or a table that does not fit the axes."""


# ----------------------------------------------------------------------------- data
def _as_scene(array: np.ndarray, name: str) -> torch.Tensor:
    scene = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    if scene.ndim != 3 or scene.shape[0] != 4 or min(scene.shape[1:]) < 32:
        raise NoiseFitError(f"{name}: expected a (4, H, W) scene with H, W >= 32, got {tuple(scene.shape)}")
    if not torch.isfinite(scene).all() or scene.min() < 0 or scene.max() > 1:
        raise NoiseFitError(f"{name}: expected finite reflectance in [0, 1]")
    return scene


def load_s2_scenes(
    sample_dir: str | Path | None = None, paths: Sequence[str | Path] = ()
) -> list[torch.Tensor]:
    """Clean Sentinel-2 scenes ``(4, H, W)`` reflectance, bands B04, B03, B02, B08.

    ``sample_dir``: the project's sample (``spyndex_S2_10m.json`` and the three clear dates of
    ``REFERENCE_SCENES.npy``). ``paths``: more scenes, ``.npy`` ``(4, H, W)`` / ``(N, 4, H, W)``
    reflectance or GeoTIFFs B04, B03, B02, B08 (read with ``sen2naip_hub.io``, which needs rasterio).
    """
    scenes: list[torch.Tensor] = []
    if sample_dir is not None:
        sample_dir = Path(sample_dir)
        spyndex = np.asarray(json.loads((sample_dir / SPYNDEX_FILE).read_text()), dtype=np.float32)
        scenes.append(_as_scene(spyndex[list(SPYNDEX_TO_PROJECT_ORDER)] / S2_DN_SCALE, SPYNDEX_FILE))
        reference = np.load(sample_dir / REFERENCE_FILE)
        for date in REFERENCE_CLEAR_DATES:
            bands = reference[date][..., list(REFERENCE_BANDS)].transpose(2, 0, 1)
            scenes.append(_as_scene(bands, f"{REFERENCE_FILE}[{date}]"))
    for path in map(Path, paths):
        if path.suffix == ".npy":
            array = np.load(path)
            for i, scene in enumerate(array if array.ndim == 4 else array[None]):
                scenes.append(_as_scene(scene, f"{path}[{i}]"))
        else:
            from sen2naip_hub.io import read_raster
            from sen2naip_hub.sensors import SENTINEL2

            scenes.append(_as_scene(read_raster(path, SENTINEL2).data, str(path)))
    if not scenes:
        raise NoiseFitError("no Sentinel-2 scenes: give a sample folder or scene paths")
    return scenes


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


# ----------------------------------------------------------------------------- table
@dataclass
class NoiseTable:
    """Counts ``(4, R, K)`` of (reflectance bin, noise value) and the axes; ``dropped``: residuals
    outside the values' range (not counted)."""

    counts: torch.Tensor
    edges: torch.Tensor
    values: torch.Tensor
    dropped: int
    total: int

    def probabilities(self, per_band: bool) -> torch.Tensor:
        """Row-normalised table ``(4, R, K)`` or shared ``(R, K)``; empty rows copy the nearest
        non-empty row (reflectance bins the scenes never reach)."""
        counts = self.counts if per_band else self.counts.sum(0, keepdim=True)
        out = torch.stack([_fill_empty_rows(c) for c in counts])
        out = out / out.sum(-1, keepdim=True)
        return out if per_band else out[0]

    def to_model(self, per_band: bool = False) -> torch.nn.Module:
        return NoiseModel.from_table(self.probabilities(per_band), self.edges, self.values)


def _fill_empty_rows(counts: torch.Tensor) -> torch.Tensor:
    rows = counts.sum(-1)
    full = torch.nonzero(rows > 0).flatten()
    if full.numel() == 0:
        raise NoiseFitError("no residual fell inside the noise values' range: nothing to tabulate")
    nearest = full[(torch.arange(rows.numel())[:, None] - full[None, :]).abs().argmin(dim=1)]
    return counts[nearest]


@torch.no_grad()
def accumulate_noise_table(
    model: BlindDenoiser,
    scenes: Sequence[torch.Tensor],
    edges: torch.Tensor | None = None,
    values: torch.Tensor | None = None,
    border: int = BORDER_PX,
) -> NoiseTable:
    """Residuals S2 − denoised(S2) of every scene, tabulated by reflectance bin and noise value."""
    default_edges, default_values = published_noise_axes()
    edges = default_edges if edges is None else edges.to(torch.float64)
    values = default_values if values is None else values.to(torch.float64)
    step = float(values[1] - values[0])
    n_rows, n_values = edges.numel() + 1, values.numel()
    counts = torch.zeros(4, n_rows, n_values, dtype=torch.float64)
    dropped = total = 0
    device = next(model.parameters()).device
    for scene in scenes:
        denoised, _ = model(scene[None].to(device))
        inner = (slice(None), slice(border, -border), slice(border, -border))
        signal = denoised[0][inner].double().cpu()
        residual = scene[inner].double() - signal
        row = torch.bucketize(signal, edges, right=True)
        col = torch.round((residual - float(values[0])) / step).long()
        keep = (col >= 0) & (col < n_values)
        dropped += int((~keep).sum())
        total += keep.numel()
        band = torch.arange(4).reshape(4, 1, 1).expand_as(row)
        flat = (band * n_rows + row) * n_values + col
        counts += torch.bincount(flat[keep], minlength=counts.numel()).reshape(counts.shape).double()
    return NoiseTable(counts, edges, values, dropped, total)


def published_noise_std() -> torch.Tensor | None:
    """The published table's std per reflectance bin ``(101,)``, or ``None`` when opensr-degradation
    (or smp, which the converter imports) is not installed."""
    try:
        from sen2naip_hub.convert import load_reference_parts

        return load_reference_parts()["noise"].noise_std()
    except (ImportError, FileNotFoundError):
        return None


def std_comparison(table: NoiseTable, published: torch.Tensor | None) -> dict:
    """Measured std per bin (shared and per band), the bins with ≥ :data:`MIN_BIN_COUNT` pixels, and the
    median ratio measured / published over those bins."""
    measured = table.to_model(per_band=False).noise_std()
    per_band = table.to_model(per_band=True).noise_std()
    row_counts = table.counts.sum(dim=(0, 2))
    populated = row_counts >= MIN_BIN_COUNT
    out = {
        "shared_std": measured.tolist(),
        "band_std": per_band.tolist(),
        "row_counts": row_counts.tolist(),
        "populated_bins": torch.nonzero(populated).flatten().tolist(),
        "dropped_fraction": table.dropped / max(table.total, 1),
        "ratio_median": None,
    }
    if published is not None and populated.any():
        ratio = measured[populated] / published[populated].clamp_min(1e-12)
        out["published_std"] = published.tolist()
        out["ratio_median"] = float(ratio.median())
        out["ratio_range"] = [float(ratio.min()), float(ratio.max())]
    return out


def plot_noise_std(table: NoiseTable, comparison: dict, path: str | Path) -> Path:
    """PNG: noise std per reflectance bin, measured (shared and per band) beside the published table's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = table.edges.numpy()
    step = float(edges[1] - edges[0])
    centres = np.concatenate([[edges[0] - step / 2], edges + step / 2])
    populated = np.asarray(comparison["populated_bins"], dtype=int)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    if "published_std" in comparison:
        ax.plot(
            centres, comparison["published_std"], "k-", lw=2, label="published (opensr-degradation 1.0.1)"
        )
    ax.plot(
        centres[populated], np.asarray(comparison["shared_std"])[populated], "o-", label="measured, shared"
    )
    for b, name in enumerate(("B04", "B03", "B02", "B08")):
        std = np.asarray(comparison["band_std"][b])[populated]
        ax.plot(centres[populated], std, ".", ms=4, alpha=0.7, label=f"measured, {name}")
    ratio = comparison.get("ratio_median")
    title = "noise std per reflectance bin"
    if ratio is not None:
        title += f" — measured / published (median) = {ratio:.2f}"
    ax.set(xlabel="reflectance", ylabel="noise std (reflectance)", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def save_noise_fit(
    table: NoiseTable,
    out: str | Path,
    per_band: bool = False,
    denoiser: BlindDenoiser | None = None,
    extra: dict | None = None,
) -> Path:
    """Write the :class:`NoiseModel` repo (shared table unless ``per_band``) with ``noise_fit.json``,
    ``noise_std.png`` and, if given, the denoiser's weights (``denoiser.safetensors``)."""
    import safetensors.torch

    comparison = std_comparison(table, published_noise_std())
    out = Path(out)
    with atomic_dir(out) as tmp:
        model = table.to_model(per_band)
        model.card_source = "Fitted by `sen2naip fit noise`: blind-denoiser residuals of Sentinel-2 scenes."
        model.save_pretrained(tmp)
        write_json(tmp / "noise_fit.json", {**comparison, **(extra or {}), "per_band": per_band})
        plot_noise_std(table, comparison, tmp / "noise_std.png")
        if denoiser is not None:
            state = {k: v.detach().cpu().contiguous() for k, v in denoiser.state_dict().items()}
            safetensors.torch.save_file(state, str(tmp / "denoiser.safetensors"))
    return out


def fit_noise(
    scenes: Sequence[torch.Tensor],
    out: str | Path,
    settings: DenoiserTraining | None = None,
    per_band: bool = False,
    holdout: int = 1,
    progress: bool = False,
) -> tuple[Path, dict]:
    """Train on all scenes but the last ``holdout``, check the estimator on those, tabulate all scenes,
    and write the repo. Returns the repo path and the summary (estimator check, ratio)."""
    settings = settings or DenoiserTraining()
    if len(scenes) <= holdout:
        raise NoiseFitError(f"need more than {holdout} scenes, got {len(scenes)}")
    train, held = list(scenes[:-holdout]) if holdout else list(scenes), list(scenes[-holdout:])
    model, losses = train_denoiser(train, settings, progress)
    check = estimator_error(model, held or train, patch=min(settings.patch, *_min_size(held or train)))
    table = accumulate_noise_table(model, scenes)
    extra = {
        "estimator_check": check,
        "final_loss": losses[-1] if losses else math.nan,
        "steps": settings.steps,
    }
    repo = save_noise_fit(table, out, per_band, model, extra)
    summary = json.loads((repo / "noise_fit.json").read_text())
    return repo, summary


def _min_size(scenes: Sequence[torch.Tensor]) -> tuple[int, int]:
    return min(s.shape[1] for s in scenes), min(s.shape[2] for s in scenes)
