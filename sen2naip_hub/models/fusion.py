"""An inference copy of the harmonization U-Net with fewer passes over its activations.

The U-Net (``smp.Unet`` with an EfficientNet encoder) is memory-bound on GPUs: each BatchNorm after a
convolution and each explicit zero padding ("TensorFlow same" padding, ``nn.ZeroPad2d``) reads and
writes a whole activation tensor. :func:`fuse_for_inference` removes them from a copy, exactly in
arithmetic (the results differ only by float rounding):

* an eval-mode ``BatchNorm2d`` that directly follows a ``Conv2d`` is folded into that convolution's
  weight and bias (``y = γ (W x + b − μ) / σ + β``);
* a symmetric ``nn.ZeroPad2d`` in front of a convolution becomes the convolution's own ``padding``
  (zero padding either way); asymmetric ones (stride-2 layers) stay.

The original module and its state dict are untouched; the copy is for inference only.
"""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn

__all__ = [
    "FAST_COMPILE_OPTIONS",
    "FusionError",
    "fold_batchnorms",
    "fold_symmetric_padding",
    "fuse_for_inference",
]

#: (convolution, BatchNorm) attribute pairs inside one module: the EfficientNet MBConv block and stem.
CONV_BN_ATTRIBUTES: tuple[tuple[str, str], ...] = (
    ("_expand_conv", "_bn0"),
    ("_depthwise_conv", "_bn1"),
    ("_project_conv", "_bn2"),
    ("_conv_stem", "_bn0"),
    ("_conv_head", "_bn1"),
)

#: ``torch.compile`` options of the fused U-Net on GPUs: ``freezing`` (weights become constants that
#: inductor lays out once) and ``conv_1x1_as_mm`` (the 1×1 convolutions, most of EfficientNet's,
#: become matrix products whose bias and activation fuse into one kernel).
FAST_COMPILE_OPTIONS: dict[str, bool] = {"freezing": True, "conv_1x1_as_mm": True}


class FusionError(RuntimeError):
    """A BatchNorm could not be folded (the module's layout is not one this knows)."""


@torch.no_grad()
def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold ``bn`` into ``conv`` in place (float64 arithmetic, stored in the conv's dtype)."""
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    weight = conv.weight.double() * scale.reshape(-1, 1, 1, 1)
    new_bias = (bias - bn.running_mean.double()) * scale + bn.bias.double()
    conv.weight.copy_(weight.to(conv.weight.dtype))
    conv.bias = nn.Parameter(new_bias.to(conv.weight.dtype), requires_grad=False)


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)


def fold_batchnorms(module: nn.Module) -> int:
    """Fold every BatchNorm2d that follows a Conv2d into it, in place; return how many were folded.

    Handles ``nn.Sequential`` (conv, BN, ...) runs and the EfficientNet attribute pairs of
    :data:`CONV_BN_ATTRIBUTES`. Raises :class:`FusionError` if a BatchNorm2d is left over, so a
    layout this does not know fails loudly instead of running half fused.
    """
    if module.training:
        raise FusionError("BatchNorm folding needs eval mode (running statistics); call .eval() first")
    folded = 0
    for parent in module.modules():
        if isinstance(parent, nn.Sequential):
            children = list(parent.named_children())
            for (_, conv), (bn_name, bn) in itertools.pairwise(children):
                if _foldable(conv, bn):
                    _fold(conv, bn)
                    setattr(parent, bn_name, nn.Identity())
                    folded += 1
        for conv_name, bn_name in CONV_BN_ATTRIBUTES:
            conv, bn = getattr(parent, conv_name, None), getattr(parent, bn_name, None)
            if _foldable(conv, bn):
                _fold(conv, bn)
                setattr(parent, bn_name, nn.Identity())
                folded += 1
    left = [name for name, m in module.named_modules() if isinstance(m, nn.BatchNorm2d)]
    if left:
        raise FusionError(f"{len(left)} BatchNorm2d could not be folded, e.g. {left[0]}")
    return folded


def fold_symmetric_padding(module: nn.Module) -> int:
    """Move each symmetric ``static_padding`` (``nn.ZeroPad2d``) into its convolution's ``padding``, in
    place; return how many. The convolution must call ``F.conv2d`` with ``self.padding`` after the
    padding module, as EfficientNet's ``Conv2dStaticSamePadding`` does."""
    moved = 0
    for conv in module.modules():
        pad = getattr(conv, "static_padding", None)
        if not (isinstance(conv, nn.Conv2d) and isinstance(pad, nn.ZeroPad2d)):
            continue
        left, right, top, bottom = pad.padding
        if left == right and top == bottom and tuple(conv.padding) == (0, 0):
            conv.padding = (top, left)
            conv.static_padding = nn.Identity()
            moved += 1
    return moved


def fuse_for_inference(unet: nn.Module) -> nn.Module:
    """A fused eval-mode copy of ``unet`` (see the module docstring); ``unet`` is not changed."""
    fused = copy.deepcopy(unet).eval()
    fold_batchnorms(fused)
    fold_symmetric_padding(fused)
    return fused.requires_grad_(False)
