"""Worker processes of a build: how they are set up, and how they hand arrays back (light: no torch).

:class:`~dataset_builder.core.context.BuildContext` spawns them (``workers`` in the config) with
:func:`start_worker` as initializer. An array a worker returns goes through :func:`put` (a file in the
context's spool folder, RAM-backed where the machine has ``/dev/shm``: pickling hundreds of MB through
the pool's pipe would cost the receiving process more than reading a file) and comes back with
:func:`take`; in threads (``spool`` None) the array itself passes.
"""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np

from dataset_builder.core.errors import BuildError

__all__ = ["WORKER_NICENESS", "put", "start_worker", "stopped", "take"]

#: Niceness added to worker processes: the build process (the thread driving the device, the loaders
#: feeding it) gets a core first when the workers keep every core busy.
WORKER_NICENESS: int = 10
#: Thread-pool sizes of the libraries a worker may load (OpenMP, BLAS, Arrow read these): one each, as
#: the workers already fill the cores.
_THREAD_VARIABLES: tuple[str, ...] = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def start_worker() -> None:
    """Set up a worker process (the process pool's initializer): a lower priority than the build
    process (:data:`WORKER_NICENESS`) and one thread for each library that would start one per core."""
    os.nice(WORKER_NICENESS)
    for name in _THREAD_VARIABLES:
        os.environ[name] = "1"
    if "torch" in sys.modules:  # imported with the main module of a spawned process, perhaps
        sys.modules["torch"].set_num_threads(1)
    if "pyarrow" in sys.modules:
        sys.modules["pyarrow"].set_cpu_count(1)


def put(array: np.ndarray, spool: str | None) -> np.ndarray | str:
    """``array`` itself (``spool`` None), or the name of a new file in ``spool`` holding it."""
    if spool is None:
        return array
    handle, name = tempfile.mkstemp(dir=spool, suffix=".npy")
    with os.fdopen(handle, "wb") as file:
        np.save(file, array, allow_pickle=False)
    return name


def take(item: np.ndarray | str) -> np.ndarray:
    """What :func:`put` made, as an array (a spooled file is read and deleted)."""
    if isinstance(item, np.ndarray):
        return item
    try:
        return np.load(item, allow_pickle=False)
    finally:
        os.unlink(item)


def stopped(err: BaseException) -> BuildError:
    """The build's error when a worker process died (its pool is broken: every task after it would fail
    too, so this is no item's fault): one line, and how to go on."""
    return BuildError(
        f"a worker process of the build stopped ({type(err).__name__}; killed, or out of memory?): "
        "the checkpoints are kept; run the same command again to resume, with fewer `workers` "
        "(0: threads) if it recurs"
    )
