"""Sub-pixel co-registration (dataset_builder.cross_sensor.align) on real Sentinel-2 from ../shared/sample."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import SAMPLE_DIR
from scipy import ndimage

from dataset_builder.cross_sensor.align import apply_shift, coregister, estimate_shift
from sen2naip_hub.errors import InvalidImageError

SAMPLE = SAMPLE_DIR
#: REFERENCE_SCENES.npy band axis is B01…B12 (13 bands, B8A and B10 included): B04, B03, B02, B08.
REFERENCE_BANDS = [3, 2, 1, 7]
#: Clear dates of REFERENCE_SCENES.npy (0 and 1 are cloudy).
CLEAR_DATES = [2, 3, 4]
#: spyndex_S2_10m.json is B02, B03, B04, B08: reordered to B04, B03, B02, B08.
SPYNDEX_BANDS = [2, 1, 0, 3]
#: Pixels cropped from every side after shifting, so no test image contains extrapolated borders.
CROP = 4
#: The accuracy the builder needs (brief): re-aligned to within 0.1 LR pixel.
TOLERANCE_PX = 0.1
OFFSETS_PER_SCENE = 6


def _real_scenes() -> dict[str, np.ndarray]:
    if not SAMPLE.is_dir():
        pytest.skip(f"sample imagery not found at {SAMPLE}")
    scenes = np.load(SAMPLE / "s2" / "REFERENCE_SCENES.npy")
    out = {f"eolearn_date{d}": np.moveaxis(scenes[d][..., REFERENCE_BANDS], -1, 0) for d in CLEAR_DATES}
    dn = np.asarray(json.loads((SAMPLE / "s2" / "spyndex_S2_10m.json").read_text()), dtype=np.float32)
    out["spyndex"] = dn[SPYNDEX_BANDS] / 10000.0
    return {name: scene.astype(np.float32) for name, scene in out.items()}


SCENES = _real_scenes() if SAMPLE.is_dir() else {}


def _shifted_pair(scene: np.ndarray, shift: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """(reference, moving): ``moving`` is ``scene`` translated by ``shift`` (cubic spline), both cropped."""
    moving = np.stack([ndimage.shift(band, shift, order=3, mode="reflect") for band in scene])
    inner = (slice(None), slice(CROP, -CROP), slice(CROP, -CROP))
    return scene[inner], moving[inner]


def _offsets(seed: int) -> list[tuple[float, float]]:
    rng = np.random.default_rng(seed)
    return [tuple(float(v) for v in rng.uniform(-2.0, 2.0, size=2)) for _ in range(OFFSETS_PER_SCENE)]


@pytest.mark.parametrize("name", sorted(SCENES) or ["missing"])
def test_realigns_real_s2_within_a_tenth_of_a_pixel(name: str) -> None:
    scene = SCENES[name]
    for shift in _offsets(seed=sum(map(ord, name))):
        reference, moving = _shifted_pair(scene, shift)
        result = coregister(moving, reference)
        error = math.hypot(result.shift[0] - shift[0], result.shift[1] - shift[1])
        assert error < TOLERANCE_PX, f"{name}: true {shift}, estimated {result.shift}"
        assert result.residual < TOLERANCE_PX
        # The aligned image lies on the reference: compare away from the extrapolated border.
        edge = math.ceil(max(abs(s) for s in shift)) + 1
        inner = (slice(None), slice(edge, -edge), slice(edge, -edge))
        misfit = np.abs(result.aligned[inner] - reference[inner]).mean()
        assert misfit < 0.1 * np.abs(reference[inner] - reference[inner].mean()).mean()


def test_single_band_and_2d_input_agree_with_truth() -> None:
    scene = SCENES.get("spyndex")
    if scene is None:
        pytest.skip("sample imagery missing")
    reference, moving = _shifted_pair(scene, (0.37, -1.62))
    nir = estimate_shift(reference, moving, band=3)
    plain = estimate_shift(reference[3], moving[3])
    assert nir == plain
    assert abs(nir[0] - 0.37) < TOLERANCE_PX and abs(nir[1] + 1.62) < TOLERANCE_PX


def test_integer_circular_shift_is_exact() -> None:
    scene = SCENES.get("eolearn_date2")
    if scene is None:
        pytest.skip("sample imagery missing")
    moving = np.roll(scene, (2, -1), axis=(1, 2))
    assert estimate_shift(scene, moving) == pytest.approx((2.0, -1.0), abs=0.011)


def test_shift_beyond_the_bound_is_not_removed_and_shows_as_residual() -> None:
    scene = SCENES.get("spyndex")
    if scene is None:
        pytest.skip("sample imagery missing")
    reference, moving = _shifted_pair(scene, (6.4, -5.3))
    bounded = coregister(moving, reference, max_shift=3.0)
    assert max(abs(v) for v in bounded.shift) <= 3.0
    assert bounded.residual > 1.0
    free = coregister(moving, reference, max_shift=None)
    assert free.shift == pytest.approx((6.4, -5.3), abs=TOLERANCE_PX)


def test_apply_shift_moves_content_by_plus_shift() -> None:
    image = np.zeros((1, 9, 9), dtype=np.float32)
    image[0, 4, 4] = 1.0
    moved = apply_shift(image, (2.0, -1.0), order=1)
    assert np.unravel_index(np.argmax(moved[0]), (9, 9)) == (6, 3)
    assert moved.dtype == np.float32


def test_nan_pixels_are_tolerated() -> None:
    scene = SCENES.get("spyndex")
    if scene is None:
        pytest.skip("sample imagery missing")
    reference, moving = _shifted_pair(scene, (-0.8, 1.1))
    moving = moving.copy()
    moving[:, 10:14, 20:30] = np.nan
    assert estimate_shift(reference, moving) == pytest.approx((-0.8, 1.1), abs=TOLERANCE_PX)


@pytest.mark.parametrize(
    ("reference", "moving"),
    [
        (np.zeros((4, 32, 32)), np.zeros((4, 32, 30))),
        (np.zeros((4, 4, 4)), np.zeros((4, 4, 4))),
        (np.zeros((2, 4, 32, 32)), np.zeros((2, 4, 32, 32))),
        (np.full((1, 16, 16), np.nan), np.zeros((1, 16, 16))),
    ],
)
def test_bad_inputs_raise_typed_errors(reference: np.ndarray, moving: np.ndarray) -> None:
    with pytest.raises(InvalidImageError):
        estimate_shift(reference, moving)
