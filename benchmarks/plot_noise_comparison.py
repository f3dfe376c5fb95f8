"""Plot a learned noise table's std per reflectance bin beside the published one and print the ratio.

    python benchmarks/plot_noise_comparison.py FIT_DIR --published models/sen2naip-noise \
        --out benchmarks/figures/noise_std_vs_published.png

``FIT_DIR`` is what ``sen2naip fit noise --out FIT_DIR`` wrote (a NoiseModel repo + noise_fit.json).
Only bins with enough pixels (``populated_bins`` in noise_fit.json) are compared.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from sen2naip_hub import NoiseModel


def bin_centres(edges: torch.Tensor) -> torch.Tensor:
    """One reflectance per table row: below the first edge, between edges, above the last."""
    step = float(edges[1] - edges[0])
    return torch.cat([edges[:1] - step / 2, (edges[1:] + edges[:-1]) / 2, edges[-1:] + step / 2])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("fit_dir", type=Path)
    parser.add_argument("--published", type=Path, default=Path("models/sen2naip-noise"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/figures/noise_std_vs_published.png"))
    parser.add_argument("--label", default="learned here (blind denoiser)")
    args = parser.parse_args()

    published = NoiseModel.from_pretrained(args.published)
    learned = NoiseModel.from_pretrained(args.fit_dir).noise_std()
    reference = published.noise_std()
    populated = torch.tensor(json.loads((args.fit_dir / "noise_fit.json").read_text())["populated_bins"])
    ratio = learned[populated] / reference[populated]
    centres = bin_centres(published.edges)

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot(
        centres[:-1], reference[:-1], label="published table (opensr-degradation 1.0.1)", color="tab:gray"
    )
    ax.plot(centres[populated], learned[populated], "o-", ms=3, label=args.label, color="tab:blue")
    ax.set_xlabel("reflectance")
    ax.set_ylabel("noise std (reflectance)")
    ax.set_title(f"noise std per reflectance bin: measured / published, median {float(ratio.median()):.2f}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(
        f"{len(populated)} bins: measured / published std median {float(ratio.median()):.3f} "
        f"(range {float(ratio.min()):.3f}–{float(ratio.max()):.3f}); wrote {args.out}"
    )


if __name__ == "__main__":
    main()
