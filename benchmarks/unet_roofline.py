"""FLOPs and bytes per tile of the harmonization U-Net, as published and fused, for the roofline.

Runs on meta tensors (no arithmetic, seconds on any machine): FLOPs from ``torch.utils.flop_counter``;
bytes as every aten operator's inputs read once and outputs written once, in the given precision — what
an unfused (eager) network moves through memory. Also the fewest bytes any implementation must move:
the input and output tiles and the weights once. With ``--tflops`` and ``--tbps`` (the device's
ceilings) it prints both floors in tiles/s.

    python benchmarks/unet_roofline.py --precision fp16 --tflops 790 --tbps 4.8
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sen2naip_hub.models.fusion import fuse_for_inference  # noqa: E402
from sen2naip_hub.models.harmonization import PRECISIONS, HarmonizationModel  # noqa: E402

UNET_INPUT = 512
#: Views and metadata ops move no bytes.
FREE_OPS = {
    "view",
    "_unsafe_view",
    "t",
    "transpose",
    "permute",
    "expand",
    "slice",
    "select",
    "unsqueeze",
    "squeeze",
    "as_strided",
    "alias",
    "detach",
    "_to_copy_meta",
}


class ByteCounter(TorchDispatchMode):
    """Bytes of every operator's tensor inputs and outputs, by operator name."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.__name__.split(".")[0]
        if name not in FREE_OPS:
            tensors = [t for t in tree_flatten((args, kwargs, out))[0] if isinstance(t, torch.Tensor)]
            self.bytes[name] += sum(t.numel() * t.element_size() for t in tensors)
        return out


def measure(unet: torch.nn.Module, dtype: torch.dtype) -> tuple[float, Counter[str]]:
    x = torch.empty(1, 4, UNET_INPUT, UNET_INPUT, device="meta", dtype=dtype)
    unet = unet.to(device="meta", dtype=dtype)
    flops, counter = FlopCounterMode(display=False), ByteCounter()
    with torch.no_grad(), flops, counter:
        unet(x)
    return flops.get_total_flops(), counter.bytes


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--precision", default="fp16", choices=list(PRECISIONS))
    parser.add_argument("--tflops", type=float, help="matrix-unit ceiling, TFLOP/s")
    parser.add_argument("--tbps", type=float, help="memory bandwidth ceiling, TB/s")
    args = parser.parse_args()
    dtype = PRECISIONS[args.precision]
    unet = HarmonizationModel().unet.eval()
    weights = sum(p.numel() for p in unet.parameters()) * torch.tensor([], dtype=dtype).element_size()
    io = 4 * UNET_INPUT**2 * 2 * torch.tensor([], dtype=dtype).element_size()
    rows = {
        "as published": measure(unet, dtype),
        "fused (BN folded, padding moved)": measure(fuse_for_inference(unet), dtype),
    }
    print(
        f"U-Net per {UNET_INPUT}² tile, {args.precision}; "
        f"fewest bytes (tile in + out + weights): {(io + weights) / 1e6:.1f} MB"
    )
    for name, (flops, counts) in rows.items():
        total = sum(counts.values())
        top = ", ".join(f"{op} {b / 1e6:.0f}" for op, b in counts.most_common(5))
        line = f"{name:<34} {flops / 1e9:6.2f} GFLOP  {total / 1e6:7.1f} MB unfused (top, MB: {top})"
        if args.tflops and args.tbps:
            line += f"\n{'':<34} floors: compute {args.tflops * 1e12 / flops:,.0f} tiles/s, "
            line += f"unfused bytes {args.tbps * 1e12 / total:,.0f} tiles/s"
        print(line)


if __name__ == "__main__":
    main()
