"""How wide the Ray backend's pools are (no Ray cluster needed): actors and GPU share per actor."""

from __future__ import annotations

import pytest

from dataset_builder.backends.ray import ACTORS_PER_GPU, RayOptions, pool_size
from dataset_builder.core.errors import BuildError


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
