"""`sen2naip fit harmonization`: training through δ at LR resolution, resumable, and better than the
baselines on held-out ROIs.

Hidden truth: the published degradation (U-Net + global histogram matching, published δ, no noise)
applied to real NAIP tiles. The CPU test starts from the published U-Net with every weight perturbed
(+15 % of each tensor's std as Gaussian noise; its LR is then worse than a global histogram match) and
trains 20 steps on 64-px crops. So it shows that the loss, the data path and the optimisation recover a
damaged model, not that a random init learns SEN2NAIP's harmonization in 20 CPU steps (that is the
GPU run's job).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SAMPLE_DIR

from dataset_builder.fit.harmonization import (
    HarmonizationTraining,
    perturb_weights,
    save_harmonization,
    train_harmonization,
)
from dataset_builder.fit.pairs import Pairs, split_by_roi
from dataset_builder.fit.report import evaluate, standard_baselines
from sen2naip_hub.models.harmonization import HarmonizationModel

SAMPLE = SAMPLE_DIR
TILE, DATES, GRID = 128, 3, (3, 4)
PERTURBATION, SEED = 0.15, 0


@pytest.fixture(scope="module")
def truth():
    from sen2naip_hub.convert import load_reference_parts

    return load_reference_parts()


@pytest.fixture(scope="module")
def pairs(truth) -> Pairs:
    from sen2naip_hub.io import read_raster

    hrs, ids = [], []
    for path in sorted((SAMPLE / "naip").glob("*.tif"))[:DATES]:
        data = read_raster(path).data
        for r in range(GRID[0]):
            for c in range(GRID[1]):
                y, x = 40 + r * TILE, 40 + c * TILE
                hrs.append(data[:, y : y + TILE, x : x + TILE])
                ids.append(f"r{r}c{c}")  # the ROI is the place; its dates stay on one side of the split
    hr = torch.from_numpy(np.stack(hrs))
    with torch.no_grad():
        lr = truth["blur"](truth["harmonization"](hr))
    return Pairs(hr, lr, ids, source="real NAIP through the published degradation (simulated LR)")


def _degrade(blur, model):
    return lambda hr: blur(model(hr))


def test_trained_model_beats_identity_and_histogram_match(pairs, truth, tmp_path):
    train_idx, val_idx = split_by_roi(pairs.roi_ids, 0.4)
    train, val = pairs.subset(train_idx), pairs.subset(val_idx)
    assert not set(train.roi_ids) & set(val.roi_ids)
    start = perturb_weights(HarmonizationModel(), 0.0, SEED)
    start.unet.load_state_dict(truth["harmonization"].unet.state_dict())
    start = perturb_weights(start, PERTURBATION, SEED)
    settings = HarmonizationTraining(steps=20, batch_size=4, lr=1e-3, eval_every=5, patience=10, crop=64)
    model, state = train_harmonization(train, val, truth["blur"], settings, tmp_path / "ckpt", init=start)

    blur = truth["blur"]
    results = evaluate(
        {
            "trained": _degrade(blur, model),
            "start": _degrade(blur, start.eval()),
            **standard_baselines(train.hr, train.lr, blur),
        },
        val.hr,
        val.lr,
    )
    print({k: (round(v["mae"], 5), round(v["sam_deg"], 3)) for k, v in results.items()})
    for baseline in ("identity", "histogram match", "start"):
        assert results["trained"]["mae"] < results[baseline]["mae"], baseline
        assert results["trained"]["sam_deg"] < results[baseline]["sam_deg"], baseline
    assert state.best_val < state.history[0]["val_loss"]

    repo = save_harmonization(model, tmp_path / "harmonization", state)
    loaded = HarmonizationModel.from_pretrained(repo)
    with torch.no_grad():
        assert torch.allclose(loaded(val.hr[:2]), model(val.hr[:2]), atol=1e-6)
    assert (repo / "training.json").is_file()


def test_resume_from_checkpoint_equals_uninterrupted(pairs, truth, tmp_path):
    train, val = pairs.subset(list(range(0, 8))), pairs.subset([30, 31])
    settings = HarmonizationTraining(
        steps=4, batch_size=2, lr=1e-3, eval_every=2, patience=5, crop=64, seed=3
    )
    blur = truth["blur"]
    straight, _ = train_harmonization(train, val, blur, settings, tmp_path / "a")
    train_harmonization(train, val, blur, settings, tmp_path / "b", stop_after=2)  # "interrupted"
    assert (tmp_path / "b" / "LATEST").read_text().strip() == "step-0000002"
    resumed, state = train_harmonization(train, val, blur, settings, tmp_path / "b")
    assert state.step == 4 and [h["step"] for h in state.history] == [2, 4]
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), name
