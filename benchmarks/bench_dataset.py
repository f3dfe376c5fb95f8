"""Reading SEN2NAIP pairs (``load_dataset`` vs per-ROI GeoTIFFs) and the synthetic stage's speed.

Part 1 (needs ``datasets`` and ``rasterio``; a dataset built by ``make demo`` in ``./sen2naip``): the
same N samples of one split are read as float32 reflectance tensors ``(B, 4, H, W)``

* through ``load_pairs`` + ``to_torch_batches`` (parquet → arrow → one division per batch), and
* from per-ROI folders in the original SEN2NAIP layout (``ROI_0001/hr.tif``, ``lr.tif``,
  ``metadata.json``, written here from the built dataset into a temporary folder) with rasterio,

and samples/s of each and their ratio are printed (target ≥ 5×). Both readers cycle over the split
until N samples are read; the file cache is warm for both (one untimed pass first).

Part 2 (needs only torch, open_clip and ``sen2naip_hub.models``, so it runs on the GPU machine with
``--synthetic-only``): tiles/s of the synthetic stage's two steps on ``--device``: CLIP image
embedding (open_clip's own PIL preprocessing per tile, then the encoder, as the builder did before its
preprocessing moved to torch; ``bench_synthetic_stage.py`` measures the stage now) and batched
degradation (``Degradation``, noise drawn per tile from its own generator, as ``dataset_builder.build``
does). Tiles are seeded random reflectance: the throughput does not depend on the content.

    python benchmarks/bench_dataset.py                       # CPU, both parts
    python benchmarks/bench_dataset.py --device cuda --synthetic-only
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

#: Reflectance scale of the stored uint16 values (Sentinel-2 DN convention), as in sen2naip_hub.sensors.
DN_SCALE = 10000.0
DEFAULT_SAMPLES = 512
DEFAULT_BATCH = 32
DEFAULT_TILES = 256
DEFAULT_TILE_SIZE = 484
DEFAULT_CLIP = "ViT-B-32"
SEED = 0


def _timed(fn: Callable[[], int]) -> tuple[int, float]:
    start = time.perf_counter()
    n = fn()
    return n, time.perf_counter() - start


# ------------------------------------------------------------------------------ part 1: reading
def write_roi_folders(dataset, folder: Path) -> list[Path]:
    """Write every row as ``ROI_NNNN/{hr,lr}.tif`` + ``metadata.json`` (SEN2NAIP's release layout)."""
    import rasterio
    from affine import Affine

    rows = dataset.with_format("numpy", columns=["hr", "lr"], dtype=np.uint16, output_all_columns=True)
    paths = []
    for index in range(len(rows)):
        row = rows[index]
        roi = folder / f"ROI_{index + 1:04d}"
        roi.mkdir(parents=True)
        for key, bands in (("hr", ("R", "G", "B", "NIR")), ("lr", ("B04", "B03", "B02", "B08"))):
            data = row[key]
            profile = {
                "driver": "GTiff",
                "count": 4,
                "height": data.shape[1],
                "width": data.shape[2],
                "dtype": "uint16",
                "crs": row["crs"],
                "transform": Affine.from_gdal(*row[f"{key}_transform"]),
                "nodata": 0,
                "compress": "deflate",
            }
            with rasterio.open(roi / f"{key}.tif", "w", **profile) as dst:
                dst.write(data)
                dst.descriptions = bands
        meta = {k: row[k] for k in ("roi_id", "hr_date", "lr_date", "source", "degradation_model")}
        (roi / "metadata.json").write_text(json.dumps(meta))
        paths.append(roi)
    return paths


def read_geotiffs(rois: list[Path], n: int, batch_size: int) -> int:
    """Read ``n`` samples (cycling over ``rois``) into float32 batches with rasterio; returns n."""
    import rasterio

    done = 0
    while done < n:
        chunk = [rois[(done + i) % len(rois)] for i in range(min(batch_size, n - done))]
        batch = {}
        for key in ("hr", "lr"):
            arrays = []
            for roi in chunk:
                with rasterio.open(roi / f"{key}.tif") as src:
                    arrays.append(src.read())
                json.loads((roi / "metadata.json").read_text())
            batch[key] = torch.from_numpy(np.stack(arrays).astype(np.float32) / np.float32(DN_SCALE))
        done += len(chunk)
    return done


def read_parquet(dataset_dir: str, config: str, split: str, n: int, batch_size: int) -> int:
    """Read ``n`` samples (cycling over the split) through load_pairs + to_torch_batches; returns n."""
    from sen2naip_hub.data import load_pairs, to_torch_batches

    dataset = load_pairs(dataset_dir, config, split)
    done = 0
    while done < n:
        for batch in to_torch_batches(dataset, batch_size=batch_size):
            take = min(len(batch["hr"]), n - done)
            done += take
            if done >= n:
                break
    return done


def reading_benchmark(dataset_dir: str, config: str, split: str, n: int, batch_size: int) -> dict:
    from datasets import load_dataset

    dataset = load_dataset(dataset_dir, config, split=split)
    with tempfile.TemporaryDirectory() as tmp:
        rois = write_roi_folders(dataset, Path(tmp))
        read_geotiffs(rois, len(rois), batch_size)  # warm the file cache
        read_parquet(dataset_dir, config, split, len(rois), batch_size)
        tif_n, tif_s = _timed(lambda: read_geotiffs(rois, n, batch_size))
        pq_n, pq_s = _timed(lambda: read_parquet(dataset_dir, config, split, n, batch_size))
    shape = tuple(np.asarray(dataset.with_format("numpy", columns=["hr"], dtype=np.uint16)[0]["hr"]).shape)
    return {
        "rows": len(dataset),
        "hr_shape": shape,
        "parquet_sps": pq_n / pq_s,
        "geotiff_sps": tif_n / tif_s,
    }


# ------------------------------------------------------------------------------ part 2: synthetic stage
def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def embed_throughput(device: str, tiles: torch.Tensor, clip_model: str, batch_size: int) -> float:
    """Tiles/s of CLIP embedding: PIL preprocessing per tile (the builder's old path) + the image encoder."""
    import open_clip
    from PIL import Image

    torch.manual_seed(SEED)
    model, _, preprocess = open_clip.create_model_and_transforms(clip_model, pretrained=None, device=device)
    model.eval()
    rgb = (tiles[:, :3].clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()

    def run() -> int:
        with torch.inference_mode():
            for start in range(0, len(rgb), batch_size):
                images = [preprocess(Image.fromarray(a, mode="RGB")) for a in rgb[start : start + batch_size]]
                features = model.encode_image(torch.stack(images).to(device)).float()
                torch.nn.functional.normalize(features, dim=-1).cpu()
        _sync(device)
        return len(rgb)

    run_warm = rgb[: min(len(rgb), batch_size)]
    with torch.inference_mode():
        model.encode_image(torch.stack([preprocess(Image.fromarray(a)) for a in run_warm]).to(device))
    n, seconds = _timed(run)
    return n / seconds


def untrained_degradation(seed: int = SEED):
    """A Degradation of the published shapes with random U-Net weights (drawn from ``seed``) and a uniform
    noise table: the same compute as the published model, for machines where ``models/`` was not
    converted."""
    from sen2naip_hub.models import Degradation, NoiseModel
    from sen2naip_hub.models.noise import published_noise_axes

    edges, values = published_noise_axes()
    table = torch.full((edges.numel() + 1, values.numel()), 1.0 / values.numel(), dtype=torch.float64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Degradation(noise=NoiseModel.from_table(table, edges, values))


def degrade_throughput(
    device: str, tiles: torch.Tensor, models_dir: Path, batch_size: int
) -> tuple[float, str]:
    """Tiles/s of the Degradation on batches (noise per tile from its own generator)."""
    from sen2naip_hub.models import Degradation

    folder = models_dir / "sen2naip-degradation"
    if folder.is_dir():
        model, which = Degradation.from_pretrained(folder), str(folder)
    else:
        model, which = untrained_degradation(), "untrained weights, uniform noise table (same compute)"
    model = model.to(device).eval()

    def run() -> int:
        with torch.inference_mode():
            for start in range(0, len(tiles), batch_size):
                hr = tiles[start : start + batch_size].to(device, non_blocking=True)
                lr = model(hr, noise=False).lr
                for i in range(len(lr)):
                    generator = torch.Generator(device=device).manual_seed(SEED + start + i)
                    model.noise(lr[i : i + 1], generator)
                lr.cpu()
        _sync(device)
        return len(tiles)

    with torch.inference_mode():
        model(tiles[:batch_size].to(device), noise=False)
    _sync(device)
    n, seconds = _timed(run)
    return n / seconds, which


def synthetic_benchmark(args: argparse.Namespace) -> dict:
    generator = torch.Generator().manual_seed(SEED)
    size = args.tile_size
    tiles = torch.rand(args.tiles, 4, size, size, generator=generator) * 0.6 + 0.05
    embed = embed_throughput(args.device, tiles, args.clip_model, args.embed_batch_size)
    degrade, which = degrade_throughput(args.device, tiles, Path(args.models), args.batch_size)
    return {"embed_tps": embed, "degrade_tps": degrade, "model": which}


# ------------------------------------------------------------------------------ main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="sen2naip", help="dataset folder built by `sen2naip build`")
    parser.add_argument("--config", default="synthetic")
    parser.add_argument("--split", default="train")
    parser.add_argument("--samples", type=int, default=DEFAULT_SAMPLES)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--synthetic-only", action="store_true", help="skip the reading part (GPU machine)")
    parser.add_argument("--tiles", type=int, default=DEFAULT_TILES, help="tiles for the synthetic part")
    parser.add_argument("--tile-size", type=int, default=DEFAULT_TILE_SIZE)
    parser.add_argument("--clip-model", default=DEFAULT_CLIP)
    parser.add_argument("--embed-batch-size", type=int, default=DEFAULT_BATCH)
    parser.add_argument("--models", default="models")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    if not args.synthetic_only:
        if not Path(args.dataset).is_dir():
            raise SystemExit(
                f"{args.dataset}: no dataset folder; run `make demo` (or `sen2naip build`) first"
            )
        r = reading_benchmark(args.dataset, args.config, args.split, args.samples, args.batch_size)
        print(
            f"reading {args.samples} samples of {args.config}/{args.split} "
            f"({r['rows']} rows, hr {r['hr_shape']}):"
        )
        rows += [
            ("read: load_dataset + sen2naip_hub.data", f"{r['parquet_sps']:.1f} samples/s"),
            ("read: per-ROI GeoTIFFs + rasterio", f"{r['geotiff_sps']:.1f} samples/s"),
            ("read: ratio (target >= 5x)", f"{r['parquet_sps'] / r['geotiff_sps']:.1f}x"),
        ]
    s = synthetic_benchmark(args)
    tag = f"{args.device}, {args.tiles} tiles of {args.tile_size} px"
    rows += [
        (f"synthetic: CLIP {args.clip_model} embed ({tag})", f"{s['embed_tps']:.1f} tiles/s"),
        (f"synthetic: degrade, batch {args.batch_size} ({tag})", f"{s['degrade_tps']:.1f} tiles/s"),
    ]
    device_name = (
        torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU x{torch.get_num_threads()}"
    )
    print(f"\ndevice: {device_name}; degradation model: {s['model']}")
    width = max(len(name) for name, _ in rows)
    print(f"{'measure':<{width}}  value")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
