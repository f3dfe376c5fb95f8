"""How wide the Ray backend's pools are (no Ray cluster needed): actors and GPU share per actor; what an
actor loads as it starts."""

from __future__ import annotations

import pytest
from build_helpers import NAIP_DIR, small_config, write_yaml

from dataset_builder.backends.ray import ACTORS_PER_GPU, RayOptions, load_models, pool_size
from dataset_builder.core.config import load_config
from dataset_builder.core.context import BuildContext
from dataset_builder.core.errors import BuildError
from sen2naip_hub.errors import ModelNotFoundError


@pytest.mark.parametrize(
    ("options", "gpus", "device", "expected"),
    [
        (RayOptions(), 1, "cuda", (ACTORS_PER_GPU, 1 / ACTORS_PER_GPU)),
        (RayOptions(actors_per_gpu=1), 4, "auto", (4, 1.0)),
        (RayOptions(actors_per_gpu=4), 2, "cuda:0", (8, 0.25)),
        (RayOptions(workers=3, actors_per_gpu=2), 8, "cuda", (3, 0.5)),
        (RayOptions(), 2, "cpu", (1, 0.0)),
        (RayOptions(workers=2), 0, "auto", (2, 0.0)),
    ],
)
def test_pool_size(options, gpus, device, expected) -> None:
    assert pool_size(options, gpus, device) == expected


@pytest.mark.parametrize("field", ["workers", "torch_threads", "actors_per_gpu", "object_store_bytes"])
def test_a_non_positive_option_is_one_line_naming_it(field) -> None:
    with pytest.raises(BuildError, match=f"ray option {field} must be a positive integer, found 0") as caught:
        RayOptions(**{field: 0})
    assert "\n" not in str(caught.value)


def _context(tmp_path, model, **changes) -> BuildContext:
    settings = small_config(NAIP_DIR, model, tmp_path / "out", **changes)
    return BuildContext(load_config(write_yaml(tmp_path / "c.yaml", settings)), echo=lambda _: None)


def _not_made(key: str):
    def factory():
        raise AssertionError(f"{key} was not loaded ahead")

    return factory


@pytest.mark.parametrize(
    ("stages", "loaded"),
    [
        ({}, {"degradation", "clip"}),
        ({"synthetic": {"enabled": False}}, {"degradation"}),
        ({"synthetic": {"enabled": False}, "cross_sensor": {"enabled": False}}, set()),
    ],
)
def test_an_actor_loads_the_models_its_stages_use_as_it_starts(reference_dir, tmp_path, stages, loaded):
    context = _context(tmp_path, reference_dir / "sen2naip-degradation", **stages)
    load_models(context)
    for key in ("degradation", "clip"):
        kept = context.cached(key, lambda: None)  # None: not loaded ahead
        assert (kept is not None) == (key in loaded), key
    if "degradation" in loaded:
        assert context.cached("degradation", _not_made("degradation")) is context.degradation


def test_a_model_that_fails_to_load_ahead_fails_on_its_first_use_as_before(tmp_path) -> None:
    context = _context(tmp_path, tmp_path / "no-such-model")
    load_models(context)  # no error here: the first task that needs the model reports it
    assert context.cached("clip", _not_made("clip")) is not None  # the other model still loaded
    with pytest.raises(ModelNotFoundError, match="no-such-model: no such model folder"):
        _ = context.degradation
