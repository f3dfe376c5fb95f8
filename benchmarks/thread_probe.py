"""Why the synthetic stage runs slower than its parts: reader threads against the thread that drives the GPU.

A diagnostic for the GPU machine (16 cores), run on a few mosaic images of real tiles. It prints, each
measured in this run:

1. **tile reads**: tiles/s of the builder's tiler (:func:`dataset_builder.synthetic.reads.embed_row`,
   one grid row per call) with 1 thread and with ``--threads`` threads;
2. **HR reads + conversion**: rows/s of :func:`dataset_builder.synthetic.reads.read_hr_s2` (the shard
   writer's read and uint16 conversion), 1 thread and ``--threads``;
3. **allocation**: fresh 3.7 MB float32 arrays, written once (page faults, returned to the OS), per
   second, 1 thread and ``--threads``: whether memory management scales on this machine;
4. **the driving thread**: microseconds per small op pair on ``--device`` alone, and while ``--threads``
   threads read tiles (what the CLIP and degradation kernels' launches pay while loaders run).

    python3 benchmarks/thread_probe.py --tiles-npy .devcarry/tiles.npy --device cuda --threads 16
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mosaic import load_tiles_npy, make_mosaic

from dataset_builder.core import tiling
from dataset_builder.synthetic import reads

SIZE = 484


def rate(work: Callable[[], int], seconds: float = 2.0) -> float:
    """Items per second of repeated ``work()`` (returns items done) for about ``seconds``."""
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        done += work()
    return done / (time.perf_counter() - start)


def in_threads(task: Callable[[], int], threads: int, seconds: float = 2.0) -> float:
    """Items per second of ``task`` run by ``threads`` threads at once."""
    with ThreadPoolExecutor(threads) as pool:
        return sum(pool.map(lambda _: rate(task, seconds), range(threads)))


def report(name: str, one: float, many: float, threads: int) -> None:
    print(f"{name:<30} 1 thread {one:>9,.0f}   {threads} threads {many:>9,.0f}   ×{many / one:.1f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiles-npy", type=Path, required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--threads", type=int, default=16)
    p.add_argument("--switch-interval", type=float, help="sys.setswitchinterval (s; Python's default 0.005)")
    args = p.parse_args()
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    folder = Path(tempfile.mkdtemp(prefix="thread_probe_"))
    paths = make_mosaic(load_tiles_npy(args.tiles_npy), folder, args.threads, 64, seed=0)
    rows = [(path, row) for path in paths for row in tiling.grid_rows(tiling.grid_origins(path, SIZE))]
    cursor = iter(range(10**9))

    def read_row() -> int:
        path, origins = rows[next(cursor) % len(rows)]
        kept, blanks, _ = reads.embed_row(str(path), origins, SIZE)
        return len(kept) + len(blanks)

    chosen = [{"path": str(path), "row": r, "col": c} for path, row in rows for r, c in row]

    def read_hr() -> int:
        start = next(cursor) * 16 % len(chosen)
        part = chosen[start : start + 16]
        return len(reads.read_hr_s2(part, SIZE))

    def allocate() -> int:
        for _ in range(16):
            np.empty((4, SIZE, SIZE), np.float32).fill(1.0)
        return 16

    print(f"machine: {torch.get_num_threads()} torch threads; {args.threads} reader threads", end="")
    print(f"; GIL switch interval {sys.getswitchinterval() * 1e3:g} ms")
    for name, task in (("tile reads (tiles/s)", read_row), ("HR reads + uint16 (rows/s)", read_hr)):
        report(name, rate(task), in_threads(task, args.threads), args.threads)
    one, many = rate(allocate), in_threads(allocate, args.threads)
    report("3.7 MB arrays (allocs/s)", one, many, args.threads)
    driving_thread(args.device, args.threads, read_row)


def driving_thread(device: str, threads: int, read_row: Callable[[], int]) -> None:
    """Microseconds per small op pair on ``device``, alone and while ``threads`` threads read tiles."""
    x = torch.ones(1024, device=device)

    def ops(n: int = 2000) -> float:
        start = time.perf_counter()
        for _ in range(n):
            x.mul(2).add_(1)
        if x.is_cuda:
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / n * 1e6

    alone = min(ops() for _ in range(3))
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            read_row()

    workers = [threading.Thread(target=load) for _ in range(threads)]
    for worker in workers:
        worker.start()
    time.sleep(0.5)
    loaded = sorted(ops() for _ in range(5))[2]
    stop.set()
    for worker in workers:
        worker.join()
    print(
        f"driving thread, µs per op pair: alone {alone:.1f}, with {threads} reader threads {loaded:.1f}",
        end="",
    )
    print(f" (×{loaded / alone:.1f})")


if __name__ == "__main__":
    main()
