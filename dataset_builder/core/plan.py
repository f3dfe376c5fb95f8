"""The plan: the build's work as data, and the one place where an item's failure is isolated.

A stage describes its work as a :class:`Step` of :class:`Task` s. A task is plain data: the name of
its checkpoint, the runner that does it (``"module:function"``, resolved on the worker) and JSON-able
arguments. The backends (:mod:`dataset_builder.backends`) only decide *where* tasks run; every one of
them calls :func:`run_task`, so local and Ray builds run the same code on the same inputs.

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
from dataclasses import dataclass, field
from typing import Any

from dataset_builder.core.checkpoints import Checkpoints, encode_rejection
from dataset_builder.core.errors import BuildError, ConfigError

__all__ = ["Runner", "Step", "Task", "check_step", "failure_reason", "first_line", "is_systemic", "run_task"]

#: A task's work: its arguments and the worker's context → the bytes of its checkpoint.
Runner = Callable[[dict[str, Any], Any], bytes]
#: ``OSError`` numbers that mean the machine, not the item, is at fault.
SYSTEMIC_ERRNOS: frozenset[int] = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})


@dataclass(frozen=True)
class Task:
    """One item of work: ``runner`` (``"module:function"``) applied to ``args`` → checkpoint ``name``."""

    name: str
    runner: str
    args: dict[str, Any] = field(default_factory=dict)


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


def run_task(task: Task, context: Any) -> bytes:
    """The checkpoint bytes of ``task``: its runner's result, or a rejection naming why it failed."""
    runner = _resolve(task.runner)
    try:
        return runner(task.args, context)
    except Exception as err:
        if is_systemic(err):
            raise
        return encode_rejection(failure_reason(err))


def check_step(step: Step, store: Checkpoints) -> None:
    """Stop the build (one line) when every task of ``step`` was rejected: the fault is not the items'."""
    reasons: Sequence[str | None] = [store.rejection(name) for name in step.names]
    if reasons and all(reasons):
        raise BuildError(f"{step.title}: every item failed ({len(reasons)}); the first: {reasons[0]}")
