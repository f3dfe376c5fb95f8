"""Sensor facts: NAIP and Sentinel-2 bands, resolutions, the ×4 scale and reflectance scaling.

This is the one place for them. Conversion between stored integers and float32 reflectance in
[0, 1] happens here, at the I/O edge; everything inside the library works on reflectance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sen2naip_hub.errors import InvalidImageError

__all__ = [
    "NAIP",
    "SCALE_FACTOR",
    "SENTINEL2",
    "Sensor",
    "counts_to_reflectance",
    "naip_to_reflectance",
    "reflectance_to_counts",
    "reflectance_to_naip",
    "reflectance_to_s2",
    "s2_to_reflectance",
    "validate_reflectance",
]

#: HR pixels per LR pixel along each axis (2.5 m NAIP → 10 m Sentinel-2), as in SEN2NAIP.
SCALE_FACTOR: int = 4


@dataclass(frozen=True)
class Sensor:
    """A sensor's bands (in the project's order), pixel size and integer scaling."""

    name: str
    all_bands: tuple[str, ...]
    rgb_bands: tuple[str, ...]
    resolution_m: float
    #: stored integer = reflectance × ``dn_scale``
    dn_scale: float
    dtype: str
    nodata: int


#: NAIP: R, G, B, NIR, stored as uint8 (reflectance × 255), 2.5 m in SEN2NAIP (native 0.6–1 m).
NAIP = Sensor(
    name="NAIP",
    all_bands=("R", "G", "B", "NIR"),
    rgb_bands=("R", "G", "B"),
    resolution_m=2.5,
    dn_scale=255.0,
    dtype="uint8",
    nodata=0,
)

#: Sentinel-2 10 m bands in NAIP's order, digital numbers = reflectance × 10000 (L1C/L2A convention).
SENTINEL2 = Sensor(
    name="Sentinel-2",
    all_bands=("B04", "B03", "B02", "B08"),
    rgb_bands=("B04", "B03", "B02"),
    resolution_m=10.0,
    dn_scale=10000.0,
    dtype="uint16",
    nodata=0,
)

N_BANDS: int = len(NAIP.all_bands)


def validate_reflectance(array: np.ndarray, name: str = "image") -> None:
    """Raise :class:`InvalidImageError` unless ``array`` is float reflectance in [0, 1] (NaN allowed).

    >>> validate_reflectance(np.zeros((4, 2, 2), dtype="float32"))
    """
    if array.dtype.kind != "f":
        raise InvalidImageError(f"{name}: expected float reflectance, found dtype {array.dtype}")
    finite = array[np.isfinite(array)]
    if finite.size and (finite.min() < 0.0 or finite.max() > 1.0):
        raise InvalidImageError(
            f"{name}: float reflectance must lie in [0, 1], found values in "
            f"[{finite.min():.4g}, {finite.max():.4g}]"
        )


def counts_to_reflectance(counts: np.ndarray, sensor: Sensor) -> np.ndarray:
    """The sensor's digital numbers → float32 reflectance (DN / ``sensor.dn_scale``), unchecked.

    >>> counts_to_reflectance(np.array([0, 5000], dtype="uint16"), SENTINEL2).tolist()
    [0.0, 0.5]
    """
    return counts.astype(np.float32) / np.float32(sensor.dn_scale)


def _check_integer(array: np.ndarray, name: str) -> None:
    if array.dtype.kind not in "ui":
        raise InvalidImageError(f"{name}: expected integer digital numbers, found dtype {array.dtype}")


def naip_to_reflectance(array: np.ndarray, name: str = "NAIP image") -> np.ndarray:
    """NAIP uint8 digital numbers → float32 reflectance (DN / 255).

    >>> naip_to_reflectance(np.array([0, 255], dtype="uint8")).tolist()
    [0.0, 1.0]
    """
    _check_integer(array, name)
    if array.size and (array.min() < 0 or array.max() > 255):
        raise InvalidImageError(f"{name}: NAIP digital numbers must lie in [0, 255], found max {array.max()}")
    return counts_to_reflectance(array, NAIP)


def reflectance_to_counts(array: np.ndarray, sensor: Sensor) -> np.ndarray:
    """Float reflectance → the sensor's stored integers: the one rule every writer of DN uses.

    Each value becomes ``rint(reflectance × sensor.dn_scale)`` clipped to the dtype's range, except that
    a non-finite value (NaN = nodata) becomes ``sensor.nodata`` and no valid value does: when nodata is
    the dtype's minimum (0, the Sentinel-2 L2A ``NO_DATA`` convention), valid reflectance maps to at
    least 1, so a dark pixel stays distinguishable from nodata. To mark a whole pixel as nodata, set all
    its bands to NaN first (as :func:`sen2naip_hub.io.write_raster` does).

    >>> reflectance_to_counts(np.array([np.nan, 0.0, 0.00004, 0.5, 1.0, 7.0]), SENTINEL2).tolist()
    [0, 1, 1, 5000, 10000, 65535]
    """
    info = np.iinfo(sensor.dtype)
    low = sensor.nodata + 1 if sensor.nodata == info.min else info.min
    finite = np.isfinite(array)
    scaled = np.rint(np.where(finite, array, 0.0) * sensor.dn_scale)
    counts = np.clip(scaled, low, info.max).astype(sensor.dtype)
    counts[~finite] = sensor.nodata
    return counts


def reflectance_to_naip(array: np.ndarray) -> np.ndarray:
    """Float reflectance → NAIP uint8 DN by :func:`reflectance_to_counts` (NaN → 0, valid → 1..255)."""
    return reflectance_to_counts(array, NAIP)


def s2_to_reflectance(array: np.ndarray, name: str = "Sentinel-2 image") -> np.ndarray:
    """Sentinel-2 digital numbers → float32 reflectance (DN / 10000). DN 0 is nodata in files this
    project writes; it reads as 0.0 here (mask ``array == 0`` to drop it).

    >>> s2_to_reflectance(np.array([0, 10000], dtype="uint16")).tolist()
    [0.0, 1.0]
    """
    _check_integer(array, name)
    return counts_to_reflectance(array, SENTINEL2)


def reflectance_to_s2(array: np.ndarray) -> np.ndarray:
    """Float reflectance → Sentinel-2 uint16 DN by :func:`reflectance_to_counts`: NaN → 0 (nodata),
    valid reflectance → 1..65535 (``rint(reflectance × 10000)``, at least 1)."""
    return reflectance_to_counts(array, SENTINEL2)
