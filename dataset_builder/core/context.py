"""What a running task may use: the config and the models, each loaded once per process (or Ray actor)."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import BrokenExecutor, Executor, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dataset_builder.core.config import BuildConfig, expand_env
from dataset_builder.core.errors import BuildError
from dataset_builder.core.fingerprint import degradation_source
from dataset_builder.core.workers import start_worker, stopped
from sen2naip_hub.convert import convert_reference, reference_is_converted
from sen2naip_hub.devices import resolve_device

__all__ = [
    "AUTO_WORKERS_MIN_CORES",
    "CORES_KEPT",
    "CROSS_SENSOR_HARMONIZATION",
    "MAX_AUTO_WORKERS",
    "MAX_READ_WORKERS",
    "BuildContext",
    "Echo",
    "worker_processes",
]

Echo = Callable[[str], None]

#: Harmonization inside the cross-sensor ``degrade`` (see :meth:`BuildContext.degrade_noiseless`).
CROSS_SENSOR_HARMONIZATION: str = "none"
#: Threads reading tile windows at most (rasterio releases the GIL while it reads and decodes, numpy
#: while it converts); fewer on a machine with fewer cores. Four, not one per core: on the 16-core GPU
#: machine (``benchmarks/thread_probe.py``) 4 threads read as many tiles per second as 16 (464 and 470),
#: while the thread that drives the GPU waited for the GIL 41 µs per small op pair with 4 readers
#: running and 2,076 µs with 16 (12–15 µs alone).
MAX_READ_WORKERS: int = 4
#: ``workers: auto`` uses processes on machines of at least this many cores (threads below)...
AUTO_WORKERS_MIN_CORES: int = 8
#: ... one per core but these (the thread driving the device, the loaders' and writers' threads) ...
CORES_KEPT: int = 3
#: ... and no more than this (each spawned worker holds its own interpreter and libraries, ~0.3–0.5 GB).
MAX_AUTO_WORKERS: int = 16
#: Where worker processes put the arrays they send back, if the machine has it (RAM-backed).
RAM_FOLDER: Path = Path("/dev/shm")


def worker_processes(setting: int | str, cores: int | None = None) -> int:
    """The worker processes of the config's ``workers`` (0: threads).

    >>> worker_processes("auto", cores=16), worker_processes("auto", cores=2), worker_processes(5)
    (13, 0, 5)
    >>> worker_processes("auto", cores=128)
    16
    """
    if setting != "auto":
        return int(setting)
    cores = cores or os.cpu_count() or 1
    return min(cores - CORES_KEPT, MAX_AUTO_WORKERS) if cores >= AUTO_WORKERS_MIN_CORES else 0


class BuildContext:
    """The config, the device, and models loaded on first use and kept (one per worker process)."""

    def __init__(self, config: BuildConfig, echo: Echo = print, processes: int | None = None) -> None:
        """``processes``: worker processes, in place of the config's ``workers``."""
        self.config, self.echo = config, echo
        self.device = resolve_device(config.device, option="device")
        self.processes = worker_processes(config.workers) if processes is None else processes
        self._cache: dict[str, Any] = {}
        self._lock = threading.RLock()  # loader threads ask for pools and models at once

    def cached(self, key: str, factory: Callable[[], Any]) -> Any:
        """``factory()`` the first time ``key`` is asked for, the same object after that."""
        with self._lock:
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

    @property
    def workers(self) -> Executor:
        """Where tile reads run: :attr:`processes` worker processes (:meth:`process_pool` ``"workers"``),
        or :attr:`readers` when that is 0. Work sent there must be picklable."""
        if not self.processes:
            return self.readers
        return self.process_pool("workers")

    def process_pool(self, purpose: str) -> ProcessPoolExecutor:
        """:attr:`processes` worker processes for one ``purpose`` (spawned on first use, set up by
        :func:`~dataset_builder.core.workers.start_worker`)."""
        spawn = multiprocessing.get_context("spawn")  # not fork: this process may hold CUDA and threads
        pool = lambda: ProcessPoolExecutor(self.processes, mp_context=spawn, initializer=start_worker)  # noqa: E731
        return self.cached(f"processes:{purpose}", pool)

    def start(self) -> None:
        """Begin, without waiting, what the first tasks would otherwise wait for: the :attr:`workers`
        processes when the synthetic stage (their only user) runs (each imports its libraries as it
        starts) and, on CUDA, the device's context."""
        if self.processes and self.config.synthetic.enabled:
            pool = self.workers
            for _ in range(self.processes):  # each submit finding no idle process starts one
                pool.submit(os.getpid)
        if torch.device(self.device).type == "cuda":
            torch.empty(0, device=self.device)

    @property
    def spool(self) -> str | None:
        """The folder where :attr:`workers` processes put arrays they return (None with threads: arrays
        come back as they are); in ``/dev/shm`` where the machine has it, else in the work folder."""
        if not self.processes:
            return None
        return self.cached("spool", self._make_spool)

    def _make_spool(self) -> str:
        ram = RAM_FOLDER.is_dir() and os.access(RAM_FOLDER, os.W_OK)
        root = RAM_FOLDER if ram else self.config.work_path
        root.mkdir(parents=True, exist_ok=True)
        return tempfile.mkdtemp(prefix="sen2naip-spool-", dir=root)

    def offload(self, function: Callable[..., Any], *args: Any) -> Any:
        """``function(*args)`` in a worker process when there are any (waiting for it), else here. Long
        jobs (shard writes) go to a pool of their own (:meth:`process_pool` ``"offload"``), so that the
        reads queued for the device never wait behind them."""
        if not self.processes:
            return function(*args)
        try:
            return self.process_pool("offload").submit(function, *args).result()
        except BrokenExecutor as err:
            raise stopped(err) from err

    def close(self) -> None:
        """Stop the worker processes and threads and remove the spool folder."""
        for key, value in list(self._cache.items()):
            if isinstance(value, Executor):
                value.shutdown(wait=True, cancel_futures=True)
                del self._cache[key]
        spool = self._cache.pop("spool", None)
        if spool:
            shutil.rmtree(spool, ignore_errors=True)

    @contextmanager
    def side_stream(self) -> Iterator[None]:
        """On CUDA, the block's device work goes to a stream of its own and is complete when the block
        ends, so that a loader thread's copies overlap the kernels of the task being computed; pass the
        tensors it made through :meth:`adopt` on the thread that uses them. Elsewhere: nothing."""
        if torch.device(self.device).type != "cuda":
            yield
            return
        stream = torch.cuda.Stream(self.device)
        with torch.cuda.stream(stream):
            yield
        stream.synchronize()

    def upload(self, array: np.ndarray) -> torch.Tensor:
        """``array`` as a tensor on :attr:`device`, complete on return (copied on a
        :meth:`side_stream`)."""
        with self.side_stream():
            return torch.from_numpy(array).to(self.device, non_blocking=True)

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
