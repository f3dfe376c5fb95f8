"""The local backend: a step's tasks one after another in this process, models loaded once."""

from __future__ import annotations

from tqdm.auto import tqdm

from dataset_builder.core.checkpoints import Checkpoints
from dataset_builder.core.context import BuildContext
from dataset_builder.core.plan import Step, check_step, run_task

__all__ = ["LocalBackend"]


class LocalBackend:
    """Runs each task with the driver's :class:`BuildContext` and saves its checkpoint at once."""

    def execute(self, step: Step, store: Checkpoints, context: BuildContext, progress: bool) -> None:
        for task in tqdm(step.todo(store), desc=step.title, unit="task", disable=not progress):
            store.save_bytes(task.name, run_task(task, context))
        check_step(step, store)

    def close(self) -> None:
        """Nothing to release: the models belong to the context."""
