"""What a running task may use: the config and the models, each loaded once per process (or Ray actor)."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dataset_builder.core.config import BuildConfig, expand_env
from dataset_builder.core.errors import BuildError
from dataset_builder.core.fingerprint import degradation_source
from sen2naip_hub.convert import convert_reference, reference_is_converted
from sen2naip_hub.devices import resolve_device

__all__ = ["CROSS_SENSOR_HARMONIZATION", "MAX_READ_WORKERS", "BuildContext", "Echo"]

Echo = Callable[[str], None]

#: Harmonization inside the cross-sensor ``degrade`` (see :meth:`BuildContext.degrade_noiseless`).
CROSS_SENSOR_HARMONIZATION: str = "none"
#: Threads reading tile windows at most (rasterio releases the GIL while it reads and decodes, numpy
#: while it converts); fewer on a machine with fewer cores. Four, not one per core: on the 16-core GPU
#: machine (``benchmarks/thread_probe.py``) 4 threads read as many tiles per second as 16 (464 and 470),
#: while the thread that drives the GPU waited for the GIL 41 µs per small op pair with 4 readers
#: running and 2,076 µs with 16 (12–15 µs alone).
MAX_READ_WORKERS: int = 4


class BuildContext:
    """The config, the device, and models loaded on first use and kept (one per worker process)."""

    def __init__(self, config: BuildConfig, echo: Echo = print) -> None:
        self.config, self.echo = config, echo
        self.device = resolve_device(config.device, option="device")
        self._cache: dict[str, Any] = {}

    def cached(self, key: str, factory: Callable[[], Any]) -> Any:
        """``factory()`` the first time ``key`` is asked for, the same object after that."""
        if key not in self._cache:
            self._cache[key] = factory()
        return self._cache[key]

    def pool(self, purpose: str) -> ThreadPoolExecutor:
        """A thread pool for one ``purpose`` (one per worker process, made on first use; separate pools so
        that reads queued ahead never delay the current task's work)."""
        workers = min(MAX_READ_WORKERS, os.cpu_count() or 1)
        return self.cached(f"pool:{purpose}", lambda: ThreadPoolExecutor(workers, thread_name_prefix=purpose))

    @property
    def readers(self) -> ThreadPoolExecutor:
        """The threads that read tile windows (:meth:`pool` ``"read"``)."""
        return self.pool("read")

    def upload(self, array: np.ndarray) -> torch.Tensor:
        """``array`` as a tensor on :attr:`device`, complete on return. On CUDA the copy runs on a side
        stream, so a loader thread's copy overlaps the kernels of the task being computed; pass the
        tensor through :meth:`adopt` on the thread that uses it."""
        tensor = torch.from_numpy(array)
        if torch.device(self.device).type != "cuda":
            return tensor
        stream = torch.cuda.Stream(self.device)
        with torch.cuda.stream(stream):
            copied = tensor.to(self.device, non_blocking=True)
        stream.synchronize()
        return copied

    @staticmethod
    def adopt(tensor: torch.Tensor) -> torch.Tensor:
        """A tensor from :meth:`upload`, marked as used by this thread's current CUDA stream (so its memory
        is not handed to another copy while this stream's kernels still read it)."""
        if tensor.is_cuda:
            tensor.record_stream(torch.cuda.current_stream(tensor.device))
        return tensor

    @property
    def degradation_id(self) -> str:
        return degradation_source(self.config)

    def convert_if_missing(self) -> None:
        """Convert the published weights into ``models`` when the build uses that folder and it lacks
        them (a :class:`BuildError` when ``convert_models`` is off)."""
        models = Path(expand_env(self.config.models))
        if self.config.degradation_model or reference_is_converted(models):
            return
        if not self.config.convert_models:
            raise BuildError(f"{models}: no converted models; run `sen2naip convert-reference`")
        self.echo(f"converting the published SEN2NAIP weights into {models}/ ...")
        convert_reference(models)

    @property
    def degradation(self):
        """The Degradation model on :attr:`device`, with the config's precision (and compiled if asked)."""
        return self.cached("degradation", self._load_degradation)

    def _load_degradation(self):
        from sen2naip_hub.models import Degradation

        self.convert_if_missing()
        model = Degradation.from_pretrained(self.degradation_id).to(self.device).eval()
        model.harmonization.precision = self.config.precision
        if self.config.compile:
            model.compile()
        return model

    def degrade_noiseless(self, hr: torch.Tensor) -> torch.Tensor:
        """The cross-sensor ``degrade`` callable: the model's blur + ×4 downsampling (δ) only.

        No harmonization: the cross-sensor pipeline matches the HR's histograms to the real LR itself
        (and the simulation's gains stand in for it), so a learned λ on top would apply it twice.
        No noise: co-registration and QA compare against a clean prediction. The input is clamped to
        [0, 1] first: the simulation's sub-pixel shift (spline interpolation) overshoots by a few
        percent at sharp edges, which the model would refuse. NaN stays NaN.
        """
        with torch.inference_mode():
            hr = hr.clamp(0.0, 1.0).to(self.device)
            return self.degradation(hr, harmonization=CROSS_SENSOR_HARMONIZATION, noise=False).lr.cpu()
