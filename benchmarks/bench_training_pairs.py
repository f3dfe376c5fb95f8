"""Training pairs on the fly vs reading precomputed pairs, in one run, on the same real 484² tiles.

The baseline is what a training loop does without this library: read stored ``(hr, lr)`` pairs from a
parquet file (written here, in the same run, with pyarrow: one row per pair, raw uint16 reflectance ×
10000 in binary columns, snappy, row groups of one batch; the file is read once before timing, so
it is served from the page cache) and move them to the device as float reflectance. Contenders:

* ``precomputed``: read hr + lr from parquet → device;
* ``on the fly, hr from parquet``: read hr only from the same file → device → :class:`TrainingPairs`;
* ``on the fly, hr on device``: :class:`TrainingPairs` alone, HR already resident (the degradation's
  own throughput, e.g. when HR batches come from another loader running ahead).

Each runs once per harmonization setting asked for (``none``: σ, shift and noise randomised, no U-Net;
``mixed``: the default odds, a third each of global / local / none; ``global``). Timed in turns
(``_timing.interleaved``), medians; pairs/s and the ratio against ``precomputed`` are printed.

Imports: torch, numpy, ``sen2naip_hub.training`` (torch, numpy, safetensors, huggingface_hub);
pyarrow if installed (else the baseline reads ``.npy`` memory maps and says so); segmentation_models_pytorch
only for ``mixed`` / ``global``; rasterio only without ``--tiles-npy``; opensr-degradation only without
``--models``.

    python benchmarks/bench_training_pairs.py                              # CPU, 2 cores
    # for the GPU machine (no rasterio there): tiles and the converted weights, carried in .devcarry/
    python benchmarks/bench_degradation.py --save-tiles .devcarry/tiles.npy --tiles 12
    sen2naip convert-reference --out /tmp/m && mkdir -p .devcarry/models \
        && cp -r /tmp/m/sen2naip-degradation .devcarry/models/
    python benchmarks/bench_training_pairs.py --device cuda --tiles-npy .devcarry/tiles.npy \
        --models .devcarry/models --batch 256 --batches 8 --harmonization none,mixed,global --precision bf16
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _timing import interleaved  # noqa: E402

from sen2naip_hub.training import Randomization, TrainingPairs, step_generator  # noqa: E402

TILE = 484
DN_SCALE = 10000.0  # the dataset's uint16 = reflectance × 10000 (sen2naip_hub.sensors.SENTINEL2)
HARMONIZATION_SETTINGS: dict[str, dict[str, float]] = {
    "none": {"none": 1.0},
    "mixed": {"global": 1.0, "local": 1.0, "none": 1.0},
    "global": {"global": 1.0},
}


def sample_tiles(sample_dir: Path, n: int) -> np.ndarray:
    """``n`` real NAIP tiles, uint16 reflectance × 10000 ``(n, 4, 484, 484)``, cycling through the sample."""
    from sen2naip_hub.training_data import GeoTiffTiles

    tiles = GeoTiffTiles(sample_dir / "naip", tile=TILE, stride=225)
    return np.stack([to_counts(tiles[i % len(tiles)].numpy()) for i in range(n)])


def to_counts(reflectance: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(reflectance * DN_SCALE), 0, 65535).astype(np.uint16)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def to_device(counts: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint16 DN → float32 reflectance on ``device``: moved as 16-bit integers (torch has few uint16
    kernels, so as int16), converted there."""
    moved = torch.from_numpy(counts.view(np.int16)).to(device)
    return (moved.to(torch.int32) & 0xFFFF).float() / DN_SCALE


class PairStore:
    """Precomputed pairs in one parquet file (pyarrow), or ``.npy`` memory maps without pyarrow."""

    def __init__(self, folder: Path, hr: np.ndarray, lr: np.ndarray, batch: int) -> None:
        self.batch, self.shapes = batch, {"hr": hr.shape[1:], "lr": lr.shape[1:]}
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            self.kind, self.path = "npy", folder
            np.save(folder / "hr.npy", hr)
            np.save(folder / "lr.npy", lr)
            return
        self.kind, self.path = "parquet", folder / "pairs.parquet"
        columns = {
            key: pa.array([row.tobytes() for row in arr], pa.large_binary())
            for key, arr in (("hr", hr), ("lr", lr))
        }
        pq.write_table(pa.table(columns), self.path, row_group_size=batch)

    def batches(self, columns: tuple[str, ...]) -> Iterator[dict[str, np.ndarray]]:
        """Every batch of the store, as uint16 arrays ``(B, 4, H, W)`` per column."""
        if self.kind == "npy":
            arrays = {key: np.load(self.path / f"{key}.npy", mmap_mode="r") for key in columns}
            for start in range(0, len(arrays[columns[0]]), self.batch):
                yield {key: np.ascontiguousarray(a[start : start + self.batch]) for key, a in arrays.items()}
            return
        import pyarrow.parquet as pq

        for record in pq.ParquetFile(self.path).iter_batches(batch_size=self.batch, columns=list(columns)):
            out = {}
            for key in columns:
                column = record.column(key)  # large_binary: int64 offsets, values back to back
                offsets = np.frombuffer(column.buffers()[1], np.int64)[
                    column.offset : column.offset + len(column) + 1
                ]
                values = np.frombuffer(column.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
                out[key] = values.view(np.uint16).reshape(len(column), *self.shapes[key])
            yield out


def load_pairs(args, setting: str, device: torch.device) -> TrainingPairs:
    randomization = Randomization(harmonization=HARMONIZATION_SETTINGS[setting])
    if args.models is None:
        from sen2naip_hub.convert import convert_reference

        args.models = Path(tempfile.mkdtemp(prefix="bench_pairs_models_"))
        convert_reference(args.models)
    pairs = TrainingPairs.from_pretrained(
        args.models / "sen2naip-degradation", randomization, map_location=str(device)
    )
    if pairs.harmonization is not None:
        pairs.harmonization.precision = args.precision
        if args.compile:
            pairs.harmonization.compile()
    return pairs


def contenders(
    store: PairStore, hr_resident: list[torch.Tensor], pairs, device, seed: int
) -> dict[str, Callable]:
    def precomputed() -> None:
        for batch in store.batches(("hr", "lr")):
            to_device(batch["hr"], device), to_device(batch["lr"], device)
        sync(device)

    def from_store() -> None:
        for step, batch in enumerate(store.batches(("hr",))):
            pairs(to_device(batch["hr"], device), step_generator(seed, step, device=device))
        sync(device)

    def resident() -> None:
        for step, hr in enumerate(hr_resident):
            pairs(hr, step_generator(seed, step, device=device))
        sync(device)

    return {"precomputed": precomputed, "from_store": from_store, "resident": resident}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=16, help="pairs per batch (GPU: try 256)")
    parser.add_argument("--batches", type=int, default=4, help="batches per timed pass")
    parser.add_argument("--harmonization", default="none", help="comma list of none, mixed, global")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="the U-Net's")
    parser.add_argument("--compile", action="store_true", help="torch.compile the harmonization")
    parser.add_argument("--sample-dir", type=Path, default=REPO.parent / "shared" / "sample")
    parser.add_argument(
        "--tiles-npy", type=Path, help="uint8 (N, 4, 484, 484), bench_degradation --save-tiles"
    )
    parser.add_argument("--models", type=Path, help="converted models folder (default: converted here)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    settings = args.harmonization.split(",")
    unknown = set(settings) - set(HARMONIZATION_SETTINGS)
    if unknown:
        raise SystemExit(
            f"--harmonization: unknown {sorted(unknown)}; expected some of {list(HARMONIZATION_SETTINGS)}"
        )
    device = torch.device(args.device)
    n = args.batch * args.batches
    if args.tiles_npy:
        tiles_u8 = np.load(args.tiles_npy)
        hr_counts = to_counts(tiles_u8[np.arange(n) % len(tiles_u8)].astype(np.float32) / 255)
    else:
        hr_counts = sample_tiles(args.sample_dir, n)
    hr_resident = [to_device(hr_counts[i : i + args.batch], device) for i in range(0, n, args.batch)]
    where = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    )
    print(
        f"device {device} ({where}), {n} real NAIP tiles of {TILE}², batch {args.batch}, "
        f"medians of {args.repeats}"
    )
    header = f"{'harmonization':<14} {'what':<40} {'pairs/s':>10} {'vs precomputed':>15}"
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_pairs_") as tmp:
        for setting in settings:
            pairs = load_pairs(args, setting, device)
            lr = torch.cat(
                [
                    pairs(hr, step_generator(args.seed, i, device=device)).lr
                    for i, hr in enumerate(hr_resident)
                ]
            )
            folder = Path(tmp) / setting
            folder.mkdir()
            store = PairStore(folder, hr_counts, to_counts(lr.clamp(0, 1).cpu().numpy()), args.batch)
            first = next(store.batches(("hr", "lr")))
            if not np.array_equal(first["hr"], hr_counts[: args.batch]):
                raise SystemExit(f"the {store.kind} store does not read back what was written")
            fns = contenders(store, hr_resident, pairs, device, args.seed)
            times = interleaved(fns, args.repeats, warmup=True)
            base = n / times["precomputed"]
            names = {
                "precomputed": f"precomputed pairs, read from {store.kind}",
                "from_store": f"on the fly, hr from {store.kind}",
                "resident": "on the fly, hr on the device",
            }
            for key, label in names.items():
                rate = n / times[key]
                rows.append(f"{setting:<14} {label:<40} {rate:>10,.0f} {rate / base:>14.2f}x")
    print(header)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
