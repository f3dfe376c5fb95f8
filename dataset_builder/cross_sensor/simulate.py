"""Simulated cross-sensor candidates: Sentinel-2-like LR files made from real NAIP with known changes.

No co-located NAIP + Sentinel-2 pair exists offline, so the cross-sensor pipeline is exercised on
simulated ones. The **HR grid is the sample NAIP as it is, at 5 m** (``../shared/sample/naip``; real
SEN2NAIP HR is 2.5 m): the LR grid is the NAIP transform × 4 (20 m here, 10 m on real data), so the
geometry (each LR pixel = 4 × 4 HR pixels) is the real one. Run the pipeline on these with
``CrossSensorConfig(hr_resolution_m=None)``.

Each candidate's LR is made from one NAIP image by, in order:

1. a known sub-pixel shift ``(dy, dx)`` in LR pixels, applied on the HR grid (× 4 HR pixels) before
   degrading, so the LR content really is displaced rather than resampled after the fact;
2. the caller's ``degrade`` (the same kind of callable the pipeline takes);
3. a known radiometric change per band, ``gain * lr + offset``, with gains that bring NAIP's
   DN / 255 to Sentinel-2-like reflectance levels;
4. for the ``qa2_fail`` kind only, strong per-pixel, per-band multiplicative noise (lognormal,
   σ = 30 %): every pixel's spectrum is bent in its own way, which no per-band histogram matching can
   undo, while the spatial structure (and so co-registration) is kept. (A band swap such as
   B04 ↔ B08 would distort the spectra as well, but also inverts the contrast of two bands and so
   breaks co-registration first: the candidate would fail QA1, not QA2.)

Kinds: ``good`` (sub-pixel shift, gain/offset: the pipeline must keep it), ``qa1_fail`` (a shift
beyond :data:`dataset_builder.cross_sensor.align.DEFAULT_MAX_SHIFT_PX`, which co-registration may not remove:
QA1 must reject it), ``qa2_fail`` (sub-pixel shift plus the spectral noise: QA2 must reject it).

Files: ``S2SIM_<YYYYMMDD>_<index>_<kind>.tif`` (uint16 DN = reflectance × 10000, bands B04 B03 B02
B08, dated like their NAIP so that
:func:`~dataset_builder.sources.acquisitions.pair_acquisitions` pairs them) and
a sidecar ``.json`` saying ``"simulated": true`` with the true shift and radiometric change.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from dataset_builder.cross_sensor.align import apply_shift
from dataset_builder.cross_sensor.pairs import DegradeFn
from dataset_builder.sources.acquisitions import parse_date
from sen2naip_hub.files import atomic_file
from sen2naip_hub.io import Raster, lr_transform, read_raster, write_raster
from sen2naip_hub.sensors import NAIP, SCALE_FACTOR, SENTINEL2

__all__ = [
    "GOOD_SHIFT_MAX_LR_PX",
    "QA1_FAIL_SHIFT_LR_PX",
    "QA2_FAIL_SPECTRAL_NOISE",
    "S2_LIKE_GAIN",
    "SimulatedCandidate",
    "simulate_candidates",
    "simulate_lr",
]

Kind = Literal["good", "qa1_fail", "qa2_fail"]

#: Per-band gain (R, G, B, NIR) from sample NAIP DN / 255 (band means ~0.30–0.49 visible, ~0.39–0.66
#: NIR over the 10 sample dates) to typical Sentinel-2 L2A summer cropland reflectance (~0.04–0.08
#: visible, ~0.25 NIR, as in ``../shared/sample/s2``). Chosen by hand from those means.
S2_LIKE_GAIN: tuple[float, float, float, float] = (0.15, 0.16, 0.22, 0.45)
#: Relative jitter of each gain (uniform ±10 %) and the offset range (reflectance), per candidate.
GAIN_JITTER: float = 0.10
OFFSET_RANGE: tuple[float, float] = (0.0, 0.01)
#: ``good`` and ``qa2_fail`` shifts are drawn uniformly in ±this, per axis, LR pixels (sub-pixel).
GOOD_SHIFT_MAX_LR_PX: float = 0.8
#: The ``qa1_fail`` shift, LR pixels: beyond the aligner's 3-pixel bound on both axes.
QA1_FAIL_SHIFT_LR_PX: tuple[float, float] = (6.3, -5.7)
#: The ``qa2_fail`` distortion: each LR pixel and band is multiplied by ``exp(N(0, σ²))`` with this σ
#: (after gain/offset), i.e. about ±30 % independent spectral noise.
QA2_FAIL_SPECTRAL_NOISE: float = 0.3
#: Written into every sidecar so nobody mistakes these files for real Sentinel-2.
SIMULATION_NOTE: str = (
    "Simulated Sentinel-2-like LR made from real NAIP (5 m sample, used as the HR grid): known "
    "sub-pixel shift applied on the HR grid, caller's degradation, per-band gain/offset. Not real Sentinel-2."
)


@dataclass(frozen=True)
class SimulatedCandidate:
    """A simulated Sentinel-2 file and the truth it was made with (``shift_lr`` is ``(dy, dx)``)."""

    kind: Kind
    naip_path: Path
    s2_path: Path
    shift_lr: tuple[float, float]
    gain: tuple[float, ...]
    offset: tuple[float, ...]
    spectral_noise: float | None


def simulate_lr(
    hr: np.ndarray,
    degrade: DegradeFn,
    shift_lr: tuple[float, float],
    gain: Sequence[float],
    offset: Sequence[float],
    spectral_noise: float | None = None,
    scale: int = SCALE_FACTOR,
    seed: int = 0,
) -> np.ndarray:
    """``(4, H, W)`` HR reflectance → ``(4, H/scale, W/scale)`` LR reflectance in [0, 1].

    ``H`` and ``W`` must be multiples of ``scale``. Steps 1–4 of the module docstring; ``seed`` seeds
    the spectral noise (used only when ``spectral_noise`` is set).
    """
    shifted = apply_shift(hr, (shift_lr[0] * scale, shift_lr[1] * scale))
    with torch.no_grad():
        lr = degrade(torch.from_numpy(np.ascontiguousarray(shifted, dtype=np.float32))[None])[0].numpy()
    lr = (
        lr * np.asarray(gain, dtype=np.float32)[:, None, None]
        + np.asarray(offset, dtype=np.float32)[:, None, None]
    )
    if spectral_noise is not None:
        noise = np.random.default_rng(seed).normal(0.0, spectral_noise, size=lr.shape)
        lr = lr * np.exp(noise).astype(np.float32)
    return np.clip(lr, 0.0, 1.0).astype(np.float32)


def _draw(
    kind: Kind, rng: np.random.Generator
) -> tuple[tuple[float, float], tuple[float, ...], tuple[float, ...]]:
    """Shift, gain and offset of one candidate (the draws happen for every kind, so seeds stay aligned)."""
    shift = rng.uniform(-GOOD_SHIFT_MAX_LR_PX, GOOD_SHIFT_MAX_LR_PX, size=2)
    gain = np.asarray(S2_LIKE_GAIN) * rng.uniform(1 - GAIN_JITTER, 1 + GAIN_JITTER, size=4)
    offset = rng.uniform(*OFFSET_RANGE, size=4)
    if kind == "qa1_fail":
        shift = np.asarray(QA1_FAIL_SHIFT_LR_PX)
    return (
        (round(float(shift[0]), 4), round(float(shift[1]), 4)),
        tuple(round(float(g), 4) for g in gain),
        tuple(round(float(o), 4) for o in offset),
    )


def _write_sidecar(path: Path, meta: dict) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(meta, indent=2))


def simulate_candidates(
    naip_paths: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    degrade: DegradeFn,
    *,
    kinds: Sequence[Kind] = ("good", "good", "qa1_fail", "qa2_fail"),
    seed: int = 0,
    scale: int = SCALE_FACTOR,
) -> list[SimulatedCandidate]:
    """Write one simulated Sentinel-2 file per entry of ``kinds``, made from ``naip_paths[i]``.

    Args:
        naip_paths: at least ``len(kinds)`` NAIP GeoTIFFs (R, G, B, NIR), dated in their names.
        out_dir: folder for ``S2SIM_*.tif`` and their ``.json`` sidecars (created if missing).
        degrade: ``(B, 4, H, W)`` → ``(B, 4, H/scale, W/scale)`` reflectance callable.
        kinds: what to make (module docstring).
        seed: seeds the shifts, gains and offsets (``numpy.random.default_rng``).

    Returns:
        One :class:`SimulatedCandidate` per kind, in order.
    """
    if len(naip_paths) < len(kinds):
        raise ValueError(f"need one NAIP file per kind: {len(kinds)} kinds, {len(naip_paths)} files")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    candidates = []
    for index, (kind, naip_path) in enumerate(zip(kinds, naip_paths, strict=False)):
        naip_path = Path(naip_path)
        shift, gain, offset = _draw(kind, rng)
        noise = QA2_FAIL_SPECTRAL_NOISE if kind == "qa2_fail" else None
        hr = read_raster(naip_path, NAIP)
        height, width = (hr.data.shape[1] // scale) * scale, (hr.data.shape[2] // scale) * scale
        lr = simulate_lr(
            hr.data[:, :height, :width], degrade, shift, gain, offset, noise, scale, seed + index
        )
        date = parse_date(naip_path)
        s2_path = out_dir / f"S2SIM_{date:%Y%m%d}_{index:02d}_{kind}.tif"
        raster = Raster(lr, hr.crs, lr_transform(hr.transform, scale), SENTINEL2.all_bands)
        write_raster(s2_path, raster, sensor=SENTINEL2)
        candidate = SimulatedCandidate(kind, naip_path, s2_path, shift, gain, offset, noise)
        meta = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(candidate).items()}
        meta.update(simulated=True, datetime=f"{date.isoformat()}T00:00:00Z", seed=seed, note=SIMULATION_NOTE)
        meta["shift_lr_px"] = {"dy": shift[0], "dx": shift[1]}
        _write_sidecar(s2_path.with_suffix(".json"), meta)
        candidates.append(candidate)
    return candidates
