"""SEN2NAIP degradation Space: NAIP (2.5 m, R G B NIR) → Sentinel-2-like (10 m, B04 B03 B02 B08).

Pick a ROI of the dataset's ``cross_sensor`` config or upload an HR image; the degradation
(``sen2naip_hub.Degradation``, loaded once at start-up) makes its S2-like LR, shown beside the real
Sentinel-2 LR of the ROI when there is one, with per-band histograms, MAE and spectral angle, and a
georeferenced GeoTIFF of the LR to download.

Configuration (environment, then ``repos.json`` beside this file, written by ``sen2naip publish``):

- ``SEN2NAIP_MODEL``: Degradation folder or Hub repo id. Default: ``models/sen2naip-degradation``
  when present (converted from the published weights if ``opensr-degradation`` is installed and it
  is missing), else ``repos.json``'s ``model``.
- ``SEN2NAIP_DATASET``: dataset folder or Hub repo id. Default: ``./sen2naip`` when present, else
  ``repos.json``'s ``dataset``.

Uploads: a 4-band GeoTIFF R, G, B, NIR (uint8 NAIP counts = reflectance × 255, uint16 =
reflectance × 10000 as in the dataset, or float reflectance in [0, 1]), or an RGB PNG/JPEG (× 255),
whose missing NIR is filled with the mean of R, G and B (:data:`NIR_FILL`); its B08 output then says
nothing about the real near infrared. Images above :data:`MAX_MEGAPIXELS` are refused.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import torch
from affine import Affine
from matplotlib.figure import Figure
from PIL import Image, UnidentifiedImageError
from rasterio.crs import CRS

from sen2naip_hub import Degradation
from sen2naip_hub.errors import InvalidImageError, Sen2NaipError, UnreadableFileError
from sen2naip_hub.io import Raster, read_info, read_raster, write_raster
from sen2naip_hub.metrics import spectral_angle
from sen2naip_hub.models.harmonization import HARMONIZATION_MODES
from sen2naip_hub.pipeline import degrade_raster
from sen2naip_hub.sensors import N_BANDS, NAIP, SCALE_FACTOR, SENTINEL2

log = logging.getLogger("sen2naip-space")

HERE = Path(__file__).resolve().parent
#: Hub repo ids this Space uses, written by ``sen2naip publish`` (``{"model": ..., "dataset": ...}``).
REPOS_FILE = HERE / "repos.json"
LOCAL_MODEL = Path("models") / "sen2naip-degradation"
LOCAL_DATASET = Path("sen2naip")
#: The config whose ROIs have a real Sentinel-2 LR.
ROI_CONFIG = "cross_sensor"
#: ROIs offered in the picker (the first ones of each split, test split first).
MAX_ROIS = 32
ROI_SPLITS: tuple[str, ...] = ("test", "validation", "train")
#: Largest upload accepted, in megapixels (~2,000 × 2,000 px, a few seconds on 2 CPU cores).
MAX_MEGAPIXELS = 4.0
#: Missing NIR of an RGB upload = mean of R, G and B (a visible-brightness stand-in, not a NIR estimate).
NIR_FILL = "mean of R, G, B"
#: Quick-look stretch: these percentiles of the R, G, B reflectance map to black and white.
STRETCH_PERCENTILES = (2.0, 98.0)
SOURCE_ROI, SOURCE_UPLOAD = "dataset ROI", "upload"
TIFF_SUFFIXES = (".tif", ".tiff")
SIMULATED_NOTE = (
    "This ROI's LR is **simulated** (dataset column `source` = `simulated`), not a Sentinel-2 "
    "acquisition: the comparison shows the app working, not the degradation's realism."
)
HIST_BINS = 64


@dataclass(frozen=True)
class Roi:
    """One ``cross_sensor`` row: HR and real LR as reflectance with their grid."""

    label: str
    #: file-name friendly id (ROI id and date)
    name: str
    hr: Raster
    real_lr: np.ndarray | None
    #: shown with the results (e.g. that the row's LR is simulated)
    note: str = ""


@dataclass(frozen=True)
class Result:
    """Everything one request shows."""

    hr: Raster
    harmonized: Raster
    lr: Raster
    real_lr: np.ndarray | None
    note: str


# ---------------------------------------------------------------------------- configuration
def hub_repos() -> dict[str, str]:
    """``repos.json`` (``model``, ``dataset`` repo ids), or ``{}`` when there is none."""
    if REPOS_FILE.is_file():
        return json.loads(REPOS_FILE.read_text())
    return {}


def model_source() -> str:
    """Where the Degradation comes from: env, local folder, then the published repo id."""
    env = os.environ.get("SEN2NAIP_MODEL")
    if env:
        return env
    if LOCAL_MODEL.is_dir() or "model" not in hub_repos():
        return str(LOCAL_MODEL)
    return hub_repos()["model"]


def dataset_source() -> str | None:
    """Where the ROIs come from: env, ``./sen2naip``, then the published repo id (None: uploads only)."""
    env = os.environ.get("SEN2NAIP_DATASET")
    if env:
        return env
    if LOCAL_DATASET.is_dir():
        return str(LOCAL_DATASET)
    return hub_repos().get("dataset")


def load_model(source: str) -> Degradation:
    """Load the Degradation once; a missing local default is converted from the published weights."""
    if source == str(LOCAL_MODEL) and not LOCAL_MODEL.is_dir():
        from sen2naip_hub.convert import convert_reference

        log.warning("%s missing: converting the published weights (opensr-degradation)", LOCAL_MODEL)
        convert_reference(LOCAL_MODEL.parent)
    return Degradation.from_pretrained(source)


# ---------------------------------------------------------------------------- dataset ROIs
def load_rois(source: str | os.PathLike | None, limit: int = MAX_ROIS) -> list[Roi]:
    """The first ``limit`` ``cross_sensor`` rows of ``source`` (folder or repo id), streamed.

    A dataset that cannot be opened gives no ROIs (and a log line): the Space still serves uploads.
    """
    if source is None:
        return []
    from datasets import get_dataset_split_names, load_dataset

    try:
        splits = get_dataset_split_names(str(source), ROI_CONFIG)
    except Exception as err:  # any failure to open the dataset leaves the upload path working
        log.warning("no ROIs from %s: %s", source, err)
        return []
    rois: list[Roi] = []
    for split in [s for s in ROI_SPLITS if s in splits]:
        stream = load_dataset(str(source), ROI_CONFIG, split=split, streaming=True)
        for index, row in enumerate(stream.with_format("numpy").take(limit - len(rois))):
            rois.append(_row_to_roi(row, f"{split} {index}"))
    return rois


def _row_to_roi(row: dict[str, Any], where: str) -> Roi:
    hr = np.asarray(row["hr"], dtype=np.float32) / np.float32(SENTINEL2.dn_scale)
    lr = np.asarray(row["lr"], dtype=np.float32) / np.float32(SENTINEL2.dn_scale)
    hr[:, (hr == 0).all(axis=0)] = np.nan  # 0 = nodata in every band
    lr[:, (lr == 0).all(axis=0)] = np.nan
    date = row.get("hr_date") or ""
    label = f"{where} · {row['roi_id']} · {date}".strip(" ·")
    name = "_".join(str(part) for part in (row["roi_id"], date) if part)
    raster = Raster(
        data=hr,
        crs=CRS.from_wkt(str(row["crs"])) if row.get("crs") else None,
        transform=Affine.from_gdal(*np.asarray(row["hr_transform"], dtype=float).tolist()),
        band_names=NAIP.all_bands,
    )
    note = SIMULATED_NOTE if row.get("source") == "simulated" else ""
    return Roi(label=label, name=name, hr=raster, real_lr=lr, note=note)


# ---------------------------------------------------------------------------- uploads
def read_upload(path: str | os.PathLike) -> tuple[Raster, str]:
    """An uploaded file as NAIP reflectance, with a note for the user ('' when nothing to say).

    Raises:
        InvalidImageError, UnreadableFileError: with a message naming the file and what is wrong.
    """
    path = Path(path)
    if path.suffix.lower() in TIFF_SUFFIXES:
        return _read_geotiff(path), ""
    return _read_rgb(path), (
        f"**{path.name} has no NIR band**: NIR was filled with the {NIR_FILL}, so the B08 output "
        "(and the harmonization, which uses all four bands) is not meaningful. The LR GeoTIFF has no "
        "CRS (pixel coordinates)."
    )


def _check_size(name: str, height: int, width: int) -> None:
    megapixels = height * width / 1e6
    if megapixels > MAX_MEGAPIXELS:
        raise InvalidImageError(
            f"{name}: {width}×{height} px is {megapixels:.1f} megapixels; this Space takes at most "
            f"{MAX_MEGAPIXELS:g} (crop it, or run `sen2naip degrade` locally on any size)"
        )


def _read_geotiff(path: Path) -> Raster:
    info = read_info(path)
    _check_size(path.name, info.height, info.width)
    sensor = SENTINEL2 if info.dtype == "uint16" else NAIP  # uint16: reflectance × 10000
    raster = read_raster(path, sensor)
    return raster.with_data(raster.data, band_names=NAIP.all_bands)


def _read_rgb(path: Path) -> Raster:
    try:
        with Image.open(path) as image:
            _check_size(path.name, image.height, image.width)
            if image.mode not in ("RGB", "RGBA", "P"):
                raise InvalidImageError(
                    f"{path.name}: expected an RGB image (or a 4-band GeoTIFF), found mode {image.mode} "
                    f"with {len(image.getbands())} band(s)"
                )
            rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
        raise UnreadableFileError(
            f"{path.name}: not a readable image; upload a 4-band GeoTIFF (R, G, B, NIR) or an RGB PNG/JPEG"
        ) from err
    rgb = rgba[..., :3].transpose(2, 0, 1) / np.float32(NAIP.dn_scale)
    data = np.concatenate([rgb, rgb.mean(axis=0, keepdims=True)]).astype(np.float32)
    data[:, rgba[..., 3] == 0] = np.nan  # fully transparent = nodata
    return Raster(data=data, crs=None, transform=Affine.identity(), band_names=NAIP.all_bands)


# ---------------------------------------------------------------------------- comparison
def compare(lr: np.ndarray, real: np.ndarray) -> dict[str, float]:
    """MAE (reflectance) and mean spectral angle (degrees) of ``lr`` vs ``real`` ``(4, h, w)``,
    over pixels valid in both (the grids are cropped to their common size)."""
    h, w = min(lr.shape[1], real.shape[1]), min(lr.shape[2], real.shape[2])
    a = lr[:, :h, :w].reshape(N_BANDS, -1).astype(np.float64)
    b = real[:, :h, :w].reshape(N_BANDS, -1).astype(np.float64)
    valid = np.isfinite(a).all(axis=0) & np.isfinite(b).all(axis=0)
    a, b = a[:, valid], b[:, valid]
    if a.shape[1] == 0:
        return {"mae": float("nan"), "spectral_angle_deg": float("nan"), "pixels": 0}
    vectors = (torch.from_numpy(a[:, :, None]), torch.from_numpy(b[:, :, None]))
    angle = torch.rad2deg(spectral_angle(*vectors)).numpy()  # NaN for a zero vector: no direction
    return {
        "mae": float(np.abs(a - b).mean()),
        "spectral_angle_deg": float(np.nanmean(angle)) if np.isfinite(angle).any() else float("nan"),
        "pixels": a.shape[1],
    }


def histogram_figure(lr: np.ndarray, real: np.ndarray | None) -> Figure:
    """Per-band reflectance histograms: degraded LR vs real Sentinel-2 LR (when there is one).

    A bare ``Figure`` (not pyplot), so nothing accumulates in pyplot's global registry per request.
    """
    fig = Figure(figsize=(12, 2.8), dpi=80)
    axes = fig.subplots(1, N_BANDS)
    for band, ax in enumerate(axes):
        series = [(lr[band], "S2-like (degraded)", "tab:orange")]
        if real is not None:
            series.append((real[band], "real Sentinel-2", "tab:blue"))
        values = np.concatenate([s[0][np.isfinite(s[0])] for s in series])
        bins = np.linspace(values.min(), values.max() + 1e-6, HIST_BINS) if values.size else HIST_BINS
        for data, label, colour in series:
            ax.hist(data[np.isfinite(data)], bins=bins, alpha=0.55, label=label, color=colour, density=True)
        ax.set_title(SENTINEL2.all_bands[band], fontsize=10)
        ax.set_xlabel("reflectance", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def stretch_limits(*images: np.ndarray | None) -> tuple[float, float]:
    """One quick-look stretch for several images (their R, G, B pooled), so they stay comparable."""
    values = np.concatenate([im[:3][np.isfinite(im[:3])] for im in images if im is not None])
    if values.size == 0:
        return 0.0, 1.0
    low, high = np.percentile(values, STRETCH_PERCENTILES)
    return float(low), float(max(high, low + 1e-6))


def quicklook(data: np.ndarray, limits: tuple[float, float], repeat: int = 1) -> np.ndarray:
    """``(4, H, W)`` reflectance → ``(H·repeat, W·repeat, 3)`` uint8 true colour (nodata black)."""
    low, high = limits
    rgb = np.clip((np.nan_to_num(data[:3], nan=low) - low) / (high - low), 0, 1)
    rgb = (rgb.transpose(1, 2, 0) * 255).round().astype(np.uint8)
    return rgb.repeat(repeat, axis=0).repeat(repeat, axis=1) if repeat > 1 else rgb


def write_lr_geotiff(lr: Raster, name: str) -> str:
    """The LR as a Sentinel-2 COG (uint16 reflectance × 10000, bands B04 B03 B02 B08) in a temp folder."""
    folder = Path(tempfile.mkdtemp(prefix="sen2naip-space-"))
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).stem)
    path = folder / f"{stem}_s2like.tif"
    write_raster(path, lr, SENTINEL2)
    return str(path)


# ---------------------------------------------------------------------------- the request
def degrade_input(
    model: Degradation, hr: Raster, harmonization: str, noise: bool, seed: int
) -> tuple[Raster, Raster]:
    """S2-like LR and harmonized HR of ``hr`` (the library's tiled pipeline, any size)."""
    if harmonization not in HARMONIZATION_MODES:
        raise InvalidImageError(f"harmonization must be one of {HARMONIZATION_MODES}, got {harmonization!r}")
    return degrade_raster(
        model, hr, harmonization=harmonization, noise=bool(noise), seed=int(seed), progress=False
    )


def make_runner(model: Degradation, rois: list[Roi]) -> Callable[..., tuple]:
    """The function behind the Run button: inputs → the seven outputs, errors as ``gr.Error``."""
    by_label = {roi.label: roi for roi in rois}

    def run(source: str, roi_label: str | None, upload: str | None, harmonization: str, noise: bool, seed):
        try:
            result, name = _resolve_and_degrade(
                model, by_label, source, roi_label, upload, harmonization, noise, seed
            )
        except (Sen2NaipError, ValueError, OSError) as err:
            raise gr.Error(_user_message(err, upload), print_exception=False) from err
        return _present(result, name)

    return run


def _resolve_and_degrade(
    model, by_label, source, roi_label, upload, harmonization, noise, seed
) -> tuple[Result, str]:
    if source == SOURCE_UPLOAD:
        if not upload:
            raise InvalidImageError("no file uploaded: upload a 4-band GeoTIFF or an RGB PNG/JPEG first")
        hr, note = read_upload(upload)
        real, name = None, Path(upload).name
    else:
        if roi_label not in by_label:
            raise InvalidImageError(f"no such ROI {roi_label!r}: pick one from the list")
        roi = by_label[roi_label]
        hr, real, note, name = roi.hr, roi.real_lr, roi.note, roi.name
    lr, harmonized = degrade_input(model, hr, harmonization, noise, seed)
    return Result(hr=hr, harmonized=harmonized, lr=lr, real_lr=real, note=note), name


def _user_message(err: Exception, upload: str | None) -> str:
    """One line for the user: the typed error's message, temp upload folders shortened to the name."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if upload:
        text = text.replace(str(upload), Path(upload).name)
    return text


def _present(result: Result, name: str) -> tuple:
    lr = result.lr.data
    real = result.real_lr
    limits = stretch_limits(lr, real)
    metrics = compare(lr, real) if real is not None else None
    return (
        quicklook(result.hr.data, stretch_limits(result.hr.data)),
        quicklook(result.harmonized.data, limits),
        quicklook(lr, limits, SCALE_FACTOR),
        quicklook(real, limits, SCALE_FACTOR) if real is not None else None,
        histogram_figure(lr, real),
        _summary(result, metrics),
        write_lr_geotiff(result.lr, name),
    )


def _summary(result: Result, metrics: dict[str, float] | None) -> str:
    h, w = result.lr.data.shape[1:]
    lines = [
        f"S2-like LR: {w}×{h} px, bands {' '.join(result.lr.band_names)}, CRS {result.lr.crs or 'none'}."
    ]
    if metrics is not None:
        lines.append(
            f"**Degraded vs real Sentinel-2**: MAE {metrics['mae']:.4f} (reflectance), spectral angle "
            f"{metrics['spectral_angle_deg']:.2f}° over {metrics['pixels']} pixels."
        )
    else:
        lines.append("No real Sentinel-2 LR for this input: nothing to compare with.")
    if result.note:
        lines.append(result.note)
    return "\n\n".join(lines)


# ---------------------------------------------------------------------------- the UI
INTRO = f"""# SEN2NAIP degradation: NAIP → Sentinel-2
The learned SEN2NAIP degradation **I_LR = λ[δ(I_HR)] + e** (Aybar et al. 2024, *Scientific Data* 11:1389):
λ harmonizes NAIP's radiometry to Sentinel-2, δ blurs and downsamples ×{SCALE_FACTOR}, e adds sensor noise.
Bands: NAIP R, G, B, NIR → Sentinel-2 B04, B03, B02, B08. Pick a ROI of the `{ROI_CONFIG}` split (it has a
real Sentinel-2 LR to compare with) or upload a 4-band GeoTIFF (R, G, B, NIR; uint8 ×255, uint16 ×10000 or
float reflectance) or an RGB PNG/JPEG (NIR is then missing and filled with the {NIR_FILL}), at most
{MAX_MEGAPIXELS:g} megapixels. NAIP only covers the USA: results look like the USA everywhere."""


def build_demo(model: Degradation, dataset_dir: str | os.PathLike | None) -> gr.Blocks:
    """The Space's UI around an already loaded ``model`` and the ROIs of ``dataset_dir`` (or none)."""
    rois = load_rois(dataset_dir)
    labels = [roi.label for roi in rois]
    run = make_runner(model, rois)
    with gr.Blocks(title="SEN2NAIP degradation") as demo:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=1):
                source = gr.Radio(
                    [SOURCE_ROI, SOURCE_UPLOAD], value=SOURCE_ROI if rois else SOURCE_UPLOAD, label="input"
                )
                roi = gr.Dropdown(labels, value=labels[0] if labels else None, label=f"{ROI_CONFIG} ROI")
                upload = gr.File(label="or upload an HR image", type="filepath")
            with gr.Column(scale=1):
                harmonization = gr.Radio(list(HARMONIZATION_MODES), value="global", label="harmonization (λ)")
                noise = gr.Checkbox(value=True, label="noise (e)")
                seed = gr.Number(value=0, precision=0, label="seed")
                button = gr.Button("Run", variant="primary", elem_id="run")
        with gr.Row(equal_height=True):
            hr_view = gr.Image(label="HR input (NAIP R G B)", elem_id="hr")
            harmonized_view = gr.Image(label="harmonized HR (λ)", elem_id="harmonized")
            lr_view = gr.Image(label="S2-like LR (B04 B03 B02)", elem_id="lr")
            real_view = gr.Image(label="real Sentinel-2 LR", elem_id="real")
        histogram = gr.Plot(label="per-band histograms: degraded vs real", elem_id="histogram")
        summary = gr.Markdown(elem_id="summary")
        download = gr.File(label="S2-like LR GeoTIFF (uint16 reflectance × 10000)", elem_id="download")
        roi.change(lambda _: SOURCE_ROI, roi, source)
        upload.upload(lambda _: SOURCE_UPLOAD, upload, source)
        button.click(
            run,
            [source, roi, upload, harmonization, noise, seed],
            [hr_view, harmonized_view, lr_view, real_view, histogram, summary, download],
            api_name="degrade",
        )
    return demo


def main() -> None:
    """Load the model once, read the ROIs, serve."""
    logging.basicConfig(level=logging.INFO)
    model = load_model(model_source())
    demo = build_demo(model, dataset_source())
    demo.queue().launch()


if __name__ == "__main__":
    main()
