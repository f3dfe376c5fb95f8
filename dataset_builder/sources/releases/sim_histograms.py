"""The v1 synthetic release's own harmonization: a ``sim_histograms`` method of its ``metadata.json``.

The table (opensr-degradation 1.0.1's ``full_table`` layout) has a ``bins`` column (reflectance values,
``linspace(0, 1, 1001)``) and, per band and method, a column ``lr__{band}__{method}`` of weights for
those values; its last row is the sentinel −999 and is dropped. It may be stored as columns
(``{"bins": [...], ...}``), as pandas' ``to_dict()`` (``{"bins": {"0": ...}}``) or as rows
(``[{"bins": ..., ...}, ...]``).

``sim:<method>`` makes the LR as: the model's blur and ×4 downsampling (no learned harmonization), then
each band given the method's histogram by :func:`sen2naip_hub.models.histogram.match_histograms` against
a reference of the table's quantiles (one value per LR pixel, at ``(k + 0.5) / n``: deterministic), then
the model's noise.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from sen2naip_hub.errors import Sen2NaipError

__all__ = ["SIM_BANDS", "SIM_PREFIX", "SimHistogramError", "method_table", "reference_quantiles"]

#: ``--harmonization`` values naming a method of the release's table start with this.
SIM_PREFIX: str = "sim:"
#: Band names of the table's columns, in the dataset's band order (R, G, B, NIR).
SIM_BANDS: tuple[str, ...] = ("red", "green", "blue", "nir")
#: The table's last-row sentinel (opensr-degradation 1.0.1).
SENTINEL: float = -999.0


class SimHistogramError(Sen2NaipError, ValueError):
    """A ``sim_histograms`` table lacks the asked method or is not a table."""


def _columns(table: Any, name: str) -> dict[str, list[float]]:
    if isinstance(table, list):
        keys = table[0].keys() if table and isinstance(table[0], dict) else []
        return {key: [row[key] for row in table] for key in keys}
    if isinstance(table, dict):
        return {
            key: list(column.values()) if isinstance(column, dict) else list(column)
            for key, column in table.items()
        }
    raise SimHistogramError(f"{name}: sim_histograms must be a table, found {type(table).__name__}")


def method_table(table: Any, method: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(values, weights (4, n))`` of ``method`` without the sentinel row (:class:`SimHistogramError`
    if the table lacks it)."""
    columns = _columns(table, name)
    wanted = ["bins", *(f"lr__{band}__{method}" for band in SIM_BANDS)]
    missing = [key for key in wanted if key not in columns]
    if missing:
        methods = sorted({k.split("__")[-1] for k in columns if k.startswith("lr__")})
        raise SimHistogramError(f"{name}: sim_histograms has no {', '.join(missing)} (methods: {methods})")
    values = np.asarray(columns["bins"], dtype=np.float64)
    weights = np.asarray([columns[key] for key in wanted[1:]], dtype=np.float64)
    keep = values != SENTINEL
    values, weights = values[keep], np.clip(weights[:, keep], 0, None)
    if (weights.sum(axis=1) <= 0).any():
        raise SimHistogramError(f"{name}: sim_histograms method {method!r} has a band with no weight")
    return values, weights


def reference_quantiles(values: np.ndarray, weights: np.ndarray, n: int) -> torch.Tensor:
    """``(4, n)`` float32: each band's distribution at the quantiles ``(k + 0.5) / n``."""
    cdf = np.cumsum(weights, axis=1) / weights.sum(axis=1, keepdims=True)
    levels = (np.arange(n) + 0.5) / n
    index = np.stack([np.searchsorted(row, levels, side="left") for row in cdf])
    return torch.from_numpy(values[np.minimum(index, values.size - 1)].astype(np.float32))
