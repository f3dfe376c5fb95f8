"""The plan: the build's work as data, and the one place where an item's failure is isolated.

A stage describes its work as a :class:`Step` of :class:`Task` s. A task is plain data: the name of
its checkpoint, the runner that does it (``"module:function"``, resolved on the worker), JSON-able
arguments, and perhaps a *loader* (``"module:function"``) that reads its input: a backend may run the
loader ahead, in a thread, while the previous task computes (:func:`prefetch`), and hands what it read to
:func:`run_task`; without that, :func:`run_task` calls the loader itself. Either way the runner gets the
same input, so the result does not depend on whether it was read ahead. The backends
(:mod:`dataset_builder.backends`) only decide *where* tasks run; every one of them calls
:func:`run_task`, so local and Ray builds run the same code on the same inputs.

:func:`run_task` is the build's only per-item fault boundary: an error while one task reads or
processes its item (an image, a pair, a batch of tiles) becomes a *rejection* checkpoint holding the
reason, and the build goes on; the stage lists it in the manifest. Systemic failures are not
isolated: configuration and build errors, a full disk or read-only file system, running out of
memory, and a step whose every task failed (:func:`check_step`) stop the build with one line.
"""

from __future__ import annotations

import errno
import importlib
from collections.abc import Callable, Sequence
from concurrent.futures import BrokenExecutor, Executor, Future
from dataclasses import dataclass, field
from typing import Any

from dataset_builder.core.checkpoints import Checkpoints, encode_rejection
from dataset_builder.core.errors import BuildError, ConfigError
from dataset_builder.core.workers import stopped

__all__ = [
    "Runner",
    "Step",
    "Task",
    "check_step",
    "failure_reason",
    "first_line",
    "is_systemic",
    "load_input",
    "prefetch",
    "run_task",
]

#: A task's work: its arguments and the worker's context (and its loader's result, if it has a loader)
#: → the bytes of its checkpoint.
Runner = Callable[..., bytes]
#: ``OSError`` numbers that mean the machine, not the item, is at fault.
SYSTEMIC_ERRNOS: frozenset[int] = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})


@dataclass(frozen=True)
class Task:
    """One item of work: ``runner`` (``"module:function"``) applied to ``args`` → checkpoint ``name``.

    ``loader`` (``"module:function"`` of ``(args, context)``), when set, reads the task's input; the
    runner is then called as ``runner(args, context, loaded)``.
    """

    name: str
    runner: str
    args: dict[str, Any] = field(default_factory=dict)
    loader: str | None = None


@dataclass(frozen=True)
class Step:
    """Tasks of one kind, run in any order and any place; ``title`` labels the progress bar."""

    title: str
    tasks: tuple[Task, ...]

    def todo(self, store: Checkpoints) -> list[Task]:
        """The tasks whose checkpoint does not exist yet (a resumed build skips the others)."""
        return [task for task in self.tasks if not store.has(task.name)]

    @property
    def names(self) -> list[str]:
        return [task.name for task in self.tasks]


def is_systemic(err: BaseException) -> bool:
    """True for failures no other item would escape: config/build errors, disk full, out of memory."""
    if isinstance(err, BuildError | ConfigError | MemoryError):
        return True
    return isinstance(err, OSError) and err.errno in SYSTEMIC_ERRNOS


def first_line(err: BaseException) -> str:
    """The first line of an error's message (its type name when it has none)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def failure_reason(err: BaseException) -> str:
    """One line: the error's first line, prefixed with what kind of failure it was."""
    from sen2naip_hub.errors import InvalidImageError, Sen2NaipError

    first = first_line(err)
    if isinstance(err, InvalidImageError):
        return f"invalid: {first}"
    if isinstance(err, Sen2NaipError | OSError) or type(err).__module__.split(".")[0] == "rasterio":
        return f"unreadable: {first}"
    return f"failed ({type(err).__name__}): {first}"


def _resolve(runner: str) -> Runner:
    module, _, function = runner.partition(":")
    return getattr(importlib.import_module(module), function)


def load_input(task: Task, context: Any) -> Any:
    """What ``task``'s loader reads (None for a task without a loader)."""
    return None if task.loader is None else _resolve(task.loader)(task.args, context)


def prefetch(task: Task, context: Any, pool: Executor) -> Future:
    """Start :func:`load_input` of ``task`` on ``pool``; pass the future to :func:`run_task`."""
    return pool.submit(load_input, task, context)


def run_task(task: Task, context: Any, loaded: Future | None = None) -> bytes:
    """The checkpoint bytes of ``task``: its runner's result, or a rejection naming why it failed.

    ``loaded`` is the task's input read ahead by :func:`prefetch` (its failure is the task's failure);
    None: the loader, if any, runs here.
    """
    runner = _resolve(task.runner)
    try:
        if task.loader is None:
            return runner(task.args, context)
        inputs = loaded.result() if loaded is not None else load_input(task, context)
        return runner(task.args, context, inputs)
    except BrokenExecutor as err:
        raise stopped(err) from err
    except Exception as err:
        if is_systemic(err):
            raise
        return encode_rejection(failure_reason(err))


def check_step(step: Step, store: Checkpoints) -> None:
    """Stop the build (one line) when every task of ``step`` was rejected: the fault is not the items'."""
    reasons: Sequence[str | None] = [store.rejection(name) for name in step.names]
    if reasons and all(reasons):
        raise BuildError(f"{step.title}: every item failed ({len(reasons)}); the first: {reasons[0]}")
