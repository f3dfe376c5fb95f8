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
import math
import os
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["STAGES", "CpuMeter", "StageProbe"]

#: (label, "module:function", what its items are) in build order.
STAGES: tuple[tuple[str, str, str], ...] = (
    ("sources (list + check every file)", "dataset_builder.build:stage_sources", "tiles"),
    ("read tiles (workers, ahead of CLIP)", "dataset_builder.synthetic.stage:load_embed", "tiles"),
    ("CLIP preprocess + embed", "dataset_builder.synthetic.stage:run_embed", "tiles"),
    ("k-means++ + selection", "dataset_builder.synthetic.stage:select", "nonblank"),
    ("read HR (workers) + noise draws, ahead", "dataset_builder.synthetic.stage:load_degrade", "rows"),
    ("degrade (U-Net, blur, noise)", "dataset_builder.synthetic.stage:run_degrade", "rows"),
    ("↳ noise: sampling (draws made ahead)", "dataset_builder.synthetic.stage:_add_noise", "rows"),
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

    def __init__(self, on_first: dict[str, Callable[[], object]] | None = None) -> None:
        #: label → called once, on the thread of that stage's first call, before the call.
        self._on_first = dict(on_first or {})
        self._lock = threading.Lock()
        self._calls: dict[str, list[tuple[float, float]]] = {label: [] for label, _, _ in STAGES}
        self._saved: list[tuple[Any, str, Callable]] = []
        self._start = self._end = 0.0

    def _wrap(self, label: str, function: Callable) -> Callable:
        synchronize = _synchronize if label.startswith(PART_MARK) else lambda: None

        def timed(*args, **kwargs):
            with self._lock:
                hook = self._on_first.pop(label, None)
            if hook is not None:
                hook()
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
        start, end = self.window(label)
        return end - start

    def window(self, label: str) -> tuple[float, float]:
        """The first call's start and the last call's end (``perf_counter`` seconds; 0, 0 if none)."""
        calls = self._calls[label]
        return (min(s for s, _ in calls), max(e for _, e in calls)) if calls else (0.0, 0.0)

    def rows(self, counts: dict[str, int], meter: CpuMeter | None = None) -> list[dict[str, Any]]:
        """One row per stage: calls, items (``counts`` by the stage's kind), busy and span seconds, rate,
        and with ``meter`` the cores used over the span by this process and by its children (the build's
        worker processes)."""
        rows = []
        for label, _, kind in STAGES:
            calls, span = self._calls[label], self.span(label)
            items = counts[kind]
            busy = sum(e - s for s, e in calls)
            rate = items / span if span else 0.0
            cores = meter.cores(*self.window(label)) if meter is not None and calls else (math.nan, math.nan)
            rows.append(
                {
                    "stage": label,
                    "calls": len(calls),
                    "items": items,
                    "busy": busy,
                    "span": span,
                    "rate": rate,
                    "cores": cores[0],
                    "children": cores[1],
                }
            )
        return rows


class CpuMeter:
    """CPU use of this process and of its child processes (the build's workers), sampled from
    ``/proc/<pid>/stat`` every ``period`` seconds in a thread (Linux; elsewhere it reads nothing and
    reports NaN): :meth:`cores` gives the mean cores each used over a window."""

    def __init__(self, period: float = 0.25) -> None:
        self.period = period
        self._samples: list[tuple[float, float, float]] = []  # perf_counter, own s, children s (cumulative)
        self._children: dict[int, float] = {}  # pid → its last CPU seconds (so exited children still count)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-meter", daemon=True)

    @staticmethod
    def _stat(pid: int | str) -> tuple[int, float] | None:
        """Parent pid and CPU seconds (user + system) of process ``pid``."""
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def _read(self) -> tuple[float, float] | None:
        own = self._stat("self")
        if own is None:
            return None
        me = os.getpid()
        for entry in os.listdir("/proc"):
            if entry.isdigit() and (stat := self._stat(entry)) is not None and stat[0] == me:
                self._children[int(entry)] = stat[1]
        return own[1], sum(self._children.values())

    def _run(self) -> None:
        while not self._stop.is_set():
            reading = self._read()
            if reading is not None:
                self._samples.append((time.perf_counter(), *reading))
            self._stop.wait(self.period)

    def __enter__(self) -> CpuMeter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def cores(self, start: float, end: float) -> tuple[float, float]:
        """Mean cores used by this process and by its children between two ``perf_counter`` times (NaN
        without samples there)."""
        inside = [s for s in self._samples if start <= s[0] <= end]
        if len(inside) < 2:
            return math.nan, math.nan
        (t0, own0, children0), (t1, own1, children1) = inside[0], inside[-1]
        return (own1 - own0) / (t1 - t0), (children1 - children0) / (t1 - t0)
