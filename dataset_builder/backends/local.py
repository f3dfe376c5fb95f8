"""The local backend: a step's tasks one after another in this process, models loaded once.

While a task runs, the inputs of the next :data:`PREFETCH_DEPTH` tasks are read in background threads
(:func:`~dataset_builder.core.plan.prefetch`, one thread each; their reads go to the context's workers),
so reading overlaps computing; tasks still run and their checkpoints are still saved one at a time, in
plan order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing

from tqdm.auto import tqdm

from dataset_builder.core.checkpoints import Checkpoints
from dataset_builder.core.context import BuildContext
from dataset_builder.core.plan import Step, Task, check_step, prefetch, run_task

__all__ = ["PREFETCH_DEPTH", "LocalBackend", "run_ahead"]

#: Tasks whose input is read ahead of the one running (each holds one batch or image in memory): enough
#: that an image's grid rows or a batch's image groups keep a dozen worker processes busy.
PREFETCH_DEPTH: int = 4


def run_ahead(
    tasks: Iterable[Task], context: BuildContext, depth: int | None = None
) -> Iterator[tuple[Task, bytes]]:
    """``(task, checkpoint bytes)`` of each task, one after another in order, while the inputs of the
    next ``depth`` tasks (default :data:`PREFETCH_DEPTH`) are read in background threads
    (:func:`~dataset_builder.core.plan.prefetch`). Close the iterator to stop early."""
    depth = depth or PREFETCH_DEPTH
    todo = iter(tasks)
    with ThreadPoolExecutor(depth, thread_name_prefix="prefetch") as pool:
        ahead = deque(
            (task, prefetch(task, context, pool)) for _, task in zip(range(depth), todo, strict=False)
        )
        while ahead:
            task, loaded = ahead.popleft()
            following = next(todo, None)
            if following is not None:
                ahead.append((following, prefetch(following, context, pool)))
            yield task, run_task(task, context, loaded)


class LocalBackend:
    """Runs each task with the driver's :class:`BuildContext` and saves its checkpoint at once."""

    def start(self, context: BuildContext) -> None:
        """Start the context's worker processes and device (:meth:`BuildContext.start`)."""
        context.start()

    def execute(
        self,
        step: Step,
        store: Checkpoints,
        context: BuildContext,
        progress: bool,
        on_saved: Callable[[str], None] | None = None,
    ) -> None:
        """Run the tasks without a checkpoint; ``on_saved(name)`` after each checkpoint is saved."""
        tasks = step.todo(store)
        with (
            closing(run_ahead(tasks, context)) as results,
            tqdm(total=len(tasks), desc=step.title, unit="task", disable=not progress) as bar,
        ):
            for task, payload in results:
                store.save_bytes(task.name, payload)
                if on_saved is not None:
                    on_saved(task.name)
                bar.update()
        check_step(step, store)

    def close(self) -> None:
        """Nothing to release: the models belong to the context."""
