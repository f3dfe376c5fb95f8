"""`sen2naip evaluate` and `sen2naip evaluate-sr` on LR images made from the real sample NAIP.

The ranking test is the issue's acceptance test: for several hidden degradations (the library's
BlurModel / NoiseModel / Degradation with the published harmonization), the reference set is the true
degradation of real NAIP tiles, and a candidate made with the true degradation (another noise seed)
must get a lower ``distance`` than candidates with σ off by ±0.5 px, a wrong downsampler, no
harmonization or no noise. Small tiles and a briefly trained denoiser keep it fast on 2 CPU cores.
"""

from __future__ import annotations

import json
import math
from importlib.metadata import EntryPoint

import numpy as np
import pytest
import torch
import typer
from affine import Affine
from typer.testing import CliRunner

from dataset_builder.evaluate.cli import evaluate_command, evaluate_sr_command
from dataset_builder.evaluate.distance import weighted_distance
from dataset_builder.evaluate.noise import reference_denoiser
from dataset_builder.evaluate.run import evaluate_sets
from dataset_builder.evaluate.sources import ImageSet, read_folder, read_set
from sen2naip_hub.io import Raster, read_raster, write_raster
from sen2naip_hub.models import Degradation
from sen2naip_hub.models.blur import BlurModel
from sen2naip_hub.models.noise import NoiseModel
from sen2naip_hub.sensors import SENTINEL2

HR_TILE = 256  # → 64 × 64 LR px
#: (sigmas, downsampler, noise mode, a wrong downsampler): the hidden degradations.
CASES = [
    ((3.0, 2.9, 2.9, 3.4), "bilinear", "table", "area"),
    ((2.2, 2.0, 2.1, 2.6), "area", "table", "bilinear"),
    ((3.6, 3.5, 3.4, 4.0), "bicubic", "gaussian", "area"),
]


@pytest.fixture(scope="module")
def hr_tiles(sample_dir) -> torch.Tensor:
    """Four real NAIP tiles (4 dates) of 256 × 256 px, reflectance."""
    files = sorted((sample_dir / "naip").glob("*.tif"))[3:7]
    window = (slice(None), slice(100, 100 + HR_TILE), slice(200, 200 + HR_TILE))
    return torch.stack([torch.from_numpy(read_raster(path).data[window]) for path in files])


@pytest.fixture(scope="module")
def published(reference_dir) -> Degradation:
    return Degradation.from_pretrained(str(reference_dir / "sen2naip-degradation"))


@pytest.fixture(scope="module")
def harmonized(published, hr_tiles) -> torch.Tensor:
    """λ of the tiles with the published U-Net (global mode), computed once: it runs before δ and e and
    is the same for every candidate that harmonizes."""
    with torch.no_grad():
        return published.harmonization(hr_tiles, mode="global")


def _degrade(published, hr, sigmas, downsample, noise, seed=0) -> ImageSet:
    """δ (``sigmas``, ``downsample``) and e (``noise``) of ``hr`` through the library's Degradation,
    with the published parts; ``hr`` is already harmonized (or deliberately not)."""
    model = Degradation(
        harmonization=published.harmonization,
        blur=BlurModel(sigmas=sigmas, downsample=downsample),
        noise=published.noise if noise == "table" else NoiseModel(mode=noise),
    )
    with torch.no_grad():
        lr = model(hr, generator=torch.Generator().manual_seed(seed), harmonization="none").lr
    return ImageSet(list(lr.numpy()), [f"tile_{i}" for i in range(len(lr))], f"{downsample}-{sigmas}-{noise}")


def _write(folder, images, names=None):
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        name = names[i] if names else f"tile_{i}"
        write_raster(
            folder / f"{name}.tif", Raster(image, None, Affine.identity(), SENTINEL2.all_bands), cog=False
        )
    return folder


def test_distance_ranks_the_true_degradation_first(hr_tiles, harmonized, published):
    denoiser = None
    for sigmas, down, noise, wrong_down in CASES:
        reference = _degrade(published, harmonized, sigmas, down, noise, seed=1)
        if denoiser is None:  # one estimator (the CLI's default training) shared by both sides of all cases
            denoiser = reference_denoiser(reference.images)
        off = [tuple(s + d for s in sigmas) for d in (0.5, -0.5)]
        candidates = {
            "true": _degrade(published, harmonized, sigmas, down, noise, seed=2),
            "sigma+0.5": _degrade(published, harmonized, off[0], down, noise, seed=2),
            "sigma-0.5": _degrade(published, harmonized, off[1], down, noise, seed=2),
            "wrong downsampler": _degrade(published, harmonized, sigmas, wrong_down, noise, seed=2),
            "no harmonization": _degrade(published, hr_tiles, sigmas, down, noise, seed=2),
            "no noise": _degrade(published, harmonized, sigmas, down, "none", seed=2),
        }
        scores = {
            k: evaluate_sets(c, reference, denoiser=denoiser)["distance"] for k, c in candidates.items()
        }
        print(down, {k: round(v, 4) for k, v in scores.items()})
        assert min(scores, key=scores.get) == "true", (sigmas, down, scores)


def test_identical_sets_are_at_distance_zero_and_the_json_and_png_are_written(
    tmp_path, harmonized, published
):
    lr = _degrade(published, harmonized[:2], CASES[0][0], "bilinear", "table")
    reference = _write(tmp_path / "ref", lr.images)
    candidate = _write(tmp_path / "cand", [im + 0.01 for im in lr.images])  # brighter: a real distance
    app = typer.Typer()
    app.command()(evaluate_command)
    runner = CliRunner()
    out_json, out_png = tmp_path / "eval.json", tmp_path / "eval.png"
    args = [str(candidate), str(reference), "--json", str(out_json), "--plot", str(out_png)]
    result = runner.invoke(app, [*args, "--denoiser-steps", "5"])
    assert result.exit_code == 0, result.output
    report = json.loads(out_json.read_text())
    assert report["distance"] > 0.1 and report["paired"]["pairs"] == 2
    assert report["terms"]["wasserstein"] > 0.1 and set(report["terms_used"]) == set(report["terms"])
    assert abs(report["paired"]["l1"][0] - 0.01) < 2e-4  # the brightening, through uint16 rounding
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    same = evaluate_sets(read_folder(reference), read_folder(reference), denoiser_steps=5)
    assert same["distance"] == 0.0 and all(v == 0.0 for v in same["terms"].values())
    assert same["paired"]["shift_mean_abs_px"] < 0.01
    assert "distance" in result.output


def test_weighted_distance_leaves_out_unmeasurable_terms():
    distance, used = weighted_distance({"a": 1.0, "b": math.nan, "c": 3.0}, {"a": 1.0, "b": 5.0, "c": 1.0})
    assert distance == 2.0 and used == ["a", "c"]


@pytest.fixture
def cli_main(monkeypatch):
    """`sen2naip_hub.cli.main` with this branch's entry points (the venv's refresh only on reinstall)."""
    import sen2naip_hub.cli as cli

    eps = [
        EntryPoint("evaluate", "dataset_builder.evaluate.cli:evaluate_command", "sen2naip.commands"),
        EntryPoint("evaluate-sr", "dataset_builder.evaluate.cli:evaluate_sr_command", "sen2naip.commands"),
    ]
    monkeypatch.setattr(cli, "entry_points", lambda group: eps)
    return cli.main


def test_bad_inputs_get_one_line_and_a_nonzero_exit(tmp_path, capsys, cli_main, reference_dir):
    good = _write(tmp_path / "good", [np.full((4, 40, 40), 0.1, np.float32)])
    (tmp_path / "empty").mkdir()
    three = tmp_path / "three"
    three.mkdir()
    import rasterio

    profile = {"count": 3, "height": 8, "width": 8, "dtype": "uint16", "transform": Affine.scale(10, -10)}
    with rasterio.open(three / "x.tif", "w", driver="GTiff", **profile) as dst:
        dst.write(np.ones((3, 8, 8), np.uint16))
    small = _write(tmp_path / "small", [np.full((4, 32, 32), 0.1, np.float32)])
    expected = {
        "empty": (["evaluate", str(tmp_path / "empty"), str(good)], "empty folder"),
        "bands": (["evaluate", str(three), str(good)], "expected 4 bands"),
        "sizes": (["evaluate", str(small), str(good)], "paired files must have the same size"),
        "sr sizes": (["evaluate-sr", str(small), str(good)], "expected SR of 160×160 px"),
    }
    for key, (argv, phrase) in expected.items():
        assert (
            cli_main(
                [*argv, "--model", str(reference_dir / "sen2naip-degradation")] if key == "sr sizes" else argv
            )
            == 1
        ), key
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and phrase in err, (key, err)


def test_evaluate_sr_is_consistent_for_the_true_hr_and_sees_a_shift(tmp_path, hr_tiles, reference_dir):
    model = Degradation.from_pretrained(str(reference_dir / "sen2naip-degradation"))
    hr = hr_tiles[:2, :, :128, :128]
    with torch.no_grad():
        lr = model(hr, harmonization="none", noise=False).lr.numpy()
    sr_good = _write(tmp_path / "sr", list(hr.numpy()))
    sr_shifted = _write(tmp_path / "sr_shifted", list(torch.roll(hr, 4, dims=-1).numpy()))
    lr_dir = _write(tmp_path / "lr", list(lr))
    hr_dir = _write(tmp_path / "hr", list(np.clip(hr.numpy() + 0.002, 0, 1)))
    app = typer.Typer()
    app.command()(evaluate_sr_command)
    good_json, shifted_json, png = tmp_path / "good.json", tmp_path / "shifted.json", tmp_path / "sr.png"
    model_arg = ["--model", str(reference_dir / "sen2naip-degradation")]
    args = [str(sr_good), str(lr_dir), "--hr", str(hr_dir), "--json", str(good_json), "--plot", str(png)]
    result = CliRunner().invoke(app, [*args, *model_arg])
    assert result.exit_code == 0, result.output
    good = json.loads(good_json.read_text())
    assert max(good["l1"]) < 2e-4 and good["shift_mean_abs_px"] < 0.05 and good["spectral_angle_deg"] < 0.1
    assert all(40 < p < 60 for p in good["psnr"]) and min(good["ssim"]) > 0.9  # HR + 0.002 reflectance
    assert png.read_bytes()[:4] == b"\x89PNG"
    result = CliRunner().invoke(app, [str(sr_shifted), str(lr_dir), "--json", str(shifted_json), *model_arg])
    shifted = json.loads(shifted_json.read_text())
    assert result.exit_code == 0 and abs(shifted["shift_mean_abs_px"] - 1.0) < 0.1  # 4 HR px = 1 LR px
    assert min(shifted["l1"]) > 10 * max(good["l1"])


def test_a_dataset_split_side_reads_its_lr_column_and_pairs_by_roi_id(tmp_path, sample_dir):
    """A split written by the builder's writer against GeoTIFFs of the same LR: distance exactly 0."""
    import datetime as dt

    from conftest import block_mean_record

    from dataset_builder.core.splits import RoiSplitter
    from dataset_builder.core.tiling import iter_tiles
    from dataset_builder.write.repo import write_dataset

    tiles = list(iter_tiles(sorted((sample_dir / "naip").glob("*.tif"))[:1], 128))[:6]
    records = [block_mean_record(tile, dt.date(2020, 1, 1)) for tile in tiles]
    write_dataset({"synthetic": records}, tmp_path / "ds", splitter=RoiSplitter((1.0, 0.0, 0.0)))
    lr_images = [r.lr.astype(np.float32) / 10000 for r in records]
    folder = _write(tmp_path / "lr", lr_images, [r.roi_id for r in records])
    split = read_set(str(tmp_path / "ds"), "synthetic", "train")
    assert len(split) == len(records)
    result = evaluate_sets(split, read_folder(folder), denoiser_steps=2)
    assert result["paired"]["pairs"] == len(records) and result["distance"] == 0.0
    assert max(result["paired"]["l1"]) == 0.0


def test_a_denoiser_saved_like_fit_noise_loads_and_measures_the_same(tmp_path):
    import safetensors.torch

    from dataset_builder.evaluate.noise import load_denoiser, noise_levels
    from dataset_builder.evaluate.sources import EvaluationError

    images = [np.random.default_rng(i).uniform(0.05, 0.3, (4, 40, 40)).astype(np.float32) for i in range(2)]
    trained = reference_denoiser(images, steps=2)
    state = {k: v.detach().contiguous() for k, v in trained.state_dict().items()}  # as save_noise_fit does
    safetensors.torch.save_file(state, str(tmp_path / "denoiser.safetensors"))
    loaded = load_denoiser(tmp_path)
    assert noise_levels(images, loaded)["shared_std"] == noise_levels(images, trained)["shared_std"]
    safetensors.torch.save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(EvaluationError, match=r"other\.safetensors: not a BlindDenoiser"):
        load_denoiser(tmp_path / "other.safetensors")
