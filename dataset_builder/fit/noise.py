"""e from data: a blind denoiser trained with synthetic noise, then P(noise | reflectance) from real S2.

SEN2NAIP learned its noise table from Sentinel-2 scenes with a blind denoiser: a noise-level estimator
followed by a non-blind denoiser conditioned on the estimated noise map (after Zhou et al. 2019,
"When AWGN-based Denoiser Meets Real Noises", arXiv:1904.03485, and CBDNet, Guo et al. 2019).
Here:

1. ``BlindDenoiser`` (:mod:`dataset_builder.fit.denoiser`) = ``NoiseLevelEstimator`` (5 convolutions →
   a per-pixel, per-band σ map) + ``NonBlindDenoiser`` (a residual DnCNN-style stack fed the image and
   the σ map);
2. ``train_denoiser`` adds synthetic noise to clean Sentinel-2 patches — per patch and band
   ``σ(x) = a + b·x`` with ``a``, ``b`` uniform (``SYNTHETIC_NOISE``) — and trains the denoiser
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

from dataset_builder.fit.denoiser import BlindDenoiser, DenoiserTraining, estimator_error, train_denoiser
from sen2naip_hub.errors import Sen2NaipError
from sen2naip_hub.files import atomic_dir, save_figure, write_json
from sen2naip_hub.models import noise as _noise

NoiseModel = _noise.NoiseModel
published_noise_axes = _noise.published_noise_axes

__all__ = [
    "NoiseFitError",
    "NoiseTable",
    "accumulate_noise_table",
    "load_s2_scenes",
    "plot_noise_std",
    "save_noise_fit",
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
