"""Timing shared by the benchmark scripts (run as ``python benchmarks/NAME.py``, so this folder is on
``sys.path``)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: bool = False) -> dict[str, float]:
    """Median seconds of each function, timed in turns (A, B, C, A, B, C, ...) so that a load change
    on a shared machine hits every contender alike: the ratio is the number to trust."""
    if warmup:
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}
