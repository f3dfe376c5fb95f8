"""On-the-fly training pairs (sen2naip_hub.training, sen2naip_hub.training_data) on real NAIP tiles:
reproducibility, every draw within its documented range and actually applied, device and dtype kept,
DataLoader workers and ``datasets.with_transform``, typed errors, and the ranges' sources."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sen2naip_hub import Degradation
from sen2naip_hub.errors import InvalidImageError, ModelNotFoundError
from sen2naip_hub.models import BlurModel, NoiseModel
from sen2naip_hub.training import (
    HARMONIZATION_CHOICES,
    NOISE_SCALE_RANGE,
    SHIFT_MAX_LR_PX,
    SIGMA_TOLERANCE_HR_PX,
    Randomization,
    TrainingPairError,
    TrainingPairs,
    shifted_kernels,
    step_generator,
    step_seed,
)
from sen2naip_hub.training_data import GeoTiffTiles, PairTransform

CROP = 128  # HR side for the tests that run the U-Net (fast on 2 cores)
NO_HARMONIZATION = {"none": 1.0}


@pytest.fixture(scope="module")
def degradation(reference_dir) -> Degradation:
    return Degradation.from_pretrained(reference_dir / "sen2naip-degradation")


@pytest.fixture(scope="module")
def pairs(degradation) -> TrainingPairs:
    """Every randomisation on, at its documented range."""
    return TrainingPairs.from_degradation(degradation)


@pytest.fixture(scope="module")
def tiles256(naip_tiles) -> torch.Tensor:
    """(3, 4, 256, 256) real NAIP tiles."""
    return naip_tiles[:, :, :256, :256].contiguous()


@pytest.fixture(scope="module")
def crops(naip_tiles) -> torch.Tensor:
    """(6, 4, 128, 128) real NAIP crops from three dates."""
    return torch.cat([naip_tiles[:, :, :CROP, :CROP], naip_tiles[:, :, -CROP:, -CROP:]])


def only(degradation, **changes) -> TrainingPairs:
    """Pairs with the published degradation except ``changes`` to the randomisation."""
    base = Randomization.published()
    fields = {
        "sigma_tolerance": base.sigma_tolerance,
        "noise_scale": base.noise_scale,
        "shift_lr_px": base.shift_lr_px,
        "harmonization": NO_HARMONIZATION,
    }
    return TrainingPairs.from_degradation(degradation, Randomization(**{**fields, **changes}))


# ---------------------------------------------------------------------------------------- seeding
def test_same_seed_same_pairs_and_other_seeds_differ(pairs, crops):
    hr = crops[:3]
    first = pairs(hr, step_generator(7, step=3))
    again = pairs(hr, step_generator(7, step=3))
    assert torch.equal(first.lr, again.lr) and torch.equal(first.hr, again.hr)
    assert torch.equal(first.draws.sigmas, again.draws.sigmas)
    for other in (step_generator(8, step=3), step_generator(7, step=4), step_generator(7, step=3, worker=1)):
        assert not torch.equal(pairs(hr, other).lr, first.lr)


def test_step_seed_mixes_its_inputs_and_rejects_negative_values():
    seeds = {step_seed(0, step, worker) for step in range(50) for worker in range(4)}
    assert len(seeds) == 200 and all(0 <= s < 2**63 for s in seeds)
    with pytest.raises(TrainingPairError, match="-1"):
        step_seed(0, -1, 0)


# ---------------------------------------------------------------------------------------- ranges
def test_every_draw_lies_within_its_documented_range_and_spans_it(pairs):
    draws = pairs.draw(4000, torch.Generator().manual_seed(0))
    centre = torch.tensor(pairs.blur.sigmas, dtype=torch.float64)
    tol = torch.tensor(SIGMA_TOLERANCE_HR_PX, dtype=torch.float64)
    offsets = draws.sigmas - centre
    assert (offsets >= tol[:, 0] - 1e-12).all() and (offsets <= tol[:, 1] + 1e-12).all()
    assert torch.allclose(offsets.min(0).values, tol[:, 0], atol=0.01)
    assert torch.allclose(offsets.max(0).values, tol[:, 1], atol=0.01)
    radius = draws.shifts.norm(dim=1)
    assert radius.max() <= SHIFT_MAX_LR_PX + 1e-12 and radius.max() > 0.99 * SHIFT_MAX_LR_PX
    assert abs(float((radius <= SHIFT_MAX_LR_PX / 2).double().mean()) - 0.25) < 0.03  # uniform over area
    low, high = NOISE_SCALE_RANGE
    scale = draws.noise_scale
    assert (
        scale.min() >= low and scale.max() <= high and scale.min() < low + 0.01 and scale.max() > high - 0.01
    )
    counts = torch.bincount(draws.harmonization, minlength=len(HARMONIZATION_CHOICES))
    assert (abs(counts / 4000 - 1 / 3) < 0.03).all()


def test_blur_uses_each_samples_sigmas(degradation, tiles256):
    pairs = only(degradation, sigma_tolerance=SIGMA_TOLERANCE_HR_PX, noise_scale=(0.0, 0.0))
    out = pairs(tiles256, step_generator(1, 0))
    for i in range(len(tiles256)):
        expected = BlurModel(sigmas=out.draws.sigmas[i].tolist())(tiles256[i : i + 1])
        assert torch.allclose(out.lr[i : i + 1], expected, atol=1e-5, rtol=0)
    assert not torch.allclose(out.lr, degradation.blur(tiles256), atol=1e-4)


def test_noise_is_the_learned_draw_times_each_samples_scale(degradation, tiles256):
    pairs = only(degradation, noise_scale=NOISE_SCALE_RANGE)
    generator = step_generator(2, 0)
    out = pairs(tiles256, generator)
    clean = degradation.blur(tiles256)
    replay = torch.Generator().manual_seed(step_seed(2, 0))
    pairs.draw(len(tiles256), replay)  # the noise comes after the parameter draws
    learned = degradation.noise.sample(clean, replay)
    expected = clean + learned * out.draws.noise_scale.float()[:, None, None, None]
    assert torch.allclose(out.lr, expected, atol=1e-6, rtol=0)
    assert len(set(out.draws.noise_scale.tolist())) == len(tiles256)


def test_published_randomisation_equals_the_degradation(degradation, crops):
    pairs = TrainingPairs.from_degradation(degradation, Randomization.published("global"))
    out = pairs(crops, torch.Generator().manual_seed(5))
    replay = torch.Generator().manual_seed(5)
    pairs.draw(len(crops), replay)
    with torch.no_grad():
        expected = degradation(crops, generator=replay, harmonization="global").lr
    assert torch.equal(out.lr, expected)


def test_each_sample_gets_its_drawn_harmonization_mode(degradation, crops):
    pairs = only(degradation, harmonization={"global": 1, "local": 1, "none": 1}, noise_scale=(0.0, 0.0))
    modes = {0, 1, 2}
    seed = next(
        s
        for s in range(100)
        if set(pairs.draw(len(crops), step_generator(s, 0)).harmonization.tolist()) == modes
    )
    out = pairs(crops, step_generator(seed, 0))
    assert set(out.draws.harmonization.tolist()) == modes
    with torch.no_grad():
        for i, mode_index in enumerate(out.draws.harmonization.tolist()):
            mode = HARMONIZATION_CHOICES[mode_index]
            expected = degradation(crops[i : i + 1], harmonization=mode, noise=False, return_harmonized=True)
            assert torch.allclose(out.lr[i : i + 1], expected.lr, atol=1e-5, rtol=0), mode
            assert torch.allclose(out.hr[i : i + 1], expected.harmonized, atol=1e-6, rtol=0), mode
    assert not torch.equal(out.hr, crops)
    as_input = TrainingPairs.from_degradation(degradation, pairs.randomization, target="input")
    assert as_input(crops, step_generator(seed, 0)).hr is crops


def test_shift_misregisters_the_lr_by_the_drawn_amount(degradation, tiles256):
    from dataset_builder.cross_sensor.align import estimate_shift

    pairs = only(degradation, shift_lr_px=SHIFT_MAX_LR_PX)
    out = pairs(tiles256, step_generator(3, 0))
    aligned = degradation.blur(tiles256)
    for i in range(len(tiles256)):
        measured = estimate_shift(aligned[i].numpy(), out.lr[i].numpy())
        assert np.allclose(measured, out.draws.shifts[i].numpy(), atol=0.1), (measured, out.draws.shifts[i])


def test_whole_pixel_shifts_equal_the_blur_of_the_rolled_image(pairs, naip_tiles):
    """In the interior (away from the padding), a shift by whole HR pixels is δ of the rolled image."""
    hr = naip_tiles[:2, :, :128, :128]
    shifts = torch.tensor([[8.0, -4.0], [-3.0, 5.0]], dtype=torch.float64)
    sigmas = torch.tensor([pairs.blur.sigmas] * 2, dtype=torch.float64)
    lr = pairs.degrade(hr, sigmas, shifts)
    for i, (dy, dx) in enumerate(shifts.long().tolist()):
        expected = pairs.blur(torch.roll(hr[i : i + 1], shifts=(dy, dx), dims=(-2, -1)))
        assert torch.allclose(lr[i, :, 5:-5, 5:-5], expected[0, :, 5:-5, 5:-5], atol=1e-6)
    with pytest.raises(TrainingPairError, match="reach"):
        shifted_kernels(torch.ones(1, 3) / 3, torch.tensor([3.0]), reach=2)


# ---------------------------------------------------------------------------------------- device, dtype
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_device_and_dtype_are_kept(degradation, crops, dtype):
    hr = crops[:2].to(dtype)
    out = only(degradation, noise_scale=NOISE_SCALE_RANGE, shift_lr_px=SHIFT_MAX_LR_PX)(hr)
    assert out.hr is hr and out.lr.dtype == dtype and out.lr.device == hr.device
    assert tuple(out.lr.shape) == (2, 4, CROP // 4, CROP // 4) and torch.isfinite(out.lr.float()).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_input_gives_cuda_pairs_and_a_cuda_generator_is_reproducible(pairs, crops):
    hr = crops.cuda()
    first = pairs.to("cuda")(hr, step_generator(0, 0, device="cuda"))
    again = pairs(hr, step_generator(0, 0, device="cuda"))
    assert first.lr.device.type == "cuda" and torch.equal(first.lr, again.lr)


# ---------------------------------------------------------------------------------------- sources
def loader_batches(dataset, pairs, workers: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    transform = PairTransform(pairs, seed=seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=workers, collate_fn=transform)
    return list(loader)


def test_dataloader_with_workers_is_reproducible(degradation, sample_dir):
    pairs = only(degradation, sigma_tolerance=SIGMA_TOLERANCE_HR_PX, noise_scale=NOISE_SCALE_RANGE)
    tiles = GeoTiffTiles(sample_dir / "naip", tile=CROP, stride=400)
    assert len(tiles) >= 8
    subset = torch.utils.data.Subset(tiles, range(8))
    first = loader_batches(subset, pairs, workers=2)
    again = loader_batches(subset, pairs, workers=2)
    assert len(first) == 4 and all(b["lr"].shape == (2, 4, CROP // 4, CROP // 4) for b in first)
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a["lr"], b["lr"]) and torch.equal(a["hr"], b["hr"])
    assert torch.equal(first[0]["hr"][0], tiles[0])
    other_seed = loader_batches(subset, pairs, workers=2, seed=1)
    assert not torch.equal(first[0]["lr"], other_seed[0]["lr"])
    # the two workers' first batches are drawn from different generators
    assert not torch.allclose(
        first[0]["lr"] - pairs.blur(first[0]["hr"]), first[1]["lr"] - pairs.blur(first[1]["hr"])
    )


def test_pair_transform_epochs_draw_anew(degradation, crops):
    transform = PairTransform(only(degradation, noise_scale=NOISE_SCALE_RANGE), seed=0)
    first = transform({"hr": crops[:2]})["lr"]
    transform.set_epoch(1)
    second = transform({"hr": crops[:2]})["lr"]
    transform.set_epoch(0)
    assert torch.equal(transform({"hr": crops[:2]})["lr"], first) and not torch.equal(first, second)


def test_datasets_with_transform(degradation, crops):
    import datasets

    counts = np.rint(crops[:4].numpy() * 10000).astype(np.uint16)  # the dataset's reflectance × 10000
    features = datasets.Features(
        {"hr": datasets.Array3D(shape=counts.shape[1:], dtype="uint16"), "roi": datasets.Value("int32")}
    )
    split = datasets.Dataset.from_dict({"hr": list(counts), "roi": [0, 1, 2, 3]}, features=features)
    pairs = only(degradation, noise_scale=NOISE_SCALE_RANGE, shift_lr_px=SHIFT_MAX_LR_PX)
    view = split.with_transform(PairTransform(pairs, seed=0))
    batch = view[0:2]
    assert batch["lr"].shape == (2, 4, CROP // 4, CROP // 4) and batch["hr"].dtype == torch.float32
    assert torch.allclose(batch["hr"], torch.from_numpy(counts[:2] / 10000).float()) and batch["roi"] == [
        0,
        1,
    ]
    again = split.with_transform(PairTransform(pairs, seed=0))[0:2]
    assert torch.equal(batch["lr"], again["lr"])
    loader = torch.utils.data.DataLoader(view, batch_size=2, num_workers=2)
    assert [tuple(b["lr"].shape) for b in loader] == [(2, 4, CROP // 4, CROP // 4)] * 2


# ---------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("hr", "message"),
    [
        (torch.rand(2, 3, 64, 64), r"\(2, 3, 64, 64\)"),
        (torch.zeros(2, 4, 64, 64, dtype=torch.uint8), "torch.uint8"),
        (torch.rand(2, 4, 66, 64), "66×64"),
        (torch.full((1, 4, 64, 64), math.nan), "nan"),
        (torch.full((1, 4, 64, 64), 1.5), "1.5"),
    ],
)
def test_bad_hr_is_rejected_naming_the_value(hr, message):
    pairs = TrainingPairs(
        BlurModel(), NoiseModel(mode="none"), randomization=Randomization(harmonization=NO_HARMONIZATION)
    )
    with pytest.raises(InvalidImageError, match=message):
        pairs(hr)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"noise_scale": (-0.1, 1.0)}, "noise_scale"),
        ({"noise_scale": (1.0, 0.5)}, "noise_scale"),
        ({"shift_lr_px": -1.0}, "shift_lr_px"),
        ({"harmonization": {"globl": 1.0}}, "globl"),
        ({"harmonization": {"none": 0.0}}, "positive sum"),
        ({"sigma_tolerance": ((0.1, 0.5),) * 4}, r"below <= 0 <= above"),
        ({"sigma_tolerance": ((0.0, 0.5),) * 3}, "4"),
    ],
)
def test_bad_randomisation_is_rejected_naming_the_value(changes, message):
    with pytest.raises(TrainingPairError, match=message):
        Randomization(**changes)


def test_models_that_cannot_make_the_pairs_are_rejected(tmp_path):
    with pytest.raises(TrainingPairError, match="harmonization"):
        TrainingPairs(BlurModel(), NoiseModel())  # the default odds draw global and local
    with pytest.raises(TrainingPairError, match="σ <= 0"):
        TrainingPairs(
            BlurModel(),
            NoiseModel(),
            randomization=Randomization(((-3.5, 0.0),) * 4, harmonization=NO_HARMONIZATION),
        )
    with pytest.raises(ModelNotFoundError, match="blur"):
        TrainingPairs.from_pretrained(tmp_path, Randomization(harmonization=NO_HARMONIZATION))


def test_bad_sources_are_rejected_naming_the_value(tmp_path, sample_dir):
    from sen2naip_hub.errors import UnreadableFileError

    with pytest.raises(UnreadableFileError, match=r"no \*\.tif"):
        GeoTiffTiles(tmp_path)
    with pytest.raises(TrainingPairError, match="-4"):
        GeoTiffTiles(sample_dir / "naip", tile=-4)
    transform = PairTransform(
        TrainingPairs(BlurModel(), NoiseModel(), randomization=Randomization.published("none"))
    )
    with pytest.raises(TrainingPairError, match="'image'"):
        transform({"image": torch.rand(1, 4, 32, 32)})


def test_pairs_stay_in_eval_mode_inside_a_training_model(degradation):
    holder = torch.nn.Module()
    holder.pairs = TrainingPairs.from_degradation(degradation)
    holder.train()
    assert not any(module.training for module in holder.pairs.modules())


def test_from_pretrained_without_harmonization_needs_no_unet(reference_dir, crops):
    folder = reference_dir / "sen2naip-degradation"
    pairs = TrainingPairs.from_pretrained(folder, Randomization(harmonization=NO_HARMONIZATION))
    assert pairs.harmonization is None and pairs.blur.sigmas == BlurModel().sigmas
    assert pairs(crops[:1], step_generator(0, 0)).lr.shape == (1, 4, CROP // 4, CROP // 4)


# ---------------------------------------------------------------------------------------- the ranges' sources
def test_sigma_tolerance_is_where_the_blur_fits_error_curve_stays_within_the_noise(degradation, sample_dir):
    """Recompute :data:`SIGMA_TOLERANCE_HR_PX` as its docstring says: on the sample's 20 real 484-px
    tiles (two corners per date), the blur fit's MAE curve of δ_σ against the published δ, and each
    band's mean |noise| of the published table; the σ grid is narrowed to the ends' neighbourhood."""
    from dataset_builder.fit.blur_search import evaluate_grid
    from sen2naip_hub.io import read_raster

    tiles = []
    for path in sorted((sample_dir / "naip").glob("*.tif")):
        data = read_raster(path).data
        tiles += [data[:, :484, :484], data[:, -484:, -484:]]
    hr = torch.from_numpy(np.stack(tiles))
    lr = degradation.blur(hr).detach()
    noise = degradation.noise.sample(lr, torch.Generator().manual_seed(0)).abs().mean(dim=(0, 2, 3))
    grid = [round(2.2 + 0.05 * k, 2) for k in range(37)]  # 2.2 … 4.0
    shifts = torch.zeros(len(hr), 1, 1, 2, dtype=torch.float64)
    curve = evaluate_grid(hr, lr, shifts, grid, ("gaussian",), ("bilinear",), max_shift=0.0).mean(0)[:, 0, 0]
    for band, (below, above) in enumerate(SIGMA_TOLERANCE_HR_PX):
        inside = [s for s, mae in zip(grid, curve[band].tolist(), strict=True) if mae <= noise[band]]
        centre = degradation.blur.sigmas[band]
        assert grid[0] < min(inside) and max(inside) < grid[-1]
        assert abs(min(inside) - (centre + below)) < 0.051 and abs(max(inside) - (centre + above)) < 0.051, (
            band
        )


def test_shift_range_is_the_qa1_threshold():
    from dataset_builder.core.facts import QA1_MAX_RESIDUAL_LR_PX

    assert SHIFT_MAX_LR_PX == QA1_MAX_RESIDUAL_LR_PX


def test_train_sr_example_runs_and_reports_the_table(reference_dir, sample_dir):
    """A two-step run of examples/train_sr.py: it trains, evaluates held-out pairs and prints the table."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "train_sr.py"
    spec = importlib.util.spec_from_file_location("train_sr", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    argv = ["--models", str(reference_dir / "sen2naip-degradation"), "--sample-dir", str(sample_dir)]
    table = example.main(
        [*argv, "--steps", "2", "--batch", "2", "--patch", "64", "--eval-tiles", "3", "--workers", "0"]
    )
    rows = [line for line in table.splitlines() if line.startswith(("| randomised", "| published"))]
    assert len(rows) == 2
    for row in rows:
        cells = [cell.strip().removesuffix(" dB") for cell in row.strip("|").split("|")]
        assert cells[1] == "3" and all(math.isfinite(float(value)) for value in cells[2:])


def test_the_pair_modules_import_neither_the_builder_nor_the_unet_nor_rasterio():
    """The GPU machine has torch but no segmentation_models_pytorch, rasterio or datasets: pairs
    without harmonization must work there (the U-Net and rasterio are imported only when used)."""
    import subprocess
    import sys
    from pathlib import Path

    heavy = ("dataset_builder", "segmentation_models_pytorch", "rasterio", "datasets", "pyarrow")
    code = (
        "import sys, torch, sen2naip_hub.training as t, sen2naip_hub.training_data\n"
        "from sen2naip_hub.models import BlurModel, NoiseModel\n"
        "from sen2naip_hub.models.noise import published_noise_axes\n"
        "edges, values = published_noise_axes()\n"
        "table = torch.full((edges.numel() + 1, values.numel()), 1.0 / values.numel())\n"
        "r = t.Randomization(harmonization={'none': 1})\n"
        "p = t.TrainingPairs(BlurModel(), NoiseModel.from_table(table, edges, values), randomization=r)\n"
        "p(torch.rand(1, 4, 32, 32), t.step_generator(0, 0))\n"
        f"print([m for m in {heavy!r} if m in sys.modules])"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], check=True, cwd=root, capture_output=True, text=True)
    assert done.stdout.strip() == "[]"
