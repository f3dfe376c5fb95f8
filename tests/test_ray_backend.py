"""The Ray backend (``sen2naip build --backend ray``) builds the same dataset as the local backend.

One local build and one Ray build (a local 2-CPU Ray cluster) of the small config of
``tests/test_build.py`` over the real sample, synthetic config only: ``cross_sensor`` runs the same
local code on the driver for both backends, so it would add time and prove nothing here.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from unittest import mock

import pytest
from build_helpers import NAIP_DIR, digests, naip_folder, small_config, write_yaml
from conftest import offline_hf

from dataset_builder.backends import ray as ray_backend
from dataset_builder.build import build_dataset
from dataset_builder.core.checkpoints import Checkpoints
from dataset_builder.core.config import load_config
from dataset_builder.core.context import BuildContext
from dataset_builder.core.errors import BuildError
from dataset_builder.sources.stage import stage_sources
from dataset_builder.synthetic import stage as synthetic
from dataset_builder.write.output import MANIFEST_NAME

ray = pytest.importorskip("ray", reason="the optional ray extra is not installed")

pytestmark = pytest.mark.skipif(not NAIP_DIR.is_dir(), reason=f"sample NAIP not found at {NAIP_DIR}")


def _selected(work: Path) -> list[str]:
    selection = json.loads((work / "synthetic" / "selection.json").read_text())
    return [s["tile_id"] for s in selection["selected"]]


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def both(tmp_path_factory, reference_dir, ray_cluster) -> dict:
    root = tmp_path_factory.mktemp("ray_backend")
    naip = naip_folder(root)
    builds = {}
    for name in ("local", "ray", "ray_processes"):
        out = root / name / "sen2naip"
        settings = small_config(
            naip, reference_dir / "sen2naip-degradation", out, cross_sensor={"enabled": False}
        )
        config = load_config(write_yaml(root / f"{name}.yaml", settings))
        with pytest.MonkeyPatch.context() as patch:
            offline_hf(patch, root / "hf_home")
            if name == "ray_processes":  # the actor reads through a worker process of its own
                patch.setattr(
                    ray_backend, "RayOptions", functools.partial(ray_backend.RayOptions, processes=1)
                )
            backend = name.split("_")[0]
            result = build_dataset(config, progress=False, echo=lambda _: None, backend=backend)
        builds[name] = {"out": out, "work": config.work_path, "result": result}
    return builds


def test_ray_selects_the_same_tiles(both) -> None:
    local, remote = _selected(both["local"]["work"]), _selected(both["ray"]["work"])
    assert len(local) == 24
    assert remote == local
    assert local == sorted(local)  # in image order (ids are <image>_r<row>_c<col>, zero-padded)
    assert len({t.rsplit("_r", 1)[0] for t in local}) > 1  # from several images


@pytest.mark.parametrize("ray_build", ["ray", "ray_processes"])
def test_ray_writes_byte_identical_shards_card_and_manifest(both, ray_build) -> None:
    local, remote = digests(both["local"]["out"]), digests(both[ray_build]["out"])
    shards = [name for name in local if name.endswith(".parquet")]
    assert len(shards) >= 3 and MANIFEST_NAME in local and "README.md" in local
    assert remote == local
    assert both[ray_build]["result"].counts == both["local"]["result"].counts


def test_ray_rerun_changes_nothing(both) -> None:
    """A finished Ray build is confirmed from its checkpoints, as a local one is."""
    out = both["ray"]["out"]
    before = digests(out)
    config = load_config(Path(out).parents[1] / "ray.yaml")
    messages: list[str] = []
    result = build_dataset(config, progress=False, echo=messages.append, backend="ray")
    assert not result.changed and digests(out) == before
    assert any("nothing to do" in m for m in messages)


def test_missing_ray_is_one_line_with_the_install_hint(tmp_path) -> None:
    config = load_config(write_yaml(tmp_path / "c.yaml", small_config(NAIP_DIR, tmp_path, tmp_path / "out")))
    hint = r"pip install 'sen2naip-hub\[ray\]'"
    with (
        mock.patch.dict(sys.modules, {"ray": None, "ray.data": None}),
        pytest.raises(BuildError, match=hint) as caught,
    ):
        build_dataset(config, progress=False, echo=lambda _: None, backend="ray")
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_unknown_backend_is_refused(tmp_path) -> None:
    config = load_config(write_yaml(tmp_path / "c.yaml", small_config(NAIP_DIR, tmp_path, tmp_path / "out")))
    with pytest.raises(BuildError, match="unknown backend 'dask'"):
        build_dataset(config, progress=False, echo=lambda _: None, backend="dask")


def test_an_actor_that_dies_stops_the_step_with_one_line(ray_cluster, reference_dir, tmp_path) -> None:
    """An actor killed mid-step (out of memory, a node lost) stops the build with one line; the
    checkpoints saved before it are kept, and the next run resumes from them."""
    settings = small_config(
        naip_folder(tmp_path), reference_dir / "sen2naip-degradation", tmp_path / "out",
        cross_sensor={"enabled": False},
    )  # fmt: skip
    config = load_config(write_yaml(tmp_path / "c.yaml", settings))
    store = Checkpoints(tmp_path / "work")
    step = synthetic.plan_embed(config, stage_sources(config, store, progress=False))
    assert len(step.tasks) >= 2
    backend = ray_backend.RayBackend(ray_backend.RayOptions(workers=1))
    context = BuildContext(config, echo=lambda _: None, processes=0)
    kill_after_first = lambda _name: [ray.kill(actor) for actor in backend._actors]  # noqa: E731
    try:
        with pytest.raises(BuildError, match="ray: an actor stopped") as caught:
            backend.execute(step, store, context, progress=False, on_saved=kill_after_first)
    finally:
        backend.close()
        context.close()
    assert "\n" not in str(caught.value) and "run the same command again to resume" in str(caught.value)
    assert 1 <= sum(store.has(name) for name in step.names) < len(step.tasks)


def test_actors_asking_for_more_cpus_than_the_cluster_has_are_one_line(ray_cluster, tmp_path) -> None:
    config = load_config(write_yaml(tmp_path / "c.yaml", small_config(NAIP_DIR, tmp_path, tmp_path / "out")))
    backend = ray_backend.RayBackend(ray_backend.RayOptions(processes=5))  # 6 CPUs; the cluster has 2
    try:
        with pytest.raises(BuildError, match=r"needs 6 CPUs, the cluster has 2; give fewer") as caught:
            backend.start(BuildContext(config, echo=lambda _: None, processes=0))
    finally:
        backend.close()
    assert "\n" not in str(caught.value)
