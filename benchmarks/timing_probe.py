"""Stage times of a build, measured by wrapping the builder's own functions (no change to the builder).

:class:`StageProbe` replaces, for the ``with`` block, each function of :data:`STAGES` by a wrapper that
adds its call's duration to its stage: *busy* is the sum of the calls' durations (calls overlap when they
run in threads: tile reads ahead of the GPU, shards written during the degradation), *span* is the first
call's start to the last call's end. The functions are looked up by the builder at run time (task runners
by name, stages through their module), so the wrappers see every call. Rows marked :data:`PART_MARK`
are parts of the step above them, timed between CUDA synchronisations.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["STAGES", "StageProbe"]

#: (label, "module:function", what its items are) in build order.
STAGES: tuple[tuple[str, str, str], ...] = (
    ("sources (list + check every file)", "dataset_builder.build:stage_sources", "tiles"),
    ("read tiles (workers, ahead of CLIP)", "dataset_builder.synthetic.stage:load_embed", "tiles"),
    ("CLIP preprocess + embed", "dataset_builder.synthetic.stage:run_embed", "tiles"),
    ("k-means++ + selection", "dataset_builder.synthetic.stage:select", "nonblank"),
    ("read HR (workers, ahead of degrade)", "dataset_builder.synthetic.stage:load_degrade", "rows"),
    ("degrade (U-Net, blur, noise)", "dataset_builder.synthetic.stage:run_degrade", "rows"),
    ("↳ noise: CPU draws, one copy, sampling", "dataset_builder.synthetic.stage:_add_noise", "rows"),
    ("↳ LR to uint16 (CPU)", "dataset_builder.synthetic.stage:reflectance_to_s2", "rows"),
    ("↳ rows' fields + checkpoint bytes", "dataset_builder.synthetic.stage:encode_records", "rows"),
    ("write shards (pipelined, on workers)", "dataset_builder.synthetic.shards:write_planned_shard", "rows"),
    ("staging: links, card, manifest", "dataset_builder.build:write_staging", "rows"),
    ("publish (swap into out)", "dataset_builder.build:publish_staging", "rows"),
)
#: Parts of a step (label starts with ↳): timed between two CUDA synchronisations, so that the time of
#: the kernels queued before them is not counted in theirs (the rest of the step is its model's time).
PART_MARK: str = "↳"


def _synchronize() -> None:
    """Wait for the CUDA kernels queued so far (nothing without CUDA)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


class StageProbe:
    """Times the functions of :data:`STAGES` inside a ``with`` block (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, list[tuple[float, float]]] = {label: [] for label, _, _ in STAGES}
        self._saved: list[tuple[Any, str, Callable]] = []
        self._start = self._end = 0.0

    def _wrap(self, label: str, function: Callable) -> Callable:
        synchronize = _synchronize if label.startswith(PART_MARK) else lambda: None

        def timed(*args, **kwargs):
            synchronize()
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                synchronize()
                with self._lock:
                    self._calls[label].append((start, time.perf_counter()))

        return timed

    def __enter__(self) -> StageProbe:
        for label, target, _ in STAGES:
            module_name, _, name = target.partition(":")
            module = importlib.import_module(module_name)
            original = getattr(module, name)
            self._saved.append((module, name, original))
            setattr(module, name, self._wrap(label, original))
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self._end = time.perf_counter()
        for module, name, original in reversed(self._saved):
            setattr(module, name, original)
        self._saved.clear()

    def total(self) -> float:
        """Seconds of the whole block."""
        return self._end - self._start

    def span(self, label: str) -> float:
        calls = self._calls[label]
        return max(e for _, e in calls) - min(s for s, _ in calls) if calls else 0.0

    def rows(self, counts: dict[str, int]) -> list[dict[str, Any]]:
        """One row per stage: calls, items (``counts`` by the stage's kind), busy and span seconds, rate."""
        rows = []
        for label, _, kind in STAGES:
            calls, span = self._calls[label], self.span(label)
            items = counts[kind]
            busy = sum(e - s for s, e in calls)
            rate = items / span if span else 0.0
            rows.append(
                {
                    "stage": label,
                    "calls": len(calls),
                    "items": items,
                    "busy": busy,
                    "span": span,
                    "rate": rate,
                }
            )
        return rows
