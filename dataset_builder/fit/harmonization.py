"""λ from data: train the harmonization U-Net so that δ(U-Net(HR)) matches the real LR.

The loss is taken at LR resolution, through a fixed δ (:class:`BlurModel`, fitted or published):
``L1(δ(U(hr)), lr) + w · mean spectral angle(δ(U(hr)), lr)`` (radians). The U-Net output is what
:class:`HarmonizationModel` uses as its histogram-matching target, so the trained repo is used exactly
like the published one.

Training is reproducible and resumable: the batch of step ``k`` depends only on ``(seed, k)`` (a
per-epoch permutation from ``seed + epoch``, crops from ``seed, k``) and the global RNG is reseeded at
every step (dropout / drop-connect), so a run restarted from its last checkpoint gives the same
weights as an uninterrupted one. A checkpoint is a folder ``step-NNNNNNN/`` holding
``model.safetensors``, ``optimizer.safetensors`` (Adam moments, flattened) and ``trainer_state.json``
(step, validation history, early-stopping counters, optimizer hyper-parameters), written to a
temporary folder and renamed, with ``LATEST`` naming it (replaced atomically). The best validation
weights are kept in ``best/``. Early stopping: stop after ``patience`` evaluations without a
validation improvement; the returned model holds the best weights.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import safetensors.torch
import torch

from dataset_builder.fit.pairs import Pairs
from sen2naip_hub.errors import Sen2NaipError
from sen2naip_hub.files import atomic_dir, atomic_file, write_json
from sen2naip_hub.metrics import spectral_angle
from sen2naip_hub.models.blur import BlurModel
from sen2naip_hub.models.harmonization import HarmonizationModel

__all__ = [
    "HarmonizationTraining",
    "TrainingError",
    "lr_loss",
    "perturb_weights",
    "save_harmonization",
    "train_harmonization",
]

#: Weight of the spectral-angle term (radians) beside L1 (reflectance): an angle of 0.05 rad (~3°)
#: then weighs like an L1 error of 0.005, the order of the residual LR errors of a good fit.
DEFAULT_SAM_WEIGHT: float = 0.1
#: Added to vector norms in the spectral angle (reflectance), so dark or zero pixels stay finite.
_SAM_EPS: float = 1e-6
#: Cosine clamp of the spectral-angle loss: keeps acos's gradient finite for parallel vectors.
SAM_CLAMP_MARGIN: float = 1e-7
_LATEST = "LATEST"


class TrainingError(Sen2NaipError, ValueError):
    """Empty splits, tiles the U-Net cannot take, or a checkpoint that does not match the run."""


@dataclass
class HarmonizationTraining:
    """Settings of :func:`train_harmonization` (every random draw derives from ``seed``)."""

    steps: int = 2000
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 0.0
    sam_weight: float = DEFAULT_SAM_WEIGHT
    eval_every: int = 100
    patience: int = 5
    crop: int | None = None  # HR pixels, multiple of 32 and of the scale; None = whole tiles
    freeze_batchnorm: bool = True  # keep BatchNorm statistics fixed (small batches, fine-tuning)
    keep_checkpoints: int = 2
    seed: int = 0
    device: str = "cpu"


@dataclass
class TrainingState:
    step: int = 0
    best_val: float = math.inf
    best_step: int = 0
    bad_evals: int = 0
    stopped_early: bool = False
    history: list[dict] = field(default_factory=list)


# ----------------------------------------------------------------------------- losses
def lr_loss(pred: torch.Tensor, target: torch.Tensor, sam_weight: float = DEFAULT_SAM_WEIGHT) -> torch.Tensor:
    """L1 + ``sam_weight`` × mean spectral angle, at LR resolution."""
    angle = spectral_angle(pred, target, eps=_SAM_EPS, margin=SAM_CLAMP_MARGIN)
    return (pred - target).abs().mean() + sam_weight * angle.mean()


# ----------------------------------------------------------------------------- batches
def _batch_indices(n: int, step: int, batch: int, seed: int) -> torch.Tensor:
    """Indices of step ``step``: consecutive slices of a per-epoch permutation (seed + epoch)."""
    per_epoch = max(n // batch, 1)
    epoch, slot = divmod(step, per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
    picks = order[slot * batch : slot * batch + batch]
    return picks if picks.numel() else order[:batch]


def _crop(hr: torch.Tensor, lr: torch.Tensor, crop: int | None, scale: int, seed: int, step: int):
    if crop is None or crop >= hr.shape[-1]:
        return hr, lr
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    ny, nx = (hr.shape[-2] - crop) // scale, (hr.shape[-1] - crop) // scale
    y = int(torch.randint(ny + 1, (1,), generator=gen)) * scale
    x = int(torch.randint(nx + 1, (1,), generator=gen)) * scale
    c = crop // scale
    return hr[..., y : y + crop, x : x + crop], lr[
        ..., y // scale : y // scale + c, x // scale : x // scale + c
    ]


def _check(train: Pairs, val: Pairs, settings: HarmonizationTraining, scale: int) -> None:
    if len(train) == 0 or len(val) == 0:
        raise TrainingError(f"need training and validation pairs, got {len(train)} and {len(val)}")
    crop = settings.crop
    if crop is not None and (crop % 32 or crop % scale):
        raise TrainingError(f"crop must be a multiple of 32 and of {scale}, got {crop}")


# ----------------------------------------------------------------------------- checkpoints
def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    state = optimizer.state_dict()
    tensors = {
        f"state.{pid}.{name}": torch.as_tensor(value).detach().cpu().contiguous()
        for pid, slots in state["state"].items()
        for name, value in slots.items()
    }
    return tensors, state["param_groups"]


def _load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def save_checkpoint(folder: Path, model, optimizer, state: TrainingState, keep: int) -> Path:
    """Write ``step-NNNNNNN/`` atomically, point ``LATEST`` at it, and prune older ones."""
    name = f"step-{state.step:07d}"
    with atomic_dir(folder / name) as tmp:
        safetensors.torch.save_file(_model_state(model), str(tmp / "model.safetensors"))
        tensors, groups = _optimizer_tensors(optimizer)
        safetensors.torch.save_file(tensors, str(tmp / "optimizer.safetensors"))
        write_json(tmp / "trainer_state.json", {"state": asdict(state), "param_groups": groups})
    with atomic_file(folder / _LATEST) as tmp:
        tmp.write_text(name + "\n")
    for old in sorted(folder.glob("step-*"))[:-keep]:
        for file in old.iterdir():
            file.unlink()
        old.rmdir()
    return folder / name


def load_checkpoint(folder: Path, model, optimizer, device) -> TrainingState | None:
    """Restore the checkpoint ``LATEST`` names (``None`` when there is none)."""
    latest = folder / _LATEST
    if not latest.is_file():
        return None
    ckpt = folder / latest.read_text().strip()
    if not (ckpt / "trainer_state.json").is_file():
        raise TrainingError(f"{latest} names {ckpt.name}, which is missing or incomplete")
    model.load_state_dict(safetensors.torch.load_file(str(ckpt / "model.safetensors"), device=str(device)))
    meta = json.loads((ckpt / "trainer_state.json").read_text())
    tensors = safetensors.torch.load_file(str(ckpt / "optimizer.safetensors"), device=str(device))
    _load_optimizer(optimizer, tensors, meta["param_groups"])
    return TrainingState(**meta["state"])


# ----------------------------------------------------------------------------- training
def perturb_weights(model: HarmonizationModel, relative_std: float, seed: int = 0) -> HarmonizationModel:
    """Add ``relative_std`` × (each tensor's std) Gaussian noise to every U-Net weight (tests, ablations)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.unet.parameters():
            scale = param.std() if param.numel() > 1 else param.abs()
            param.add_(torch.randn(param.shape, generator=gen) * relative_std * scale)
    return model


def _set_mode(model: HarmonizationModel, freeze_batchnorm: bool) -> None:
    model.train()
    if freeze_batchnorm:
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()


@torch.no_grad()
def validation_loss(model, blur, pairs: Pairs, settings: HarmonizationTraining, batch: int = 16) -> float:
    """Mean :func:`lr_loss` of δ(U-Net(hr)) over ``pairs`` (model in eval mode)."""
    model.eval()
    device = torch.device(settings.device)
    total = 0.0
    for start in range(0, len(pairs), batch):
        hr = pairs.hr[start : start + batch].to(device)
        lr = pairs.lr[start : start + batch].to(device)
        pred = blur(model.predict_target(hr))
        total += float(lr_loss(pred, lr, settings.sam_weight)) * hr.shape[0]
    return total / len(pairs)


def train_harmonization(
    train: Pairs,
    val: Pairs,
    blur: BlurModel,
    settings: HarmonizationTraining | None = None,
    checkpoint_dir: str | Path | None = None,
    init: HarmonizationModel | None = None,
    progress: bool = False,
    stop_after: int | None = None,
) -> tuple[HarmonizationModel, TrainingState]:
    """Train (or resume) the U-Net; returns the model holding the best validation weights and the state.

    ``init``: start from these weights (e.g. the published model, to fine-tune); otherwise a random
    init seeded by ``settings.seed``. ``checkpoint_dir``: where checkpoints go and resume from (a
    new run with an existing ``LATEST`` continues it). ``stop_after``: end after this many steps of
    this call (simulates an interruption; used by the resume test).
    """
    settings = settings or HarmonizationTraining()
    _check(train, val, settings, blur.scale)
    device = torch.device(settings.device)
    torch.manual_seed(settings.seed)
    model = HarmonizationModel(mode="global")
    if init is not None:
        model.unet.load_state_dict(init.unet.state_dict())
    model.to(device)
    blur = blur.to(device).eval()
    for p in blur.parameters():
        p.requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    state = (load_checkpoint(folder, model, optimizer, device) if folder else None) or TrainingState()
    if folder and state.step == 0 and state.best_val == math.inf:
        folder.mkdir(parents=True, exist_ok=True)
    end = settings.steps if stop_after is None else min(settings.steps, state.step + stop_after)
    bar = _progress_bar(progress, state.step, settings.steps)
    while state.step < end and not state.stopped_early:
        _train_step(model, blur, optimizer, train, settings, state.step)
        state.step += 1
        if bar is not None:
            bar.update(1)
        if state.step % settings.eval_every == 0 or state.step == settings.steps:
            _evaluate(model, blur, val, settings, state, folder)
            if folder is not None:
                save_checkpoint(folder, model, optimizer, state, settings.keep_checkpoints)
    if bar is not None:
        bar.close()
    _restore_best(model, folder, state)
    return model.eval(), state


def _progress_bar(enabled: bool, start: int, total: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc="harmonization", unit="step")


def _train_step(model, blur, optimizer, train: Pairs, settings: HarmonizationTraining, step: int) -> float:
    torch.manual_seed(settings.seed * 1_000_003 + step)  # dropout / drop-connect: a function of the step
    _set_mode(model, settings.freeze_batchnorm)
    index = _batch_indices(len(train), step, settings.batch_size, settings.seed)
    hr, lr = _crop(train.hr[index], train.lr[index], settings.crop, blur.scale, settings.seed, step)
    device = torch.device(settings.device)
    loss = lr_loss(blur(model.predict_target(hr.to(device))), lr.to(device), settings.sam_weight)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def _evaluate(model, blur, val: Pairs, settings, state: TrainingState, folder: Path | None) -> None:
    loss = validation_loss(model, blur, val, settings)
    state.history.append({"step": state.step, "val_loss": loss})
    if loss < state.best_val:
        state.best_val, state.best_step, state.bad_evals = loss, state.step, 0
        if folder is not None:
            with atomic_dir(folder / "best") as tmp:
                safetensors.torch.save_file(_model_state(model), str(tmp / "model.safetensors"))
        else:
            state.__dict__["_best_weights"] = _model_state(model)
    else:
        state.bad_evals += 1
        state.stopped_early = state.bad_evals >= settings.patience


def _restore_best(model, folder: Path | None, state: TrainingState) -> None:
    if folder is not None and (folder / "best" / "model.safetensors").is_file():
        device = next(model.parameters()).device
        model.load_state_dict(
            safetensors.torch.load_file(str(folder / "best" / "model.safetensors"), str(device))
        )
    elif "_best_weights" in state.__dict__:
        model.load_state_dict(state.__dict__.pop("_best_weights"))


def save_harmonization(
    model: HarmonizationModel, out: str | Path, state: TrainingState | None = None
) -> Path:
    """Write the :class:`HarmonizationModel` repo (with ``training.json`` when ``state`` is given)."""
    out = Path(out)
    with atomic_dir(out) as tmp:
        model.card_source = "Trained by `sen2naip fit harmonization` (loss at LR: L1 + spectral angle)."
        model.cpu().save_pretrained(tmp)
        if state is not None:
            record = {k: v for k, v in asdict(state).items() if not k.startswith("_")}
            write_json(tmp / "training.json", record)
    return out
