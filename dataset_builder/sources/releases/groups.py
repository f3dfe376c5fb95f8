"""Location splits for releases without splits: ROIs whose footprints overlap or touch share a split.

Footprints (bounds in their CRS) are joined into connected groups by a sweep over ``xmin`` (union-find);
a group's split is :class:`~dataset_builder.core.splits.RoiSplitter`'s split of the group's smallest key,
so it depends on the places only, never on the order rows arrive in.
"""

from __future__ import annotations

from collections.abc import Sequence

from dataset_builder.core.splits import RoiSplitter

__all__ = ["TOUCH_TOLERANCE_M", "connected_groups", "location_splits"]

#: Footprints closer than this (CRS units, metres for the releases' UTM grids) count as touching.
TOUCH_TOLERANCE_M: float = 1e-6

Footprint = tuple[str, str, tuple[float, float, float, float]]  # key, crs, (left, bottom, right, top)


def _find(parent: dict[str, str], key: str) -> str:
    while parent[key] != key:
        parent[key] = parent[parent[key]]
        key = parent[key]
    return key


def connected_groups(footprints: Sequence[Footprint]) -> dict[str, str]:
    """``{key: group}``: the group is the smallest key of the footprints connected to it (same CRS,
    overlapping or touching, directly or through others)."""
    parent = {key: key for key, _, _ in footprints}
    by_crs: dict[str, list[tuple[tuple[float, float, float, float], str]]] = {}
    for key, crs, bounds in footprints:
        by_crs.setdefault(crs, []).append((bounds, key))
    for boxes in by_crs.values():
        boxes.sort()
        active: list[tuple[tuple[float, float, float, float], str]] = []
        for box, key in boxes:
            active = [(b, k) for b, k in active if b[2] + TOUCH_TOLERANCE_M >= box[0]]
            for other, other_key in active:
                if other[1] <= box[3] + TOUCH_TOLERANCE_M and box[1] <= other[3] + TOUCH_TOLERANCE_M:
                    a, b = _find(parent, key), _find(parent, other_key)
                    if a != b:
                        parent[max(a, b)] = min(a, b)
            active.append((box, key))
    return {key: _find(parent, key) for key in parent}


def location_splits(footprints: Sequence[Footprint], splitter: RoiSplitter) -> dict[str, str]:
    """``{key: split}``: connected footprints share the split of their group."""
    return {key: splitter.split_of(group) for key, group in connected_groups(footprints).items()}
