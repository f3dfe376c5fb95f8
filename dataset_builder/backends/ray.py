"""The Ray backend: ``sen2naip build --backend ray [--address ...]`` runs each step's tasks on Ray actors.

The backend starts a pool of :class:`TaskActor` s on the cluster on its first step and keeps it for
every step after (cross-sensor pairs, CLIP embedding per image, degradation per batch) until
:meth:`RayBackend.close`. An actor builds one :class:`~dataset_builder.core.context.BuildContext` (so
the Degradation model and the CLIP encoder load once per actor, and its worker processes start once)
and runs the tasks it is given as the local backend runs a step
(:func:`~dataset_builder.backends.local.run_ahead`: the inputs of the next tasks are read while one
computes, every task through :func:`~dataset_builder.core.plan.run_task`). A step's tasks go to the
actors in slices of :func:`tasks_per_call`, a new slice to each actor that finishes one; each task's
checkpoint bytes stream back as soon as they are made (a Ray streaming generator) and the driver writes
them under the task's own name, whatever order they arrive in. The driver also runs what is not a
task: listing the sources, the k-means++ selection and writing the dataset.

Why the result equals the local backend's, byte for byte: every task gets the same arguments (batches
are fixed by the plan, never by Ray's scheduling), actors use the driver's number of torch CPU threads
(:attr:`RayOptions.torch_threads`), and the selection and the writer are the local code. Floating-point
kernels can still differ between machines (CPU vs GPU), as they do for the local backend run on two
machines.

On a remote cluster (``--address``) the workers must be able to import this package and read the input
paths (a shared filesystem mounted at the same path); checkpoints and the dataset are written by the
driver only.

On GPUs (what matters, measured in ``benchmarks/SCALING.md``):

* **Actors per GPU.** :attr:`RayOptions.actors_per_gpu` actors per GPU (default :data:`ACTORS_PER_GPU`
  = 1), each asking for ``1 / actors_per_gpu`` of a GPU and for one CPU per worker process it reads
  tiles with (:func:`actor_processes`: the build's ``workers`` setting for the actor's share of the
  CPUs). One actor per GPU with a dozen processes reading ahead keeps the GPU as busy as the local
  backend does; two actors split those CPUs and each holds its own CUDA context and models (CLIP
  ViT-B-32 ~0.6 GB, the Degradation ~0.1 GB, plus activations of one batch).
* **What crosses the object store.** A task carries only its arguments (an image path, or a batch's
  tile windows: path, row, column, id; a few hundred bytes a tile); the actor reads the pixels
  itself. What comes back is the checkpoint's bytes: ~2 KB a tile for an embedding (ViT-B-32, 512
  float32) and ~118 KB a tile for a degraded row (its LR at uint16 and its fields; the shard writer
  reads the HR from the input again), written by the driver.
* **The cluster this backend starts** (no ``--address``): no dashboard, logs not forwarded to the
  driver, its session files under :data:`RAY_TEMP_DIR` (``$RAY_TMPDIR`` or ``/tmp/ray``: Unix socket
  paths must stay under 108 bytes), and an object store of :attr:`RayOptions.object_store_bytes`
  (default :data:`OBJECT_STORE_BYTES` = 4 GiB; a degrade task returns ~118 KB a tile, 30 MB at
  ``batch_size`` 256; Ray puts the store in ``/dev/shm`` and falls back to disk, slower, with a
  warning, when ``/dev/shm`` is smaller).
* Fixed costs are paid once per build, while the driver lists the sources: the cluster's start and
  the actors' (import torch and open_clip, CUDA context, worker processes, and the models the build's
  stages use: :func:`load_models`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from dataset_builder.backends.local import run_ahead
from dataset_builder.core.checkpoints import KILL_ENV, Checkpoints
from dataset_builder.core.config import BuildConfig
from dataset_builder.core.context import BuildContext, worker_processes
from dataset_builder.core.errors import BuildError
from dataset_builder.core.plan import Step, Task, check_step, first_line

__all__ = [
    "INSTALL_HINT",
    "RayBackend",
    "RayOptions",
    "TaskActor",
    "actor_processes",
    "load_models",
    "pool_size",
    "require_ray",
    "tasks_per_call",
]

#: What to run when Ray is missing.
INSTALL_HINT: str = "pip install 'sen2naip-hub[ray]'"
#: CPUs each actor asks Ray for itself (the thread driving its device), besides one per worker process.
CPUS_PER_WORKER: float = 1.0
#: Tasks one actor call runs at most (one after another, reading ahead as the local backend does): a
#: step's tasks are spread evenly over the actors, in slices no larger than this so that an actor that
#: finishes early takes the next slice.
MAX_TASKS_PER_CALL: int = 64
#: Actors sharing one GPU by default (each asks for 1 / this of it; each reads ahead on its own).
ACTORS_PER_GPU: int = 1
#: Object store of a local cluster started by the backend (see the module docstring).
OBJECT_STORE_BYTES: int = 4 * 2**30
#: Where a local cluster started by the backend keeps its session files (sockets, logs, spilled objects).
RAY_TEMP_DIR: str = os.environ.get("RAY_TMPDIR", "/tmp/ray")


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide the Ray backend runs.

    Attributes:
        address: a Ray cluster address (``ray://host:10001``, ``auto``), or None for the cluster this
            process is already connected to, else a new local one.
        workers: actors in each pool; None: ``actors_per_gpu`` per GPU of the cluster when it has
            GPUs and the build's device is not ``cpu``, else one.
        torch_threads: CPU threads of torch inside each actor; None: the driver's
            ``torch.get_num_threads()``. CPU results depend on it (parallel reductions sum in another
            order), so the default is what makes a CPU Ray build equal a local CPU build.
        actors_per_gpu: actors sharing one GPU; each asks Ray for ``1 / actors_per_gpu`` GPU.
        object_store_bytes: object store of a local cluster this backend starts (ignored when it
            connects to a running one).
        processes: worker processes of each actor for its tile reads (0: threads), as the local
            backend's ``workers``; None: :func:`actor_processes` of the actor's share of the CPUs.
    """

    address: str | None = None
    workers: int | None = None
    torch_threads: int | None = None
    actors_per_gpu: int = ACTORS_PER_GPU
    object_store_bytes: int = OBJECT_STORE_BYTES
    processes: int | None = None

    def __post_init__(self) -> None:
        for name in ("workers", "torch_threads", "actors_per_gpu", "object_store_bytes"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise BuildError(f"ray option {name} must be a positive integer, found {value}")
        if self.processes is not None and self.processes < 0:
            raise BuildError(f"ray option processes must be 0 or more, found {self.processes}")


def pool_size(options: RayOptions, cluster_gpus: float, device: str) -> tuple[int, float]:
    """Actors of a pool and the GPU share of each (0.0: CPU actors).

    >>> pool_size(RayOptions(), 1, "cuda"), pool_size(RayOptions(actors_per_gpu=2), 1, "cuda")
    ((1, 1.0), (2, 0.5))
    >>> pool_size(RayOptions(workers=3), cluster_gpus=0, device="auto")
    (3, 0.0)
    """
    gpus = int(cluster_gpus)
    if gpus == 0 or device == "cpu":
        return options.workers or 1, 0.0
    return options.workers or gpus * options.actors_per_gpu, 1.0 / options.actors_per_gpu


def actor_processes(options: RayOptions, workers_setting: int | str, cluster_cpus: float, actors: int) -> int:
    """Worker processes of each actor: ``options.processes``, else the build's ``workers`` setting for
    the actor's share of the cluster's CPUs (``auto``: one per core but three, from 8 cores up).

    >>> actor_processes(RayOptions(), "auto", cluster_cpus=16, actors=1)
    13
    >>> actor_processes(RayOptions(), "auto", 16, actors=2), actor_processes(RayOptions(), "auto", 2, 1)
    (5, 0)
    >>> actor_processes(RayOptions(processes=3), "auto", cluster_cpus=16, actors=1)
    3
    """
    if options.processes is not None:
        return options.processes
    return worker_processes(workers_setting, cores=max(1, int(cluster_cpus) // max(1, actors)))


def tasks_per_call(tasks: int, actors: int) -> int:
    """Tasks in one actor call: the step's tasks spread evenly over the actors, at most
    :data:`MAX_TASKS_PER_CALL`.

    >>> tasks_per_call(40, 1), tasks_per_call(80, 2), tasks_per_call(3, 4), tasks_per_call(1000, 2)
    (40, 40, 1, 64)
    """
    return max(1, min(MAX_TASKS_PER_CALL, math.ceil(tasks / max(1, actors))))


def require_ray() -> None:
    """Raise :class:`BuildError` with the install line unless ``ray`` can be imported."""
    try:
        import ray  # noqa: F401
    except ImportError as err:
        raise BuildError(f"the Ray backend needs Ray ({err.name} is missing): {INSTALL_HINT}") from err


def load_models(context: BuildContext) -> None:
    """Load the models the build's tasks use into ``context`` now, as a Ray actor starts (the driver
    lists the sources meanwhile), not on each actor's first task: the Degradation when a stage
    degrades, the CLIP embedder when the synthetic stage runs. A model that fails to load is left for
    the first task that needs it, which fails the way it would have without this."""
    from dataset_builder.synthetic.stage import embedder

    config = context.config
    if config.cross_sensor.enabled or config.synthetic.enabled:
        with contextlib.suppress(Exception):
            context.degradation  # noqa: B018 (loads and keeps the model)
    if config.synthetic.enabled:
        with contextlib.suppress(Exception):
            embedder(context)


class TaskActor:
    """Ray actor: one :class:`BuildContext` (models loaded once, ``processes`` worker processes reading
    tiles) for every step of the build; :meth:`run` runs tasks as the local backend runs a step."""

    def __init__(self, config: BuildConfig, torch_threads: int, processes: int = 0) -> None:
        os.environ.pop(KILL_ENV, None)  # the kill-and-resume hook is for the driver only
        torch.set_num_threads(torch_threads)
        self.context = BuildContext(config, echo=lambda _: None, processes=processes)
        self.context.start()  # while the driver lists the sources
        load_models(self.context)

    def run(self, tasks: list[dict[str, Any]]) -> Iterator[tuple[str, bytes]]:
        """``(name, checkpoint bytes)`` of each task, yielded as soon as it is made
        (:func:`~dataset_builder.backends.local.run_ahead`: the next tasks' inputs are read meanwhile)."""
        for task, payload in run_ahead([Task(**t) for t in tasks], self.context):
            yield task.name, payload

    def close(self) -> None:
        """Stop the context's worker processes and remove its spool folder."""
        self.context.close()


class RayBackend:
    """Runs steps on the cluster at ``options.address`` (or a new local one), on one pool of actors kept
    from the first step to :meth:`close` (which also shuts down a cluster it started)."""

    def __init__(self, options: RayOptions | None = None) -> None:
        require_ray()
        self.options = options or RayOptions()
        self._started = False
        self._actors: list[Any] = []

    def _connect(self, context: BuildContext) -> None:
        import ray

        if self._started or ray.is_initialized():
            return
        local = (
            {}
            if self.options.address
            else {
                "object_store_memory": self.options.object_store_bytes,
                "_temp_dir": RAY_TEMP_DIR,
            }
        )
        ray.init(address=self.options.address, include_dashboard=False, log_to_driver=False, **local)
        context.echo(f"ray: connected to {self.options.address or 'a new local cluster'}")
        self._started = True

    def _pool(self, context: BuildContext) -> list[Any]:
        """The actors (started on first use): how many, their worker processes, the CPUs and GPU share
        each asks for (GPUs when the cluster has them and the build's device allows)."""
        if self._actors:
            return self._actors
        import ray

        config, resources = context.config, ray.cluster_resources()
        workers, gpu_share = pool_size(self.options, resources.get("GPU", 0), config.device)
        processes = actor_processes(self.options, config.workers, resources.get("CPU", 1), workers)
        cpus = CPUS_PER_WORKER + processes
        if cpus > resources.get("CPU", 1):
            raise BuildError(
                f"ray: an actor with {processes} worker processes needs {cpus:g} CPUs, the cluster has "
                f"{resources.get('CPU', 1):g}; give fewer processes"
            )
        actor = ray.remote(num_cpus=cpus, num_gpus=gpu_share)(TaskActor)
        threads = self.options.torch_threads or torch.get_num_threads()
        self._actors = [actor.remote(config, threads, processes) for _ in range(workers)]
        return self._actors

    def start(self, context: BuildContext) -> None:
        """Connect (or start a local cluster) and start the actors; they set up while the driver goes on."""
        context.convert_if_missing()  # on the driver, once, before actors try to load the model
        self._connect(context)
        self._pool(context)

    def execute(
        self,
        step: Step,
        store: Checkpoints,
        context: BuildContext,
        progress: bool,
        on_saved: Callable[[str], None] | None = None,
    ) -> None:
        todo = step.todo(store)
        if todo:
            self._run(todo, step.title, store, context, progress, on_saved)
        check_step(step, store)

    def _run(
        self,
        todo: list[Task],
        title: str,
        store: Checkpoints,
        context: BuildContext,
        progress: bool,
        on_saved: Callable[[str], None] | None,
    ) -> None:
        import ray

        if not self._actors:  # a caller that did not start the backend (a build starts it once)
            self.start(context)
        actors = self._actors
        rows = [dataclasses.asdict(task) for task in todo]
        size = tasks_per_call(len(rows), len(actors))
        slices = deque(rows[i : i + size] for i in range(0, len(rows), size))
        running = {actor.run.remote(slices.popleft()): actor for actor in actors if slices}
        with tqdm(total=len(todo), desc=f"{title} (ray)", unit="task", disable=not progress) as bar:
            while running:
                ready, _ = ray.wait(list(running), num_returns=1)
                name, payload = self._next(ready[0], running, slices)
                if name is None:
                    continue
                store.save_bytes(name, payload)
                if on_saved is not None:
                    on_saved(name)
                bar.update()

    @staticmethod
    def _next(call: Any, running: dict[Any, Any], slices: deque) -> tuple[str | None, bytes | None]:
        """The next ``(name, bytes)`` of an actor call; ``(None, None)`` when the call is done (its actor
        then takes the next slice). A dead actor stops the build with one line."""
        import ray

        try:
            return ray.get(next(call))
        except StopIteration:
            actor = running.pop(call)
            if slices:
                running[actor.run.remote(slices.popleft())] = actor
            return None, None
        except ray.exceptions.RayActorError as err:
            raise BuildError(
                f"ray: an actor stopped ({first_line(err)}); the checkpoints are kept: run the same "
                "command again to resume"
            ) from err

    def close(self) -> None:
        """Stop the actors, and shut down the cluster this backend started (one it connected to keeps
        running)."""
        import ray

        if self._actors:
            with contextlib.suppress(ray.exceptions.RayError):  # a dead actor has nothing left to close
                ray.get([actor.close.remote() for actor in self._actors])
            for actor in self._actors:
                ray.kill(actor)
            self._actors = []
        if self._started:
            ray.shutdown()
            self._started = False
