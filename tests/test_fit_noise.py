"""`sen2naip fit noise`: the blind denoiser's mechanics on the real Sentinel-2 sample, and the table.

What this shows on a CPU budget (a few hundred steps of a small network): the noise-level estimator
recovers a known synthetic noise level on a held-out scene better than the best fixed guess, the
denoiser removes part of that noise, and the table learned from real S2 has the published axes and
rows that are probability distributions. The measured std ratio to the published table is written
to ``noise_fit.json`` and reported, not asserted.
"""

from __future__ import annotations

import json

import torch
from conftest import SAMPLE_DIR

from dataset_builder.fit.denoiser import DenoiserTraining
from dataset_builder.fit.noise import (
    NoiseTable,
    accumulate_noise_table,
    fit_noise,
    load_s2_scenes,
)
from sen2naip_hub.models.noise import NoiseModel, published_noise_axes

SAMPLE = SAMPLE_DIR
#: A tiny network and budget for CPU tests (the GPU run uses the defaults: 32/48 channels, depth 8).
TINY = DenoiserTraining(
    steps=300, batch_size=8, patch=40, lr=3e-3, seed=0, estimator_channels=16, denoiser_channels=16, depth=4
)


def test_sample_scenes_are_b04_b03_b02_b08_reflectance():
    scenes = load_s2_scenes(SAMPLE)
    assert [tuple(s.shape) for s in scenes] == [(4, 300, 300)] + [(4, 101, 100)] * 3
    for scene in scenes:
        assert float(scene.min()) > 0 and float(scene.max()) < 0.6
        # vegetation: NIR (B08, last) brighter than red (B04, first) on average
        assert float(scene[3].mean()) > float(scene[0].mean())


def test_fit_noise_on_real_s2(tmp_path):
    scenes = load_s2_scenes(SAMPLE)
    repo, summary = fit_noise(scenes, tmp_path / "noise", TINY, holdout=1)
    check = summary["estimator_check"]  # on the held-out scene (REFERENCE_SCENES date 4)
    assert check["estimator_mae"] < check["fixed_guess_mae"]
    assert check["denoised_mae"] < check["noisy_mae"]

    model = NoiseModel.from_pretrained(repo)
    edges, values = published_noise_axes()
    assert model.table.shape == (101, 101)
    assert torch.equal(model.edges, edges) and torch.equal(model.values, values)
    assert torch.allclose(model.table.sum(-1), torch.ones(101, dtype=torch.float64))
    assert (repo / "noise_std.png").stat().st_size > 10_000 and (repo / "denoiser.safetensors").is_file()
    saved = json.loads((repo / "noise_fit.json").read_text())
    assert saved["populated_bins"] and saved["ratio_median"] is not None and saved["ratio_median"] > 0
    print(f"measured/published noise std, median over bins: {saved['ratio_median']:.3f}")


class _Identity(torch.nn.Module):
    """A 'denoiser' that returns the input minus a known constant: residual = that constant."""

    def __init__(self, offset: float) -> None:
        super().__init__()
        self.offset = offset
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return x - self.offset, torch.zeros_like(x)


def test_table_accumulation_bins_like_the_published_sampler():
    scene = torch.full((4, 40, 40), 0.1234)
    table = accumulate_noise_table(_Identity(0.0004), [scene], border=4)
    assert isinstance(table, NoiseTable) and table.counts.shape == (4, 101, 101)
    edges, values = published_noise_axes()
    row = int(torch.bucketize(torch.tensor(0.1234 - 0.0004, dtype=torch.float64), edges, right=True))
    col = int(torch.argmin((values - 0.0004).abs()))
    assert table.counts[:, row, col].tolist() == [32 * 32] * 4 and table.counts.sum() == 4 * 32 * 32
    shared = table.probabilities(per_band=False)
    assert torch.allclose(shared.sum(-1), torch.ones(101, dtype=torch.float64))
    assert torch.equal(shared[0], shared[row])  # empty rows copy the nearest populated one
    assert table.to_model(per_band=True).table.shape == (4, 101, 101)
