"""Checks the Triton kernels against bincount; run by ``test_harmonization`` under Triton's CPU
interpreter (``TRITON_INTERPRET=1`` must be set before Triton is imported, hence a separate process)."""

from __future__ import annotations

import torch

from sen2naip_hub.models import _kernels
from sen2naip_hub.models import histogram as H


def check_level_counts() -> None:
    g = torch.Generator().manual_seed(0)
    levels = torch.randint(0, 256, (3, 70_000), generator=g, dtype=torch.int32)
    levels[1] = 7  # one level only
    index = levels + torch.arange(3, dtype=torch.int32)[:, None] * 256
    expected = torch.stack([torch.bincount(row.long(), minlength=256) for row in levels])
    assert torch.equal(_kernels.row_level_counts(index, 256).long(), expected), "8-bit counts differ"


def check_source_levels() -> None:
    g = torch.Generator().manual_seed(1)
    counts8 = torch.randint(0, 256, (3, 70_000), generator=g).float()
    src = counts8 / 255  # NAIP: 8-bit / 255
    src[1] = counts8[1] * torch.tensor(1 / 255)  # as CUDA computes k / 255: 1 ulp off for some k
    assert not torch.equal(src[1], counts8[1] / 255)

    def source_levels(x):
        return _kernels.source_levels(x, 256, H.GRID_TOLERANCE)

    index, counts, on_grid = source_levels(src)
    levels = (src * 255).round().long()
    assert on_grid, "an 8-bit source was found off the grid"
    assert torch.equal(index.long(), levels + torch.arange(3)[:, None] * 256), "levels differ"
    assert torch.equal(counts.long(), torch.stack([torch.bincount(r, minlength=256) for r in levels]))
    src[2, 12_345] += 1e-4
    assert not source_levels(src)[2], "an off-grid pixel was missed"
    src[2, 12_345] = 1.5
    assert not source_levels(src)[2], "a pixel above 1 was missed"


def check_half_key_counts() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 70_000, generator=g) * 0.4 + 0.01
    x[1, :50] = -0.05  # far from the row's mean: counted one by one
    x[2, :7], x[2, 7:9] = 0.0, -0.0  # signed zeros share a key
    x[3] = 0.3  # a constant row
    for dtype in (torch.bfloat16, torch.float16):
        ref = x.to(dtype)
        center = H.half_keys(ref.mean(dim=1, dtype=torch.float32).to(dtype))
        base = (center - _kernels.HALF_WINDOW // 2).clamp(0, _kernels.HALF_KEYS - _kernels.HALF_WINDOW)
        keys = H.half_keys(ref) + torch.arange(5, dtype=torch.int32)[:, None] * _kernels.HALF_KEYS
        expected = torch.bincount(keys.reshape(-1).long(), minlength=5 * _kernels.HALF_KEYS)
        got = _kernels.half_key_counts(ref, base).long().reshape(-1)
        assert torch.equal(got, expected), f"{dtype} key counts differ"


if __name__ == "__main__":
    check_level_counts()
    check_source_levels()
    check_half_key_counts()
    print("ok")
