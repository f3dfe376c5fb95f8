"""Train / validation / test assignment by ROI, with a stable hash.

A row's split depends only on its ROI id, never on its acquisition date or on the order rows arrive
in, so every acquisition of a place lands in the same split and a rebuild puts every ROI back where
it was. The ROI id must therefore be *spatial*: :func:`spatial_roi_id` builds one from the CRS and the
world-grid cell holding the tile's centre, so two dates of the same footprint share it.

The hash: ``sha256(salt + ":" + roi_id)``; its first 8 bytes read as a big-endian integer and
divided by 2**64 give a number ``u`` in [0, 1), uniform over ROIs. Cumulative fractions cut [0, 1)
into train, validation and test, in :data:`SPLIT_NAMES` order.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from affine import Affine
from rasterio.crs import CRS

from dataset_builder.core.records import SPLIT_NAMES
from sen2naip_hub.errors import Sen2NaipError

__all__ = [
    "DEFAULT_FRACTIONS",
    "DEFAULT_SALT",
    "RoiSplitter",
    "SplitError",
    "roi_unit_interval",
    "spatial_roi_id",
]

#: train / validation / test shares of ROIs (an 80/10/10 split; SEN2NAIP's own release ships
#: only a train/validation/test partition of ROIs, not its fractions, so these are the project's choice).
DEFAULT_FRACTIONS: tuple[float, float, float] = (0.8, 0.1, 0.1)
#: Mixed into the hash so another project's split of the same ROIs is independent of ours.
DEFAULT_SALT: str = "sen2naip-hub"
#: Bytes of the sha256 digest read as the hash value (8 bytes = 64 bits, plenty for uniformity).
_HASH_BYTES: int = 8
#: Fractions must sum to one within this tolerance.
_SUM_TOLERANCE: float = 1e-9


class SplitError(Sen2NaipError, ValueError):
    """Split fractions or names are invalid."""


def roi_unit_interval(roi_id: str, salt: str = DEFAULT_SALT) -> float:
    """Map ``roi_id`` to a number in [0, 1), stable across runs, machines and Python versions.

    >>> roi_unit_interval("EPSG:26914_E486220_N5209087") == roi_unit_interval("EPSG:26914_E486220_N5209087")
    True
    """
    digest = hashlib.sha256(f"{salt}:{roi_id}".encode()).digest()
    return int.from_bytes(digest[:_HASH_BYTES], "big") / float(2 ** (8 * _HASH_BYTES))


def spatial_roi_id(
    crs: CRS | str, transform: Affine, height: int, width: int, grid_m: float | None = None
) -> str:
    """A date-free ROI id: the CRS and the cell of a ``grid_m`` world grid that holds the footprint's centre.

    ``grid_m`` defaults to the footprint's size in CRS units, so tiles cut on a world-aligned grid
    (as :func:`dataset_builder.core.tiling.iter_tiles` does) get one id per grid cell: acquisitions of a
    place on different dates share it even when their pixel grids are shifted by a few metres.
    The id names the cell's lower-left corner.

    >>> spatial_roi_id("EPSG:26914", Affine(5, 0, 485760, 0, -5, 5208960), 128, 128)
    'EPSG:26914_E485760_N5208320'
    """
    if grid_m is None:
        grid_m = max(abs(transform.a) * width, abs(transform.e) * height)
    if grid_m <= 0:
        raise SplitError(f"grid_m must be positive, found {grid_m}")
    cx, cy = transform @ (width / 2.0, height / 2.0)
    east = math.floor(cx / grid_m) * grid_m
    north = math.floor(cy / grid_m) * grid_m
    return f"{_crs_name(crs)}_E{east:.0f}_N{north:.0f}"


def _crs_name(crs: CRS | str) -> str:
    crs = crs if isinstance(crs, CRS) else CRS.from_user_input(crs)
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg is not None else hashlib.sha256(crs.to_wkt().encode()).hexdigest()[:12]


@dataclass(frozen=True)
class RoiSplitter:
    """Assign ROI ids to splits by :func:`roi_unit_interval` and cumulative ``fractions``.

    >>> RoiSplitter().split_of("EPSG:26914_E486220_N5209087") in SPLIT_NAMES
    True
    """

    fractions: tuple[float, ...] = DEFAULT_FRACTIONS
    names: tuple[str, ...] = SPLIT_NAMES
    salt: str = DEFAULT_SALT

    def __post_init__(self) -> None:
        if len(self.fractions) != len(self.names):
            raise SplitError(
                f"{len(self.names)} split names {self.names} need as many fractions, found {self.fractions}"
            )
        if any(f < 0 for f in self.fractions) or abs(sum(self.fractions) - 1.0) > _SUM_TOLERANCE:
            raise SplitError(f"split fractions must be ≥ 0 and sum to 1, found {self.fractions}")

    def split_of(self, roi_id: str) -> str:
        """The split ``roi_id`` belongs to."""
        u = roi_unit_interval(roi_id, self.salt)
        upper = 0.0
        for name, fraction in zip(self.names, self.fractions, strict=True):
            upper += fraction
            if u < upper:
                return name
        return _last_nonempty(self.names, self.fractions)

    def assign(self, roi_ids: Iterable[str]) -> dict[str, str]:
        """``{roi_id: split}`` for every distinct id."""
        return {roi_id: self.split_of(roi_id) for roi_id in sorted(set(roi_ids))}

    def counts(self, roi_ids: Iterable[str]) -> Mapping[str, int]:
        """Number of distinct ROIs per split (every split name present, zeros included)."""
        counts = dict.fromkeys(self.names, 0)
        for split in self.assign(roi_ids).values():
            counts[split] += 1
        return counts


def _last_nonempty(names: Sequence[str], fractions: Sequence[float]) -> str:
    # Only reached when rounding leaves sum(fractions) a hair under u < 1.
    return next(n for n, f in zip(reversed(names), reversed(fractions), strict=True) if f > 0)
