"""Reading ahead (core.plan.prefetch, the local backend) and tasks started as their inputs are saved
(write.pipeline.DependentTasks): same results as running in order, failures isolated or raised."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from dataset_builder.backends.local import LocalBackend
from dataset_builder.core.checkpoints import Checkpoints, encode_arrays
from dataset_builder.core.errors import BuildError
from dataset_builder.core.plan import Step, Task, run_task
from dataset_builder.write.pipeline import DependentTasks

#: What the loaders of this module saw, in order (thread name, item).
LOADS: list[tuple[str, int]] = []


def load_item(args: dict, context) -> int:
    """Test loader: reads item ``args["n"]`` (fails for a negative one)."""
    LOADS.append((threading.current_thread().name, args["n"]))
    if args["n"] < 0:
        raise OSError(f"item {args['n']}: unreadable")
    return args["n"] * 10


def run_item(args: dict, context, loaded: int) -> bytes:
    """Test runner: the loaded value in a checkpoint."""
    return encode_arrays({"n": args["n"], "loaded": loaded})


def _step(items: list[int]) -> Step:
    tasks = tuple(
        Task(f"x/{i:03d}.npz", f"{__name__}:run_item", {"n": n}, f"{__name__}:load_item")
        for i, n in enumerate(items)
    )
    return Step("test", tasks)


def test_read_ahead_gives_the_in_order_results_and_isolates_a_failing_read(tmp_path) -> None:
    LOADS.clear()
    store, step = Checkpoints(tmp_path), _step([1, 2, -3, 4, 5])
    saved: list[str] = []
    LocalBackend().execute(step, store, SimpleNamespace(), progress=False, on_saved=saved.append)
    assert saved == step.names  # saved in plan order, each reported
    assert [n for _, n in LOADS] == [1, 2, -3, 4, 5] and all(t.startswith("prefetch") for t, _ in LOADS)
    assert store.rejection("x/002.npz") == "unreadable: item -3: unreadable"
    for task in step.tasks:  # the same bytes as running each task alone, loader inside
        assert store.path(task.name).read_bytes() == run_task(task, SimpleNamespace())
    assert store.load_meta("x/003.npz") == {"n": 4, "loaded": 40}


def test_every_read_failing_stops_the_step(tmp_path) -> None:
    with pytest.raises(BuildError, match="every item failed"):
        LocalBackend().execute(_step([-1, -2]), Checkpoints(tmp_path), SimpleNamespace(), progress=False)


def _shards(needs: list[list[str]]) -> Step:
    return Step("shards", tuple(Task(f"s/{i}", "unused:run", {"needs": n}) for i, n in enumerate(needs)))


def test_dependent_tasks_start_when_what_they_need_is_saved(tmp_path) -> None:
    store = Checkpoints(tmp_path)
    started: list[str] = []

    def run(task: Task) -> None:
        started.append(task.name)
        store.save_json(task.name, {})

    store.save_json("b/0", {})  # saved by an earlier (resumed) run
    store.save_json("s/3", {})  # a shard written by an earlier run: not run again
    with DependentTasks(_shards([["b/0"], ["b/0", "b/1"], ["b/2"], ["b/2"]]), store, run, workers=2) as tasks:
        deadline = time.monotonic() + 10
        while "s/0" not in started and time.monotonic() < deadline:
            time.sleep(0.01)
        assert started == ["s/0"]  # ready at once; the others wait
        store.save_json("b/1", {})
        tasks.notify("b/1")
        store.save_json("b/2", {})
        tasks.notify("b/2")
    assert sorted(started) == ["s/0", "s/1", "s/2"]


def test_a_failing_dependent_task_is_raised_after_the_others_finish(tmp_path) -> None:
    store = Checkpoints(tmp_path)
    done: list[str] = []

    def run(task: Task) -> None:
        if task.name == "s/0":
            raise OSError(28, "No space left on device")
        time.sleep(0.05)
        done.append(task.name)

    with (
        pytest.raises(OSError, match="No space"),
        DependentTasks(_shards([[], [], []]), store, run, workers=1),
    ):
        pass
    assert done == ["s/1", "s/2"]
