"""The evaluation's output: a rich table, a JSON file (atomic) and a PNG (histograms beside spectra)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from dataset_builder.core.facts import EVALUATE_PLOT_BINS, EVALUATE_PLOT_RANGE
from sen2naip_hub.files import atomic_file, save_figure
from sen2naip_hub.sensors import SENTINEL2

__all__ = ["evaluation_table", "plot_evaluation", "plot_sr", "save_json", "sr_table"]

BANDS = SENTINEL2.all_bands


def _jsonable(value):
    """Dicts/lists of floats for JSON: plot-only keys dropped, non-finite floats as strings."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items() if not str(k).startswith("plot_")}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else str(float(value))
    if isinstance(value, np.integer):
        return int(value)
    return value


def save_json(result: dict, path: str | os.PathLike) -> Path:
    """``result`` as JSON (``"distance"`` first when present), written atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(_jsonable(result), indent=2))
    return Path(path)


def _row(values, fmt: str) -> list[str]:
    return [format(v, fmt) for v in values]


def evaluation_table(result: dict):
    """A :class:`rich.table.Table` of the per-band metrics, the terms and the distance."""
    from rich.table import Table

    table = Table(title=f"realism: distance = {result['distance']:.4f} (0 = identical distributions)")
    table.add_column("metric")
    for band in BANDS:
        table.add_column(band, justify="right")
    bands, spectrum = result["bands"], result["power_spectrum"]
    table.add_row(
        "mean (cand / ref)",
        *[
            f"{c:.4f} / {r:.4f}"
            for c, r in zip(bands["candidate_mean"], bands["reference_mean"], strict=True)
        ],
    )
    table.add_row(
        "std (cand / ref)",
        *[f"{c:.4f} / {r:.4f}" for c, r in zip(bands["candidate_std"], bands["reference_std"], strict=True)],
    )
    table.add_row("Wasserstein / ref std", *_row(bands["wasserstein_rel"], ".4f"))
    table.add_row("KS statistic", *_row(bands["ks"], ".4f"))
    table.add_row("mean |ln P ratio|", *_row(spectrum["log_ratio_mean_abs"], ".4f"))
    table.add_row("Nyquist share ratio", *_row(spectrum["nyquist_ratio"], ".3f"))
    paired = result.get("paired")
    if paired:
        table.add_row(f"L1 ({paired['pairs']} pairs)", *_row(paired["l1"], ".4f"))
        table.add_row("PSNR dB", *_row(paired["psnr"], ".2f"))
        table.add_row("SSIM", *_row(paired["ssim"], ".4f"))
    angle, noise = result["spectral_angle"], result["noise"]
    table.caption = (
        f"spectral angle to the reference mean: {angle['candidate_mean_deg']:.2f}° vs "
        f"{angle['reference_mean_deg']:.2f}°; noise std ratio (median over bins) "
        f"{noise['std_ratio_median']:.3f}"
        + (f"; mean |shift| {paired['shift_mean_abs_px']:.3f} px" if paired else "")
        + "\nterms: "
        + ", ".join(f"{k} {v:.4f}" for k, v in result["terms"].items())
    )
    return table


def sr_table(result: dict):
    """A :class:`rich.table.Table` of the SR consistency (and HR scores)."""
    from rich.table import Table

    table = Table(title=f"SR consistency over {result['pairs']} pairs (degraded SR vs LR)")
    table.add_column("metric")
    for band in BANDS:
        table.add_column(band, justify="right")
    table.add_row("L1 (reflectance)", *_row(result["l1"], ".4f"))
    for key in ("psnr", "ssim"):
        if key in result:
            table.add_row(f"{key.upper()} vs HR", *_row(result[key], ".4f"))
    table.caption = (
        f"spectral angle {result['spectral_angle_deg']:.3f}°; mean |residual shift| "
        f"{result['shift_mean_abs_px']:.3f} px"
    )
    return table


def _figure(rows: int, cols: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows))


def _broken(x: list[float], y: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """``x``, ``y`` with a NaN where bins are skipped, so that the line does not bridge the gap."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 2:
        return x, y
    gaps = np.flatnonzero(np.diff(x) > 1.5 * np.diff(x).min()) + 1
    return np.insert(x, gaps, np.nan), np.insert(y, gaps, np.nan)


def plot_evaluation(result: dict, path: str | os.PathLike) -> Path:
    """PNG: per-band histograms (top row) beside power spectra, spectral angles and noise (bottom row)."""
    fig, axes = _figure(2, 4)
    pixels = result["plot_pixels"]
    edges = np.linspace(*EVALUATE_PLOT_RANGE, EVALUATE_PLOT_BINS + 1)
    for band, ax in enumerate(axes[0]):
        for side, style in (("reference", "k-"), ("candidate", "C1--")):
            counts, _ = np.histogram(pixels[side][:, band], bins=edges, density=True)
            ax.plot((edges[:-1] + edges[1:]) / 2, counts, style, label=side)
        ax.set(title=f"{BANDS[band]} histogram", xlabel="reflectance")
    axes[0][0].legend(fontsize=8)
    spectrum = result["power_spectrum"]
    for band in range(len(BANDS)):
        axes[1][0].semilogy(spectrum["frequency"], spectrum["reference_power"][band], f"C{band}-")
        axes[1][0].semilogy(spectrum["frequency"], spectrum["candidate_power"][band], f"C{band}--")
    axes[1][0].set(title="radial power (— ref, -- cand)", xlabel="cycles / px")
    angles = result["plot_angles"]
    for side, style in (("reference", "k"), ("candidate", "C1")):
        axes[1][1].hist(angles[side], bins=60, density=True, histtype="step", color=style, label=side)
    axes[1][1].set(title="spectral angle to ref mean", xlabel="degrees")
    noise = result["noise"]
    axes[1][2].plot(*_broken(noise["reflectance"], noise["reference_std"]), "k.-", label="reference")
    axes[1][2].plot(*_broken(noise["reflectance"], noise["candidate_std"]), "C1.--", label="candidate")
    axes[1][2].set(title="noise std vs reflectance", xlabel="reflectance")
    axes[1][3].bar(list(result["terms"]), [v if math.isfinite(v) else 0 for v in result["terms"].values()])
    axes[1][3].set(title=f"distance terms (distance {result['distance']:.3f})")
    axes[1][3].tick_params(axis="x", rotation=60, labelsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_sr(result: dict, path: str | os.PathLike) -> Path:
    """PNG: L1 per band and the residual shifts of every pair."""
    fig, axes = _figure(1, 2)
    axes[0].bar(BANDS, result["l1"])
    axes[0].set(title="L1, degraded SR vs LR", ylabel="reflectance")
    shifts = np.asarray([p["shift"] for p in result["per_pair"].values()])
    axes[1].scatter(shifts[:, 1], shifts[:, 0])
    axes[1].set(title="residual shift per pair", xlabel="dx (LR px)", ylabel="dy (LR px)")
    fig.tight_layout()
    return save_figure(fig, path)
