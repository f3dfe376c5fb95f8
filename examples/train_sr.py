"""Train a small ×4 super-resolution network on SEN2NAIP pairs made on the fly, then compare it with
bicubic upsampling on held-out pairs it never trained on (PSNR and SSIM).

HR comes from the real NAIP of ``../shared/sample`` (10 dates of one place, 5 m): training crops from
the western part of the first 8 dates, held-out tiles from the eastern part (beyond a 64-px gap) of
the last 2 dates, so no held-out pixel, place or date was seen in training. Training pairs are made
per batch inside a ``DataLoader`` (``PairTransform`` as its ``collate_fn``, seeded per step and
worker); held-out pairs with the same randomisation and a seed of their own. With ``--harmonization
mixed`` the table also splits the held-out pairs by their drawn mode (the target is then the
harmonized HR, so LR and HR share Sentinel-2 radiometry, as in the published pipeline).

    python examples/train_sr.py                        # CPU, a few minutes (published weights converted)
    python examples/train_sr.py --models models/sen2naip-degradation --steps 3000 --device cuda \
        --harmonization mixed --precision bf16

Needs the published weights: ``--models`` (a ``sen2naip convert-reference`` output's
``sen2naip-degradation``), else they are converted into a temporary folder (opensr-degradation).
SSIM is scikit-image's ``structural_similarity`` (Wang et al. 2004, 7×7 window), per image, all bands.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sen2naip_hub.io import read_raster  # noqa: E402
from sen2naip_hub.training import HARMONIZATION_CHOICES, Randomization, TrainingPairs, step_generator  # noqa: E402
from sen2naip_hub.training_data import PairTransform  # noqa: E402

TRAIN_DATES = 8  # the first 8 of the sample's 10 dates train; the last 2 are held out
TRAIN_COLUMNS = 560  # training crops come from HR columns [0, 560), held-out tiles from [624, ...)
HELD_OUT_GAP = 64  # HR px between the two regions
HELD_OUT_SEED = 10_000  # seed of the held-out pairs' draws (the training steps use seed, 0…steps-1)
#: ``--harmonization``: odds of the harmonization modes. ``none`` keeps the run light on a CPU (the
#: U-Net takes ~0.25 s per 128² tile on 2 cores); ``mixed`` is the library's default randomisation.
HARMONIZATION_ODDS: dict[str, dict[str, float]] = {
    "none": {"none": 1.0},
    "mixed": {"global": 1.0, "local": 1.0, "none": 1.0},
    "global": {"global": 1.0},
}


class RandomCrops(torch.utils.data.Dataset):
    """``length`` HR crops ``(4, patch, patch)`` at positions drawn from ``seed`` (one per index)."""

    def __init__(self, images: list[torch.Tensor], patch: int, length: int, seed: int) -> None:
        self.images, self.patch, self.length, self.seed = images, patch, length, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        image = self.images[int(torch.randint(len(self.images), (1,), generator=gen))]
        top = int(torch.randint(image.shape[1] - self.patch + 1, (1,), generator=gen))
        left = int(torch.randint(image.shape[2] - self.patch + 1, (1,), generator=gen))
        return image[:, top : top + self.patch, left : left + self.patch]


class SmallSR(nn.Module):
    """×4 SR: bicubic upsampling + a residual predicted by a few residual blocks and a pixel shuffle."""

    def __init__(self, bands: int = 4, width: int = 48, blocks: int = 4, scale: int = 4) -> None:
        super().__init__()
        self.scale = scale
        self.head = nn.Conv2d(bands, width, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1)
            )
            for _ in range(blocks)
        )
        self.tail = nn.Sequential(nn.Conv2d(width, bands * scale**2, 3, padding=1), nn.PixelShuffle(scale))

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        features = self.head(lr)
        for block in self.blocks:
            features = features + block(features)
        return bicubic(lr, self.scale) + self.tail(features)


def bicubic(lr: torch.Tensor, scale: int = 4) -> torch.Tensor:
    return F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False)


def load_sample(sample_dir: Path) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(training regions, held-out regions) of the sample's NAIP, float reflectance ``(4, H, W)``."""
    paths = sorted((sample_dir / "naip").glob("*.tif"))
    if len(paths) <= TRAIN_DATES:
        raise SystemExit(f"expected more than {TRAIN_DATES} NAIP GeoTIFFs in {sample_dir / 'naip'}")
    images = [torch.from_numpy(read_raster(path).data) for path in paths]
    train = [image[:, :, :TRAIN_COLUMNS] for image in images[:TRAIN_DATES]]
    held_out = [image[:, :, TRAIN_COLUMNS + HELD_OUT_GAP :] for image in images[TRAIN_DATES:]]
    return train, held_out


def tiles_of(images: list[torch.Tensor], patch: int, limit: int | None) -> torch.Tensor:
    """Non-overlapping ``patch``² tiles of each image, row by row."""
    tiles = [
        image[:, top : top + patch, left : left + patch]
        for image in images
        for top in range(0, image.shape[1] - patch + 1, patch)
        for left in range(0, image.shape[2] - patch + 1, patch)
    ]
    return torch.stack(tiles[:limit])


def psnr(pred: np.ndarray, target: np.ndarray) -> float:
    """PSNR (dB) of reflectance in [0, 1] over all bands of one image."""
    return float(10 * np.log10(1.0 / np.mean((pred - target) ** 2)))


def scores(pred: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """``(N, 2)``: PSNR and SSIM of each image (prediction clipped to [0, 1])."""
    from skimage.metrics import structural_similarity

    out = []
    for p, t in zip(pred.clamp(0, 1).double().cpu().numpy(), target.double().cpu().numpy(), strict=True):
        out.append((psnr(p, t), structural_similarity(p, t, channel_axis=0, data_range=1.0)))
    return np.array(out)


def train(args, pairs: TrainingPairs, train_images: list[torch.Tensor], device: torch.device) -> SmallSR:
    torch.manual_seed(args.seed)  # the network's initial weights
    model = SmallSR().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=max(args.steps, 2))
    crops = RandomCrops(train_images, args.patch, args.steps * args.batch, args.seed)
    loader = torch.utils.data.DataLoader(
        crops,
        batch_size=args.batch,
        num_workers=args.workers,
        collate_fn=PairTransform(pairs, seed=args.seed),
    )
    start, running = time.perf_counter(), []
    for step, batch in enumerate(loader):
        lr, hr = batch["lr"].to(device), batch["hr"].to(device)
        loss = F.l1_loss(model(lr), hr)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        running.append(loss.item())
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            elapsed = time.perf_counter() - start
            print(f"step {step + 1:5d}/{args.steps}  L1 {np.mean(running):.5f}  {elapsed:6.1f} s")
            running = []
    return model


def evaluate(args, pairs: TrainingPairs, model: SmallSR, held_out: list[torch.Tensor], device) -> str:
    """The table: bicubic vs the network on held-out pairs, randomised as in training and with the
    published degradation (σ fixed, no shift, full noise), by harmonization mode when several."""
    hr = tiles_of(held_out, args.patch, args.eval_tiles)
    published_mode = "none" if args.harmonization == "none" else "global"
    sets = {
        "randomised as in training": pairs,
        f"published degradation ({published_mode})": TrainingPairs(
            pairs.blur, pairs.noise, pairs.harmonization, Randomization.published(published_mode)
        ),
    }
    lines = [
        f"held-out pairs: {len(hr)} HR tiles of {args.patch}² (LR {args.patch // 4}²), "
        f"network trained {args.steps} steps × {args.batch} pairs",
        "",
        "| held-out pairs | n | PSNR bicubic | PSNR network | SSIM bicubic | SSIM network |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    model.eval()
    for set_name, maker in sets.items():
        pair = maker(hr, step_generator(HELD_OUT_SEED, 0))
        with torch.no_grad():
            predicted = torch.cat([model(lr.to(device)).cpu() for lr in pair.lr.split(args.batch)])
        bicubic_scores, network_scores = scores(bicubic(pair.lr), pair.hr), scores(predicted, pair.hr)
        modes = np.array([HARMONIZATION_CHOICES[i] for i in pair.draws.harmonization.tolist()])
        groups = [(set_name, np.ones(len(hr), bool))]
        if len(set(modes)) > 1:
            groups += [(f"{set_name}, harmonization {m}", modes == m) for m in HARMONIZATION_CHOICES]
        for name, chosen in groups:
            if chosen.any():
                b, n = bicubic_scores[chosen].mean(0), network_scores[chosen].mean(0)
                cells = (f"{b[0]:.2f} dB", f"{n[0]:.2f} dB", f"{b[1]:.4f}", f"{n[1]:.4f}")
                lines.append(f"| {name} | {int(chosen.sum())} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models", type=Path, help="a Degradation folder (default: convert the published one)"
    )
    parser.add_argument("--sample-dir", type=Path, default=REPO.parent / "shared" / "sample")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--patch", type=int, default=128, help="HR side of a training crop and held-out tile")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers making the pairs")
    parser.add_argument("--eval-tiles", type=int, help="at most this many held-out tiles (default: all)")
    parser.add_argument("--harmonization", default="none", choices=sorted(HARMONIZATION_ODDS))
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="the U-Net's")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=50)
    args = parser.parse_args(argv)
    if args.patch % 4 or args.patch <= 16:
        parser.error(f"--patch must be a multiple of 4 above 16, got {args.patch}")
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory(prefix="train_sr_models_") as tmp:
        folder = args.models
        if folder is None:
            from sen2naip_hub.convert import convert_reference

            folder = convert_reference(tmp)["degradation"]
        randomization = Randomization(harmonization=HARMONIZATION_ODDS[args.harmonization])
        pairs = TrainingPairs.from_pretrained(folder, randomization)
    if pairs.harmonization is not None:
        pairs.harmonization.precision = args.precision
    train_images, held_out = load_sample(args.sample_dir)
    start = time.perf_counter()
    model = train(args, pairs, train_images, device)
    table = evaluate(args, pairs, model, held_out, device)
    print(f"\n{table}\n\n(total {time.perf_counter() - start:.0f} s on {device})")
    return table


if __name__ == "__main__":
    main()
