"""Where a plan's tasks run: in this process (:mod:`.local`) or on a Ray cluster (:mod:`.ray`).

Both take the same :class:`~dataset_builder.core.plan.Step` and leave the same checkpoints: every task
goes through :func:`~dataset_builder.core.plan.run_task`, keyed by its checkpoint name, never by when
or where it finished.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from dataset_builder.core.checkpoints import Checkpoints
from dataset_builder.core.context import BuildContext
from dataset_builder.core.errors import BuildError
from dataset_builder.core.plan import Step

__all__ = ["BACKENDS", "Backend", "make_backend"]

#: The backends ``sen2naip build --backend`` accepts.
BACKENDS: tuple[str, ...] = ("local", "ray")


class Backend(Protocol):
    """Runs the tasks of a step that have no checkpoint yet and saves each one's checkpoint, calling
    ``on_saved(name)`` (if given) on the driver after each save; :meth:`start` (before the first
    step, not waiting) begins what the steps will need, so that it starts while the driver lists the
    sources."""

    def start(self, context: BuildContext) -> None: ...

    def execute(
        self,
        step: Step,
        store: Checkpoints,
        context: BuildContext,
        progress: bool,
        on_saved: Callable[[str], None] | None = None,
    ) -> None: ...

    def close(self) -> None: ...


def make_backend(name: str, address: str | None = None) -> Backend:
    """The backend called ``name`` (a :class:`BuildError` naming the choices otherwise)."""
    if name == "local":
        from dataset_builder.backends.local import LocalBackend

        return LocalBackend()
    if name == "ray":
        from dataset_builder.backends.ray import RayBackend, RayOptions

        return RayBackend(RayOptions(address=address))
    raise BuildError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")
