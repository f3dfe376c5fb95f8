"""What ``sen2naip fit blur`` leaves: the error-curve figure and a BlurModel repo with the search's JSON."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dataset_builder.fit.blur_search import BlurSearchResult
from sen2naip_hub.files import atomic_dir, save_figure, write_json

__all__ = ["plot_error_curves", "save_blur_search"]


def plot_error_curves(result: BlurSearchResult, path: str | Path) -> Path:
    """PNG: MAE vs σ per band for the chosen family × mode (best σ marked), as the paper's Fig. 4,
    and beside it the summed MAE of every family × mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f, m = result.families.index(result.kernel), result.modes.index(result.downsample)
    grid = np.asarray(result.sigma_grid)
    colors = ("tab:red", "tab:green", "tab:blue", "tab:purple")
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1.6, 1]})
    for c, name in enumerate(result.band_names):
        curve = result.mae[c, f, m].numpy()
        ax.plot(grid, curve, color=colors[c % 4], label=f"{name}: σ = {result.sigmas[c]:.2f}")
        ax.plot([result.sigmas[c]], [result.band_mae[c]], "o", color=colors[c % 4], ms=7)
        ax.axvline(result.sigmas[c], color=colors[c % 4], ls=":", lw=0.8)
    ax.set(xlabel="σ (HR pixels)", ylabel="MAE (reflectance)")
    ax.set_title(f"{result.kernel} PSF + {result.downsample} ×{result.scale}, {result.n_pairs} pairs")
    ax.legend()
    totals = result.family_mode_totals().numpy()
    image = ax2.imshow(totals, cmap="viridis")
    ax2.set_xticks(range(len(result.modes)), result.modes)
    ax2.set_yticks(range(len(result.families)), result.families)
    for (i, j), value in np.ndenumerate(totals):
        ax2.text(j, i, f"{value:.4g}", ha="center", va="center", color="w", fontsize=8)
    ax2.set_title("Σ bands of min MAE")
    fig.colorbar(image, ax=ax2, shrink=0.8)
    fig.tight_layout()
    return save_figure(fig, path)


def save_blur_search(result: BlurSearchResult, out: str | Path, plot: bool = True) -> Path:
    """Write the :class:`BlurModel` repo (``save_pretrained``) with ``blur_search.json`` and
    ``error_curves.png`` beside the weights; the folder appears only once complete."""
    out = Path(out)
    with atomic_dir(out) as tmp:
        model = result.to_model()
        model.card_source = (
            f"Fitted by `sen2naip fit blur` on {result.n_pairs} HR/LR pairs (MAE grid search over "
            f"{len(result.sigma_grid)} σ × {len(result.families)} kernels × {len(result.modes)} modes)."
        )
        model.save_pretrained(tmp)
        write_json(tmp / "blur_search.json", result.summary())
        if plot:
            plot_error_curves(result, tmp / "error_curves.png")
    return out
