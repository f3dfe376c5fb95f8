"""The cross-sensor split: real Sentinel-2 LR against NAIP HR, ROI by ROI, with SEN2NAIP's QA.

For every (NAIP, Sentinel-2) acquisition pair
(:func:`dataset_builder.sources.acquisitions.pair_acquisitions`):

1. check both headers (4 bands in the project's order, a CRS, the HR pixel size);
2. cut the NAIP into a grid of ROIs (:func:`roi_grid`; 484 × 484 HR px ↔ 121 × 121 LR px by default);
3. per ROI: read the HR window, reproject the Sentinel-2 onto the ROI's LR grid
   (:func:`reproject_to_lr_grid`: the HR transform × 4, so each LR pixel covers exactly 4 × 4 HR
   pixels), screen nodata and cloud (:func:`screen`);
4. degrade the HR with the caller's ``degrade`` callable (the team's ``Degradation`` model),
   co-register the LR against it (:func:`dataset_builder.cross_sensor.align.coregister`), QA1;
5. histogram-match the HR to the aligned LR (the curve that matches the degraded HR, applied to the
   HR), degrade it again, QA2 against the aligned LR;
6. keep a :class:`~dataset_builder.core.records.PairRecord` (HR matched, LR aligned) or record a
   :class:`Rejection` with the reason.

A corrupt, truncated or wrong-band file becomes a rejection of its pair or ROIs, never an exception
that stops the run. Errors in the caller's setup (a ``degrade`` returning the wrong shape, a bad
config) do raise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import rasterio
import rasterio.windows
import torch
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.warp import reproject
from rasterio.windows import Window
from tqdm.auto import tqdm

from dataset_builder.core.facts import (
    CLOUD_BLUE_REFLECTANCE,
    CLOUD_RED_REFLECTANCE,
    CROSS_SENSOR_MAX_NODATA_FRACTION,
    MAX_CLOUD_FRACTION,
    QA1_MAX_RESIDUAL_LR_PX,
    QA2_MAX_SPECTRAL_ANGLE_DEG,
    SCL_MAX_FRACTION,
    SEN2NAIP_ROI_HR_PX,
)
from dataset_builder.core.plan import failure_reason, first_line
from dataset_builder.core.records import PairRecord, Source
from dataset_builder.cross_sensor.align import DEFAULT_MAX_SHIFT_PX, apply_shift, coregister
from dataset_builder.cross_sensor.qa import (
    check_qa1,
    check_qa2,
    match_histograms_to_lr,
    spectral_angle,
)
from dataset_builder.sources.acquisitions import Acquisition
from dataset_builder.sources.scl import read_scl, scl_rejection
from sen2naip_hub.errors import InvalidImageError, Sen2NaipError, UnreadableFileError
from sen2naip_hub.io import lr_transform, read_info, read_raster
from sen2naip_hub.sensors import NAIP, SCALE_FACTOR, SENTINEL2, Sensor, reflectance_to_s2

__all__ = [
    "CrossSensorConfig",
    "CrossSensorResult",
    "DegradeFn",
    "Rejection",
    "build_cross_sensor_pairs",
    "cloud_fraction",
    "reproject_to_lr_grid",
    "roi_grid",
    "screen",
]

#: A degradation: ``(B, 4, H, W)`` float32 reflectance → ``(B, 4, H / 4, W / 4)``.
DegradeFn = Callable[[torch.Tensor], torch.Tensor]

_RED, _BLUE = SENTINEL2.all_bands.index("B04"), SENTINEL2.all_bands.index("B02")
#: What a bad input file raises: our typed errors, rasterio's, and GDAL's (CPLE_*).
_FILE_ERRORS = (Sen2NaipError, RasterioError, CPLE_BaseError)


class Rejection(NamedTuple):
    """A candidate (pair or ROI) left out, and why."""

    candidate_id: str
    reason: str


@dataclass
class CrossSensorResult:
    """Kept rows and rejections of one run."""

    records: list[PairRecord] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


@dataclass(frozen=True)
class CrossSensorConfig:
    """Settings of :func:`build_cross_sensor_pairs`.

    Attributes:
        roi_size: ROI side in HR pixels, a multiple of ``scale``.
        scale: HR pixels per LR pixel along each axis.
        stride: HR pixels between ROI origins (``None``: ``roi_size``, no overlap); a multiple of ``scale``.
        hr_resolution_m: the HR pixel size the ROI grid assumes (NAIP at 2.5 m, so that LR pixels are
            10 m); ``None`` skips the check (used by the simulation, whose sample NAIP is 5 m).
        max_nodata_fraction, max_cloud_fraction: screening limits (see the module constants); the
            brightness cloud screen applies only to Sentinel-2 without a scene classification.
        max_scl_fraction: largest share of an LR ROI in rejected SCL classes (Sentinel-2 with an SCL).
        qa1_threshold: LR pixels; qa2_threshold: degrees.
        max_shift_lr: the largest shift co-registration may remove, LR pixels per axis.
        resampling: how the Sentinel-2 is resampled onto the ROI's LR grid.
    """

    roi_size: int = SEN2NAIP_ROI_HR_PX
    scale: int = SCALE_FACTOR
    stride: int | None = None
    hr_resolution_m: float | None = NAIP.resolution_m
    max_nodata_fraction: float = CROSS_SENSOR_MAX_NODATA_FRACTION
    max_cloud_fraction: float = MAX_CLOUD_FRACTION
    max_scl_fraction: float = SCL_MAX_FRACTION
    qa1_threshold: float = QA1_MAX_RESIDUAL_LR_PX
    qa2_threshold: float = QA2_MAX_SPECTRAL_ANGLE_DEG
    max_shift_lr: float = DEFAULT_MAX_SHIFT_PX
    resampling: Resampling = Resampling.bilinear

    def __post_init__(self) -> None:
        stride = self.roi_size if self.stride is None else self.stride
        if self.scale < 1 or self.roi_size % self.scale or stride % self.scale or stride < 1:
            raise ValueError(
                f"roi_size ({self.roi_size}) and stride ({stride}) must be positive multiples of "
                f"scale ({self.scale})"
            )


def roi_grid(
    height: int, width: int, roi_size: int, stride: int | None = None, scale: int = SCALE_FACTOR
) -> list[Window]:
    """Full ``roi_size``² windows over a ``height`` × ``width`` image, the grid centred in it.

    Origins are multiples of ``scale`` away from the image origin, so each ROI's LR grid (transform ×
    ``scale``) starts on an HR pixel corner. Partial ROIs at the edges are not produced.

    >>> [(w.row_off, w.col_off) for w in roi_grid(724, 934, 256)]
    [(104, 80), (104, 336), (104, 592), (360, 80), (360, 336), (360, 592)]
    """
    stride = roi_size if stride is None else stride

    def origins(size: int) -> list[int]:
        if size < roi_size:
            return []
        count = (size - roi_size) // stride + 1
        offset = (size - (roi_size + (count - 1) * stride)) // 2 // scale * scale
        return [offset + i * stride for i in range(count)]

    return [Window(col, row, roi_size, roi_size) for row in origins(height) for col in origins(width)]


def reproject_to_lr_grid(
    path: str,
    crs: CRS,
    transform: Affine,
    shape: tuple[int, int],
    resampling: Resampling = Resampling.bilinear,
    sensor: Sensor = SENTINEL2,
) -> np.ndarray:
    """Warp a 4-band image onto a target grid; returns ``(4, h, w)`` float32 reflectance, NaN = nodata.

    Only the part of the file under the target grid is read (GDAL warping), so whole Sentinel-2
    tiles are fine. Integer files are divided by the sensor's ``dn_scale``.
    """
    height, width = shape
    out = np.full((len(sensor.all_bands), height, width), np.nan, dtype=np.float32)
    with rasterio.open(path) as src:
        src_nodata = sensor.nodata if src.nodata is None else src.nodata
        reproject(
            source=rasterio.band(src, list(range(1, src.count + 1))),
            destination=out,
            src_nodata=src_nodata,
            dst_transform=transform,
            dst_crs=crs,
            dst_nodata=np.nan,
            resampling=resampling,
        )
        is_integer = np.dtype(src.dtypes[0]).kind in "ui"
    return out / np.float32(sensor.dn_scale) if is_integer else out


def cloud_fraction(lr: np.ndarray) -> float:
    """Share of valid LR pixels flagged cloudy by the red and blue brightness test.

    ``lr`` is ``(4, h, w)`` reflectance in the order B04, B03, B02, B08; see
    :data:`CLOUD_RED_REFLECTANCE` and :data:`CLOUD_BLUE_REFLECTANCE`.
    """
    valid = np.isfinite(lr).all(axis=0)
    if not valid.any():
        return 0.0
    with np.errstate(invalid="ignore"):
        cloudy = (lr[_RED] > CLOUD_RED_REFLECTANCE) & (lr[_BLUE] > CLOUD_BLUE_REFLECTANCE)
    return float((cloudy & valid).sum() / valid.sum())


def screen(
    hr: np.ndarray,
    lr: np.ndarray,
    max_nodata_fraction: float = CROSS_SENSOR_MAX_NODATA_FRACTION,
    max_cloud_fraction: float = MAX_CLOUD_FRACTION,
    scl: np.ndarray | None = None,
    max_scl_fraction: float = SCL_MAX_FRACTION,
) -> str | None:
    """``None`` if an ROI passes the nodata and cloud screens, else the rejection reason.

    With the LR's scene classification ``scl`` (on the LR grid) the SCL classes decide
    (:func:`~dataset_builder.sources.scl.scl_rejection`); without it, the brightness test does.
    """
    nodata = max(float(np.mean(~np.isfinite(hr).all(axis=0))), float(np.mean(~np.isfinite(lr).all(axis=0))))
    if nodata > max_nodata_fraction:
        return f"nodata {nodata:.0%} > {max_nodata_fraction:.0%}"
    if scl is not None:
        return scl_rejection(scl, max_scl_fraction)
    cloud = cloud_fraction(lr)
    if cloud > max_cloud_fraction:
        return f"cloud {cloud:.0%} > {max_cloud_fraction:.0%}"
    return None


def _check_header(acq: Acquisition, sensor: Sensor, hr_resolution_m: float | None = None) -> None:
    """Raise :class:`InvalidImageError` unless the file is a 4-band, georeferenced image of ``sensor``."""
    info = read_info(acq.path)
    if info.count != len(sensor.all_bands):
        raise InvalidImageError(
            f"{acq.path}: expected {len(sensor.all_bands)} bands ({', '.join(sensor.all_bands)}), "
            f"found {info.count}"
        )
    names = tuple(info.band_names)
    if any(names) and names != sensor.all_bands:
        raise InvalidImageError(
            f"{acq.path}: expected bands {', '.join(sensor.all_bands)} in that order, "
            f"found {', '.join(str(n) for n in names)}"
        )
    if info.crs is None:
        raise InvalidImageError(f"{acq.path}: no CRS; a georeferenced GeoTIFF is needed")
    if hr_resolution_m is not None and not math.isclose(abs(info.transform.a), hr_resolution_m, rel_tol=0.01):
        raise InvalidImageError(
            f"{acq.path}: HR pixel is {abs(info.transform.a):g} m, expected {hr_resolution_m:g} m "
            f"(resample the NAIP first, or set CrossSensorConfig.hr_resolution_m)"
        )


def _fill_nan(image: np.ndarray) -> np.ndarray:
    """NaN → the band's mean (for the steps that need complete arrays)."""
    means = np.nanmean(image, axis=(1, 2), keepdims=True)
    return np.where(np.isfinite(image), image, means).astype(np.float32)


def _degrade(degrade: DegradeFn, hr: np.ndarray, scale: int) -> np.ndarray:
    """Run the caller's degradation on one ``(4, H, W)`` reflectance array; check its output shape."""
    with torch.no_grad():
        out = degrade(torch.from_numpy(_fill_nan(hr))[None])
    expected = (1, hr.shape[0], hr.shape[1] // scale, hr.shape[2] // scale)
    if tuple(out.shape) != expected:
        # The caller's setup, not the data, is wrong: stop the run (ValueError, not a rejection).
        raise ValueError(f"degrade returned shape {tuple(out.shape)}, expected {expected}")
    return out[0].detach().cpu().numpy().astype(np.float32)


def _hr_block_valid(hr: np.ndarray, scale: int) -> np.ndarray:
    """``(h, w)`` bool: True where all ``scale``² HR pixels under an LR pixel are valid."""
    valid = np.isfinite(hr).all(axis=0)
    h, w = valid.shape[0] // scale, valid.shape[1] // scale
    return valid.reshape(h, scale, w, scale).all(axis=(1, 3))


def _interior(shape: tuple[int, int], border: int) -> np.ndarray:
    """``shape`` bool mask, False on the outer ``border`` rows and columns."""
    mask = np.zeros(shape, dtype=bool)
    mask[border : shape[0] - border, border : shape[1] - border] = True
    return mask


@dataclass(frozen=True)
class _Roi:
    roi_id: str
    hr: np.ndarray
    lr: np.ndarray
    crs: CRS
    hr_transform: Affine
    naip: Acquisition
    s2: Acquisition
    scl: np.ndarray | None = None


def _assess(
    roi: _Roi, degrade: DegradeFn, config: CrossSensorConfig, source: Source
) -> PairRecord | Rejection:
    """Steps 4–6 of the module docstring for one screened ROI."""
    degraded = _degrade(degrade, roi.hr, config.scale)
    lr_valid = np.isfinite(roi.lr).all(axis=0)
    alignment = coregister(roi.lr, degraded, max_shift=config.max_shift_lr)
    reason = check_qa1(alignment.residual, config.qa1_threshold)
    if reason is not None:
        return Rejection(roi.roi_id, reason)
    dy, dx = alignment.shift
    lr_aligned = alignment.aligned
    shifted_valid = apply_shift(lr_valid.astype(np.float32), (-dy, -dx), order=1) > 0.999
    lr_aligned[:, ~shifted_valid] = np.nan
    hr_matched = match_histograms_to_lr(roi.hr, lr_aligned, degraded_hr=degraded)
    degraded_matched = _degrade(degrade, hr_matched, config.scale)
    # The outer rows/columns of the aligned LR were extrapolated by the shift: QA2 leaves them out.
    judged = _hr_block_valid(roi.hr, config.scale) & np.isfinite(lr_aligned).all(axis=0)
    judged &= _interior(judged.shape, math.ceil(max(abs(dy), abs(dx))))
    angle = spectral_angle(np.where(judged, degraded_matched, np.nan), lr_aligned)
    reason = check_qa2(angle, config.qa2_threshold)
    if reason is not None:
        return Rejection(roi.roi_id, reason)
    return PairRecord(
        roi_id=roi.roi_id,
        hr=reflectance_to_s2(hr_matched),
        lr=reflectance_to_s2(lr_aligned),
        crs=roi.crs.to_wkt(),
        hr_transform=tuple(roi.hr_transform.to_gdal()),
        lr_transform=tuple(lr_transform(roi.hr_transform, config.scale).to_gdal()),
        hr_date=roi.naip.date,
        lr_date=roi.s2.date,
        qa1=alignment.residual,
        qa2=angle,
        shift_x=dx,
        shift_y=dy,
        degradation_model=None,
        source=source,
        naip_id=roi.naip.source_id,
        s2_id=roi.s2.source_id,
    )


def _read_roi(
    naip: Acquisition, s2: Acquisition, window: Window, roi_id: str, config: CrossSensorConfig
) -> _Roi:
    hr_raster = read_raster(naip.path, NAIP, window=window)
    lr_size = config.roi_size // config.scale
    try:
        lr_grid = lr_transform(hr_raster.transform, config.scale)
        lr = reproject_to_lr_grid(
            str(s2.path),
            hr_raster.crs,
            lr_grid,
            (lr_size, lr_size),
            config.resampling,
        )
        scl = None if s2.scl is None else read_scl(s2.scl, hr_raster.crs, lr_grid, (lr_size, lr_size))
    except (RasterioError, CPLE_BaseError) as err:
        raise UnreadableFileError(f"{s2.path}: corrupt or truncated ({first_line(err)})") from err
    return _Roi(roi_id, hr_raster.data, lr, hr_raster.crs, hr_raster.transform, naip, s2, scl)


def _process_pair(
    naip: Acquisition, s2: Acquisition, degrade: DegradeFn, config: CrossSensorConfig, source: Source
) -> tuple[list[PairRecord], list[Rejection]]:
    pair_id = f"{naip.id}__{s2.id}"
    try:
        _check_header(naip, NAIP, config.hr_resolution_m)
        _check_header(s2, SENTINEL2)
        info = read_info(naip.path)
    except _FILE_ERRORS as err:
        return [], [Rejection(pair_id, failure_reason(err))]
    windows = roi_grid(info.height, info.width, config.roi_size, config.stride, config.scale)
    if not windows:
        return [], [
            Rejection(pair_id, f"too small: {info.height}x{info.width} HR px < ROI {config.roi_size}")
        ]
    records, rejections = [], []
    for window in windows:
        roi_id = f"{pair_id}__r{int(window.row_off):05d}_c{int(window.col_off):05d}"
        try:
            roi = _read_roi(naip, s2, window, roi_id, config)
        except _FILE_ERRORS as err:
            rejections.append(Rejection(roi_id, failure_reason(err)))
            continue
        reason = screen(
            roi.hr,
            roi.lr,
            config.max_nodata_fraction,
            config.max_cloud_fraction,
            roi.scl,
            config.max_scl_fraction,
        )
        try:
            outcome = Rejection(roi_id, reason) if reason else _assess(roi, degrade, config, source)
        except Sen2NaipError as err:  # e.g. no pixel left to judge after alignment
            outcome = Rejection(roi_id, failure_reason(err))
        (rejections if isinstance(outcome, Rejection) else records).append(outcome)
    return records, rejections


def build_cross_sensor_pairs(
    pairs: Iterable[tuple[Acquisition, Acquisition]],
    degrade: DegradeFn,
    *,
    source: Source = "real",
    config: CrossSensorConfig | None = None,
    progress: bool = False,
) -> CrossSensorResult:
    """Run the cross-sensor pipeline (module docstring) over ``(naip, sentinel2)`` acquisition pairs.

    Args:
        pairs: from :func:`dataset_builder.sources.acquisitions.pair_acquisitions`.
        degrade: ``(B, 4, H, W)`` reflectance → ``(B, 4, H/scale, W/scale)``, e.g. the team's
            ``Degradation`` model; called twice per ROI that passes screening (before co-registration,
            and on the histogram-matched HR for QA2).
        source: written into every kept record (``"real"``, or ``"simulated"`` for simulated pairs).
        config: ROI grid, screening and QA settings (:class:`CrossSensorConfig` defaults if ``None``).
        progress: show a progress bar over pairs.

    Returns:
        Kept records (HR histogram-matched to the LR, LR co-registered to the degraded HR, both
        uint16 reflectance × 10000) and rejections. Rejection ids are ``<naip>__<s2>`` for a whole
        pair (unreadable or invalid file) or ``<naip>__<s2>__r<row>_c<col>`` for an ROI (HR pixel
        offsets of the ROI window).
    """
    config = CrossSensorConfig() if config is None else config
    result = CrossSensorResult()
    pair_list = list(pairs)
    for naip, s2 in tqdm(pair_list, desc="cross-sensor pairs", disable=not progress):
        records, rejections = _process_pair(naip, s2, degrade, config, source)
        result.records.extend(records)
        result.rejections.extend(rejections)
    return result
