"""Tasks that run in threads as soon as the checkpoints they need exist: the pipelined shard writer.

:class:`DependentTasks` holds a step whose tasks name, in ``args["needs"]``, the checkpoints they read.
Used as a context manager around another step's execution, it is told of every checkpoint saved
(:meth:`DependentTasks.notify`, the backends' ``on_saved``) and starts each task on its thread pool once
all it needs exists, so shards are written while the next batches are computed. Tasks whose output
already exists (a resumed build) are skipped; on leaving the block every remaining task runs and is
waited for. A task's failure is systemic (a shard cannot be left out without shifting rows): the first
one is raised when the block ends, after the other tasks have finished.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType

from dataset_builder.core.checkpoints import Checkpoints
from dataset_builder.core.plan import Step, Task

__all__ = ["DEFAULT_WRITERS", "DependentTasks"]

#: Shards written at once (each one compresses on its own thread; parquet releases the GIL).
DEFAULT_WRITERS: int = 8


class DependentTasks:
    """Run ``step``'s tasks with ``run(task)`` on ``workers`` threads as their ``needs`` are saved."""

    def __init__(
        self, step: Step, store: Checkpoints, run: Callable[[Task], object], workers: int = DEFAULT_WRITERS
    ) -> None:
        self.store, self.run = store, run
        self._todo = [t for t in step.todo(store)]
        self._missing = {t.name: {n for n in t.args["needs"] if not store.has(n)} for t in self._todo}
        self._pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="write")
        self._futures: list[Future] = []
        self._started: set[str] = set()
        self._lock = threading.Lock()

    def __enter__(self) -> DependentTasks:
        self._start_ready()
        return self

    def notify(self, name: str) -> None:
        """Checkpoint ``name`` was saved: start the tasks that needed only it still."""
        with self._lock:
            for missing in self._missing.values():
                missing.discard(name)
        self._start_ready()

    def _start_ready(self, everything: bool = False) -> None:
        with self._lock:
            for task in self._todo:
                if task.name not in self._started and (everything or not self._missing[task.name]):
                    self._started.add(task.name)
                    self._futures.append(self._pool.submit(self.run, task))

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if kind is not None:
            for future in self._futures:
                future.cancel()
            self._pool.shutdown(wait=True)
            return
        self._start_ready(everything=True)
        self._pool.shutdown(wait=True)
        for future in self._futures:
            if future.exception() is not None:
                raise future.exception()
