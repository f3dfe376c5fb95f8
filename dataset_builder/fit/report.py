"""Judge a fitted degradation: metrics on held-out pairs against baselines, and a markdown + PNG report.

Baselines, all at LR resolution on the same held-out pairs:

- ``identity``: HR as it is, area-averaged ×4 (NAIP radiometry, no PSF);
- ``bicubic``: HR bicubic ×1/4 with antialiasing (the usual "just downsample" LR);
- ``histogram match``: δ(HR) with each band's values mapped by one global quantile mapping, fitted on
  the *training* pairs (δ(HR) → LR, all pixels pooled): what a per-band radiometric transfer without a
  network achieves;
- ``published``: the SEN2NAIP degradation (opensr-degradation 1.0.1 weights), when installed.

Metrics: MAE (reflectance, per band and mean) and mean spectral angle (degrees), noise off, since noise
is random per draw; the spectral-distribution figure uses the full model with noise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sen2naip_hub.files import atomic_file, save_figure
from sen2naip_hub.metrics import spectral_angle
from sen2naip_hub.models.histogram import match_histograms

__all__ = ["HistogramMatch", "lr_metrics", "plot_distributions", "render_report", "standard_baselines"]

BAND_NAMES: tuple[str, ...] = ("B04", "B03", "B02", "B08")
#: Quantiles of the global histogram-match baseline (enough for smooth 16-bit-like mappings).
N_QUANTILES: int = 512
Predictor = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class HistogramMatch:
    """Global histogram matching as a baseline: each band of an input gets the histogram of the
    training LR (all pairs pooled, as ``N_QUANTILES`` quantiles), by the library's matcher
    (:func:`sen2naip_hub.models.histogram.match_histograms`)."""

    target: torch.Tensor  # (C, Q) quantiles of the training LR per band

    @classmethod
    def fit(cls, target: torch.Tensor, n: int = N_QUANTILES) -> HistogramMatch:
        """From ``(N, C, h, w)`` training LR images (all pixels pooled per band)."""
        q = torch.linspace(0, 1, n, dtype=torch.float64)
        pooled = target.transpose(0, 1).reshape(target.shape[1], -1).double()
        return cls(torch.quantile(pooled, q, dim=1).T.contiguous())

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        reference = self.target.to(x.dtype)[None, :, None, :].expand(x.shape[0], -1, -1, -1)
        return match_histograms(x, reference.contiguous())


def lr_metrics(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """MAE per band and mean (reflectance) and mean spectral angle (degrees) of ``(N, 4, h, w)`` tensors."""
    mae = (pred - target).abs().mean(dim=(0, 2, 3))
    out = {f"mae_{b}": float(v) for b, v in zip(BAND_NAMES, mae, strict=True)}
    out["mae"] = float(mae.mean())
    out["sam_deg"] = float(torch.rad2deg(spectral_angle(pred.double(), target.double())).nanmean())
    return out


def standard_baselines(train_hr: torch.Tensor, train_lr: torch.Tensor, blur) -> dict[str, Predictor]:
    """``identity``, ``bicubic`` and ``histogram match`` (fitted on the training pairs through ``blur``)."""
    scale = train_hr.shape[-1] // train_lr.shape[-1]
    with torch.no_grad():
        match = HistogramMatch.fit(train_lr)

    def identity(hr: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(hr, scale)

    def bicubic(hr: torch.Tensor) -> torch.Tensor:
        return F.interpolate(hr, scale_factor=1 / scale, mode="bicubic", antialias=True, align_corners=False)

    def histogram_match(hr: torch.Tensor) -> torch.Tensor:
        return match(blur(hr))

    return {"identity": identity, "bicubic": bicubic, "histogram match": histogram_match}


@torch.no_grad()
def evaluate(predictors: dict[str, Predictor], hr: torch.Tensor, lr: torch.Tensor, batch: int = 16) -> dict:
    """``{name: lr_metrics}`` of each predictor over the pairs (in batches)."""
    results = {}
    for name, predict in predictors.items():
        preds = torch.cat([predict(hr[i : i + batch]).float().cpu() for i in range(0, hr.shape[0], batch)])
        results[name] = lr_metrics(preds, lr)
    return results


def plot_distributions(degraded: torch.Tensor, real: torch.Tensor, path: str | Path) -> Path:
    """Per-band histograms of degraded HR vs real LR reflectance (the paper's distribution figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(14, 3.2))
    for b, ax in enumerate(axes):
        real_b, deg_b = real[:, b].flatten().numpy(), degraded[:, b].flatten().numpy()
        high = float(np.quantile(np.concatenate([real_b, deg_b]), 0.999))
        bins = np.linspace(0, max(high, 1e-3), 80)
        ax.hist(real_b, bins=bins, density=True, alpha=0.55, color="tab:blue", label="real LR")
        ax.hist(deg_b, bins=bins, density=True, alpha=0.55, color="tab:orange", label="degraded HR")
        ax.set(title=BAND_NAMES[b], xlabel="reflectance")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def render_report(results: dict, info: dict, figures: dict[str, str]) -> str:
    """The markdown report: setup, the metrics table (best MAE in bold), the figures."""
    lines = ["# Fitted SEN2NAIP degradation: report", ""]
    lines += [f"- **{k}**: {v}" for k, v in info.items()]
    lines += ["", "## Held-out pairs (noise off)", ""]
    header = ["model", "MAE", "spectral angle (°)", *[f"MAE {b}" for b in BAND_NAMES]]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    best = min(r["mae"] for r in results.values())
    for name, r in results.items():
        mae = f"**{r['mae']:.5f}**" if r["mae"] == best else f"{r['mae']:.5f}"
        cells = [name, mae, f"{r['sam_deg']:.3f}", *[f"{r[f'mae_{b}']:.5f}" for b in BAND_NAMES]]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for title, rel in figures.items():
        lines += [f"## {title}", "", f"![{title}]({rel})", ""]
    return "\n".join(lines)


def write_report(out: str | Path, results: dict, info: dict, figures: dict[str, str]) -> Path:
    """Write ``report.md`` atomically (figure paths relative to ``out``)."""
    path = Path(out) / "report.md"
    with atomic_file(path) as tmp:
        tmp.write_text(render_report(results, info, figures))
    return path


def assemble_and_report(
    out: str | Path, pairs, train_idx: list[int], val_idx: list[int], seed: int = 0
) -> Path:
    """Assemble ``out/degradation`` from ``out/{blur,harmonization,noise}`` and write ``out/report.md``,
    ``out/metrics.json`` and ``out/spectral_distributions.png`` (held-out pairs: ``val_idx``)."""
    import json

    from sen2naip_hub.files import atomic_dir, write_json
    from sen2naip_hub.models import BlurModel, Degradation, HarmonizationModel, NoiseModel

    out = Path(out)
    blur = BlurModel.from_pretrained(out / "blur")
    model = Degradation(
        HarmonizationModel.from_pretrained(out / "harmonization"),
        blur,
        NoiseModel.from_pretrained(out / "noise"),
    )
    with atomic_dir(out / "degradation") as tmp:
        model.card_source = "Assembled by `sen2naip fit all` from the fitted blur, harmonization and noise."
        model.save_pretrained(tmp)
    train, val = pairs.subset(train_idx), pairs.subset(val_idx)
    predictors: dict[str, Predictor] = {"fitted": lambda hr: model(hr, noise=False).lr}
    published = _published_degradation()
    if published is not None:
        predictors["published"] = lambda hr: published(hr, noise=False).lr
    predictors.update(standard_baselines(train.hr, train.lr, blur))
    results = evaluate(predictors, val.hr, val.lr)
    with torch.no_grad():
        degraded = model(val.hr, generator=torch.Generator().manual_seed(seed)).lr
    plot_distributions(degraded, val.lr, out / "spectral_distributions.png")
    blur_info = json.loads((out / "blur" / "blur_search.json").read_text())
    noise_info = json.loads((out / "noise" / "noise_fit.json").read_text())
    info = {
        "pairs": f"{len(pairs)} from {pairs.source}; {len(train)} train / {len(val)} held-out (split by ROI)",
        "blur": f"{blur_info['kernel']} + {blur_info['downsample']}, σ = {blur_info['sigmas']}",
        "noise": f"measured / published std (median over populated bins) = {noise_info.get('ratio_median')}",
        "published model": "included" if published is not None else "not installed (opensr-degradation)",
    }
    write_json(out / "metrics.json", {"results": results, "info": info})
    figures = {
        "Spectral distributions (held-out, with noise)": "spectral_distributions.png",
        "Blur error curves": "blur/error_curves.png",
        "Noise std per reflectance bin": "noise/noise_std.png",
    }
    return write_report(out, results, info, figures)


def _published_degradation():
    try:
        from sen2naip_hub.convert import load_reference_parts
        from sen2naip_hub.models import Degradation

        return Degradation(**load_reference_parts())
    except (ImportError, FileNotFoundError):
        return None
