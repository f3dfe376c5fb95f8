"""λ: spectral harmonization. A U-Net predicts Sentinel-2-like reflectance from NAIP; its output is only
the *target* of a histogram matching applied to the NAIP image, which keeps NAIP's detail and takes
Sentinel-2's radiometry (opensr-degradation 1.0.1 ``harmonization_03``).

Modes: ``global`` (per band over the whole image, as published), ``local`` (per window, blended
smoothly, as the SEN2NAIP slides describe) and ``none`` (identity).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, get_args

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

from sen2naip_hub.constants import UNET_ENCODER, UNET_PRECISIONS, UNET_STRIDE
from sen2naip_hub.models.fusion import FAST_COMPILE_OPTIONS, fuse_for_inference
from sen2naip_hub.models.histogram import match_histograms, match_histograms_local
from sen2naip_hub.models.hub import HubModel
from sen2naip_hub.sensors import N_BANDS

HarmonizationMode = Literal["global", "local", "none"]
HARMONIZATION_MODES: tuple[str, ...] = get_args(HarmonizationMode)
#: Precision of the U-Net alone (histogram matching, blur and noise always run in float32).
#: bf16 is ~5-7x faster on CPUs with AVX512-BF16/AMX and on GPUs; bf16 and fp16 move the histogram *target*.
PRECISIONS: dict[str, torch.dtype] = dict(
    zip(UNET_PRECISIONS, (torch.float32, torch.bfloat16, torch.float16), strict=True)
)
#: Images per U-Net call on the CPU. A 512×512 image's feature maps already exceed the caches; a
#: larger batch only makes each convolution slower (measured on 2 cores: 0.15 s/image at batch 1,
#: 0.28 s/image at batch 8, fp32). GPUs take the whole batch at once.
CPU_UNET_CHUNK: int = 1

__all__ = ["HARMONIZATION_MODES", "HarmonizationModel", "pad_to_multiple"]


def pad_to_multiple(x: torch.Tensor, multiple: int = UNET_STRIDE) -> torch.Tensor:
    """Zero-pad ``(B, C, H, W)`` at the bottom and right up to the next multiple of ``multiple``.

    The published code pads the same way (zeros, bottom and right); it pads a full extra ``multiple``
    when the size is already a multiple, which this does not. For 484-px tiles both give 512.
    """
    h, w = x.shape[-2:]
    return F.pad(x, (0, (-w) % multiple, 0, (-h) % multiple))


class HarmonizationModel(
    HubModel,
    tags=["sen2naip", "degradation", "harmonization", "unet", "sentinel-2", "naip"],
):
    """λ as a Hub model: an ``smp.Unet`` (4 → 4 bands) whose output drives histogram matching.

    Args:
        mode: ``global``, ``local`` or ``none`` (the default mode; :meth:`forward` can override it).
        window: window of ``local`` matching in HR pixels (even); windows overlap by half.
        encoder: the U-Net's encoder (SEN2NAIP: ``efficientnet-b1``).
        precision: ``fp32`` (as published), ``bf16`` or ``fp16`` (autocast for the U-Net only).

    The U-Net input is the NAIP reflectance, zero-padded to a multiple of 32 and cropped back.
    """

    def __init__(
        self,
        mode: str = "global",
        window: int = 128,
        encoder: str = UNET_ENCODER,
        precision: str = "fp32",
    ) -> None:
        super().__init__()
        if mode not in HARMONIZATION_MODES:
            raise ValueError(f"harmonization mode must be one of {HARMONIZATION_MODES}, got {mode!r}")
        self.mode = mode
        self.precision = precision
        self.window = window
        self.encoder = encoder
        self.unet = smp.Unet(encoder, encoder_weights=None, in_channels=N_BANDS, classes=N_BANDS)
        self.unet.to(memory_format=torch.channels_last)  # faster convolutions on CPU and GPU
        self._match_global: Callable[..., torch.Tensor] = match_histograms  # compile() replaces it
        self.unfuse()
        self.eval()  # a degradation model is used for inference; call .train() to fit it

    @property
    def precision(self) -> str:
        """The U-Net's precision, ``fp32``, ``bf16`` or ``fp16``; may be changed after loading."""
        return self._precision

    @precision.setter
    def precision(self, value: str) -> None:
        if value not in PRECISIONS:
            raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, got {value!r}")
        self._precision = value

    # ------------------------------------------------------------------ fused inference copy
    def fuse(self) -> None:
        """Run the U-Net through a fused inference copy (:func:`.fusion.fuse_for_inference`: the
        BatchNorms folded into the convolutions, symmetric zero padding moved into them): fewer passes
        over the activations, the same function up to float rounding.

        The copy is not part of the state dict (saving still writes the published layout); it follows
        ``.to()``; ``.train()`` and ``load_state_dict`` drop it (the weights it was made from changed).
        """
        object.__setattr__(self, "_fused_unet", fuse_for_inference(self.unet))

    @property
    def fused(self) -> bool:
        """Whether :meth:`fuse` is in effect."""
        return self._fused_unet is not None

    def unfuse(self) -> None:
        """Run the U-Net as published again (drops the fused copy and its compiled form)."""
        object.__setattr__(self, "_fused_unet", None)

    def _apply(self, fn: Callable, recurse: bool = True) -> HarmonizationModel:
        super()._apply(fn, recurse)
        if self._fused_unet is not None:
            self._fused_unet._apply(fn, recurse)
        return self

    def train(self, mode: bool = True) -> HarmonizationModel:
        if mode:
            self.unfuse()
        return super().train(mode)

    def load_state_dict(self, *args: Any, **kwargs: Any) -> Any:
        self.unfuse()
        return super().load_state_dict(*args, **kwargs)

    # ------------------------------------------------------------------ inference
    def predict_target(self, x: torch.Tensor, dtype: torch.dtype | None = torch.float32) -> torch.Tensor:
        """The U-Net's S2-like reflectance for ``(B, 4, H, W)`` (the histogram target), same shape, in
        ``dtype`` (None: the U-Net's own, bfloat16 with ``precision="bf16"``)."""
        h, w = x.shape[-2:]
        unet_dtype = PRECISIONS[self.precision]
        padded = pad_to_multiple(x).contiguous(memory_format=torch.channels_last)
        chunks = padded.split(CPU_UNET_CHUNK) if x.device.type == "cpu" else (padded,)
        with torch.autocast(x.device.type, dtype=unet_dtype, enabled=unet_dtype != torch.float32):
            unet = self._fused_unet if self._fused_unet is not None else self.unet
            outs = [unet(chunk) for chunk in chunks]
        out = outs[0] if len(outs) == 1 else torch.cat(outs)
        return out[..., :h, :w].to(dtype or out.dtype).contiguous()

    def forward(
        self, x: torch.Tensor, valid: torch.Tensor | None = None, mode: str | None = None
    ) -> torch.Tensor:
        """Harmonize ``(B, 4, H, W)`` NAIP reflectance; ``valid`` ``(B, H, W)`` masks nodata out of the
        histograms (nodata pixels are returned unchanged)."""
        mode = self.mode if mode is None else mode
        if mode not in HARMONIZATION_MODES:
            raise ValueError(f"harmonization mode must be one of {HARMONIZATION_MODES}, got {mode!r}")
        if mode == "none":
            return x
        # bf16 targets stay bf16: their histogram over all 65,536 values replaces a sort, exactly
        return self.match(x, self.predict_target(x, dtype=None), valid, mode)

    def match(
        self, x: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None, mode: str = "global"
    ) -> torch.Tensor:
        """The histogram matching step alone: ``x`` takes ``target``'s histogram (``global`` or
        ``local``), with nodata as in :meth:`forward`."""
        if mode == "global":
            return self._match_global(x, target, valid, valid)
        return match_histograms_local(x, target, self.window, valid)

    def compile(self, fuse: bool = True, **kwargs: Any) -> None:
        """``torch.compile`` the U-Net and the global histogram matching, in place, for inference (the
        state dict is unchanged). Compiling takes tens of seconds on the first batch of each shape.

        With ``fuse`` (the default) the compiled U-Net is the fused copy (:meth:`fuse`), compiled with
        :data:`~sen2naip_hub.models.fusion.FAST_COMPILE_OPTIONS` unless ``options`` or ``mode`` are
        given: the weights are frozen into the compiled graph, so call :meth:`compile` again after
        changing them. ``fuse=False`` compiles the module as published. Other keywords go to
        ``torch.compile``.
        """
        if fuse:
            self.fuse()
            if "options" not in kwargs and "mode" not in kwargs:
                kwargs["options"] = dict(FAST_COMPILE_OPTIONS)
        (self._fused_unet if self._fused_unet is not None else self.unet).compile(**kwargs)
        self._match_global = torch.compile(
            match_histograms, **{k: v for k, v in kwargs.items() if k != "options"}
        )
