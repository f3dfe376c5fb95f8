"""Image comparison metrics shared by the builder's QA, the fitting losses, the Space and evaluation.

One implementation each; torch, so they run batched on any device and are differentiable.
"""

from __future__ import annotations

import torch

__all__ = ["spectral_angle"]


def spectral_angle(
    a: torch.Tensor, b: torch.Tensor, *, eps: float = 0.0, margin: float = 0.0
) -> torch.Tensor:
    """Per-pixel angle, in radians, between the band vectors of ``a`` and ``b`` (bands on dim -3).

    ``arccos(<u, v> / (|u| |v| + eps))``, the spectral angle mapper (SAM, Kruse et al. 1993), for
    ``(C, H, W)`` or ``(B, C, H, W)`` inputs of one shape; the result drops the band dimension. The
    cosine is clamped to ``[-1 + margin, 1 - margin]``: ``margin = 0`` gives exact angles (0 for
    parallel vectors); a training loss passes a small ``eps`` and ``margin`` (e.g. 1e-7) so that the
    gradient stays finite. Pixels with a zero or non-finite vector give NaN (with ``eps = 0``).

    >>> a = torch.tensor([[[1.0]], [[0.0]]])
    >>> round(float(spectral_angle(a, torch.tensor([[[1.0]], [[1.0]]]))), 4)  # 45 degrees
    0.7854
    """
    if a.shape != b.shape or a.ndim < 3:
        raise ValueError(
            f"expected two (..., C, H, W) tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    dot = (a * b).sum(dim=-3)
    norm = a.norm(dim=-3) * b.norm(dim=-3)
    return torch.acos((dot / (norm + eps)).clamp(-1.0 + margin, 1.0 - margin))
