"""``make demo``: the main job on the real sample imagery in ``../shared/sample``.

Converts the published weights if ``models/`` lacks them, degrades every real NAIP image of the
sample into an S2-like COG, and draws NAIP | S2-like LR | real Sentinel-2 (farmland) side by side.
The sample NAIP is resampled to 5 m (native 0.6–1 m; SEN2NAIP uses 2.5 m), so its ×4 LR is at 20 m.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from sen2naip_hub.convert import REPO_NAMES, convert_reference, reference_is_converted
from sen2naip_hub.errors import SampleNotFoundError
from sen2naip_hub.io import read_raster, write_raster
from sen2naip_hub.models import Degradation
from sen2naip_hub.pipeline import degrade_raster
from sen2naip_hub.sensors import NAIP, SENTINEL2

#: The real Sentinel-2 scene of the sample (spyndex ``S2_10m.json``): bands B02, B03, B04, B08, DN.
REAL_S2_FILE = Path("s2") / "spyndex_S2_10m.json"
REAL_S2_BAND_ORDER = ("B02", "B03", "B04", "B08")
#: Display gain for reflectance (Sentinel-2 true colour is dark; ×3.5 is a common quick-look stretch).
DISPLAY_GAIN = 3.5


def find_naip(sample_dir: Path) -> list[Path]:
    """The sample's NAIP GeoTIFFs, or a :class:`SampleNotFoundError` saying where imagery goes."""
    files = sorted((sample_dir / "naip").glob("*.tif"))
    if not files:
        raise SampleNotFoundError(
            f"{sample_dir / 'naip'}: no NAIP GeoTIFFs found; put the sample imagery in ../shared/sample "
            "(naip/*.tif) or point SEN2NAIP_SAMPLE_DIR at a folder holding naip/*.tif"
        )
    return files


def read_real_s2(sample_dir: Path) -> np.ndarray:
    """The real Sentinel-2 farmland scene as reflectance ``(4, H, W)`` in the order B04, B03, B02, B08."""
    path = sample_dir / REAL_S2_FILE
    if not path.is_file():
        raise SampleNotFoundError(f"{path}: the real Sentinel-2 sample is missing")
    bands = np.asarray(json.loads(path.read_text()), dtype=np.float32) / SENTINEL2.dn_scale
    order = [REAL_S2_BAND_ORDER.index(name) for name in SENTINEL2.all_bands]
    return bands[order]


def _rgb(data: np.ndarray, gain: float) -> np.ndarray:
    return np.clip(np.nan_to_num(data[:3].transpose(1, 2, 0)) * gain, 0, 1)


def side_by_side(naip: np.ndarray, lr: np.ndarray, real: np.ndarray, path: Path, title: str) -> Path:
    """PNG of NAIP | S2-like LR | real Sentinel-2, the last two with one stretch and one pixel scale."""
    h, w = lr.shape[1:]
    real = real[:, :h, :w]
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.5), dpi=100)
    panels = [
        (_rgb(naip, 1.0), f"NAIP HR (R G B), {naip.shape[1]}×{naip.shape[2]} px"),
        (_rgb(lr, DISPLAY_GAIN), f"S2-like LR (B04 B03 B02), {h}×{w} px"),
        (_rgb(real, DISPLAY_GAIN), f"real Sentinel-2 farmland, {real.shape[1]}×{real.shape[2]} px"),
    ]
    for ax, (image, label) in zip(axes, panels, strict=True):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(label, fontsize=10)
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _means(data: np.ndarray) -> str:
    return " ".join(f"{v:.3f}" for v in np.nanmean(data, axis=(1, 2)))


def run_demo(
    sample_dir: Path, models_dir: Path, out: Path, echo: Callable[[str], None] = print
) -> list[Path]:
    """Run the demo; returns the LR files written."""
    naip_files = find_naip(sample_dir)
    real = read_real_s2(sample_dir)
    if not reference_is_converted(models_dir):
        echo(f"converting the published SEN2NAIP weights into {models_dir}/ ...")
        convert_reference(models_dir)
    model = Degradation.from_pretrained(models_dir / REPO_NAMES["degradation"])
    written = []
    for path in naip_files:
        raster = read_raster(path, NAIP)
        lr, _ = degrade_raster(model, raster, seed=0, progress=False)
        target = out / "lr" / f"{path.stem}_s2like.tif"
        write_raster(target, lr, SENTINEL2)
        written.append(target)
        echo(f"  {path.name} -> {target}  (mean reflectance B04 B03 B02 B08: {_means(lr.data)})")
    first = read_raster(naip_files[0], NAIP)
    first_lr = read_raster(written[0], SENTINEL2)
    png = side_by_side(first.data, first_lr.data, real, out / "side_by_side.png", naip_files[0].name)
    echo(f"real Sentinel-2 mean reflectance B04 B03 B02 B08: {_means(real)}")
    echo(f"wrote {len(written)} S2-like GeoTIFFs in {out / 'lr'} and the side-by-side view {png}")
    return written
