"""The composite SEN2NAIP degradation I_LR = λ[δ(I_HR)] + e, in the published order: harmonize at HR
(λ), blur and downsample (δ), add noise (e). One Hub repo holds the three parts in subfolders
``harmonization/``, ``blur/`` and ``noise/`` plus a ``config.json`` of the composite's defaults.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from huggingface_hub import snapshot_download

from sen2naip_hub.errors import InvalidImageError, ModelNotFoundError
from sen2naip_hub.models.blur import BlurModel
from sen2naip_hub.models.harmonization import HarmonizationModel
from sen2naip_hub.models.hub import HubModel
from sen2naip_hub.models.noise import Generators, NoiseModel
from sen2naip_hub.sensors import N_BANDS

__all__ = ["COMPONENTS", "Degradation", "DegradationOutput"]

#: Subfolder of each part inside a composite repo, and its class.
COMPONENTS: dict[str, type[HubModel]] = {
    "harmonization": HarmonizationModel,
    "blur": BlurModel,
    "noise": NoiseModel,
}


@dataclass
class DegradationOutput:
    """``lr``: ``(B, 4, H/4, W/4)`` S2-like reflectance (NaN = nodata); ``harmonized``: the HR after λ."""

    lr: torch.Tensor
    harmonized: torch.Tensor | None = None

    def __iter__(self) -> Iterator[torch.Tensor | None]:
        yield self.lr
        yield self.harmonized


class Degradation(
    HubModel,
    tags=["sen2naip", "degradation", "super-resolution", "sentinel-2", "naip"],
):
    """SEN2NAIP's NAIP → Sentinel-2 degradation: λ (harmonization) → δ (blur + ×4 downsampling) → e (noise).

    Args:
        harmonization, blur, noise: the parts; defaults are the published blur, the published U-Net
            architecture with untrained weights and an empty noise table (which raises when noise is
            asked for); load the real ones with ``from_pretrained``.

    >>> model = Degradation(noise=NoiseModel(mode="none"))
    >>> out = model(torch.rand(2, 4, 64, 64), harmonization="none")
    >>> tuple(out.lr.shape)
    (2, 4, 16, 16)
    """

    def __init__(
        self,
        harmonization: HarmonizationModel | None = None,
        blur: BlurModel | None = None,
        noise: NoiseModel | None = None,
    ) -> None:
        super().__init__()
        self.harmonization = harmonization if harmonization is not None else HarmonizationModel()
        self.blur = blur if blur is not None else BlurModel()
        self.noise = noise if noise is not None else NoiseModel()
        self.eval()

    @property
    def scale(self) -> int:
        return self.blur.scale

    # ------------------------------------------------------------------ inference
    def forward(
        self,
        hr: torch.Tensor,
        *,
        generator: Generators = None,
        harmonization: str | None = None,
        noise: bool | str = True,
        return_harmonized: bool = False,
    ) -> DegradationOutput:
        """Degrade ``hr`` ``(B, 4, H, W)`` NAIP reflectance in [0, 1] (NaN = nodata).

        Args:
            generator: source of the noise; the same seed gives the same output. A sequence of
                generators, one per batch item, draws each item's noise from its own (the same as
                degrading the item alone; :func:`sen2naip_hub.models.noise.draw`).
            harmonization: override the harmonization mode (``global``, ``local``, ``none``).
            noise: ``True`` for the model's noise, ``False`` for none, or a mode name.
            return_harmonized: also return the harmonized HR.

        Nodata stays nodata: an LR pixel is NaN exactly when a nodata HR pixel lies within the reach of
        its blur and downsampling footprint; valid pixels beyond that reach are unaffected.
        """
        valid, all_valid = self._validate(hr)
        filled = hr if all_valid else torch.where(valid[:, None], hr, torch.zeros_like(hr))
        harmonized = self.harmonization(filled, None if all_valid else valid, mode=harmonization)
        lr = self.blur(harmonized)
        noise_mode = None if noise is True else ("none" if noise is False else noise)
        lr = self.noise(lr, generator, mode=noise_mode)
        if not all_valid:
            lr = torch.where(self.lr_valid(valid)[:, None], lr, torch.nan)
            harmonized = torch.where(valid[:, None], harmonized, torch.nan)
        return DegradationOutput(lr=lr, harmonized=harmonized if return_harmonized else None)

    def compile(self, fuse: bool = True, **kwargs: Any) -> None:
        """``torch.compile`` the parts that gain from it, in place, for inference: the harmonization's
        U-Net (fused, with frozen weights, unless ``fuse=False``) and histogram matching; see
        :meth:`HarmonizationModel.compile`. δ is two matrix products and e one lookup already."""
        self.harmonization.compile(fuse=fuse, **kwargs)

    def check_inputs(self, hr: torch.Tensor) -> None:
        """Fail early, naming the value found and what was expected."""
        self._validate(hr)

    def _validate(self, hr: torch.Tensor) -> tuple[torch.Tensor | None, bool]:
        """:meth:`check_inputs`; returns the ``(B, H, W)`` validity mask (None when all is valid) and
        whether all is valid. Valid input costs one reduction and one host sync; only input with
        nodata or bad values pays for the mask."""
        if not isinstance(hr, torch.Tensor) or hr.ndim != 4 or hr.shape[1] != N_BANDS:
            shape = tuple(hr.shape) if isinstance(hr, torch.Tensor) else type(hr).__name__
            raise InvalidImageError(f"expected a (B, {N_BANDS}, H, W) tensor (R, G, B, NIR), got {shape}")
        if not hr.is_floating_point():
            raise InvalidImageError(f"expected float reflectance in [0, 1], got dtype {hr.dtype}")
        if min(hr.shape[-2:]) < self.scale:
            raise InvalidImageError(
                f"image of {tuple(hr.shape[-2:])} px is smaller than one LR pixel ({self.scale} px)"
            )
        low, high = (float(v) for v in torch.stack(torch.aminmax(hr)).tolist())  # NaN if any NaN
        if low >= 0.0 and high <= 1.0:
            return None, True
        finite = torch.isfinite(hr)
        valid = finite.all(dim=1)
        low, high = torch.aminmax(torch.where(finite, hr, 0.5))
        any_valid, all_valid, low, high = torch.stack(
            [finite.any().to(hr.dtype), valid.all().to(hr.dtype), low, high]
        ).tolist()
        if not any_valid:
            raise InvalidImageError("every pixel is nodata (NaN)")
        if low < 0.0 or high > 1.0:
            raise InvalidImageError(
                f"float reflectance must lie in [0, 1], found values in [{low:.4g}, {high:.4g}]"
            )
        return valid, bool(all_valid)

    def lr_valid(self, hr_valid: torch.Tensor) -> torch.Tensor:
        """``(B, h, w)`` LR validity: False where a nodata HR pixel is within the blur's reach of the
        LR pixel's 4×4 footprint."""
        invalid = (~hr_valid)[:, None].to(torch.float32)
        size = self.blur.kernel_size
        reach = F.max_pool2d(invalid, size, stride=1, padding=size // 2)
        return F.max_pool2d(reach, self.scale, stride=self.scale)[:, 0] == 0

    # ------------------------------------------------------------------ Hub layout
    def _save_pretrained(self, save_directory: Path) -> None:
        for name in COMPONENTS:
            getattr(self, name).save_pretrained(save_directory / name)
        config = {"components": {name: name for name in COMPONENTS}, "scale": self.scale}
        (save_directory / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        map_location: str = "cpu",
        strict: bool = True,
        **model_kwargs: Any,
    ) -> Degradation:
        """Download (``revision``, ``cache_dir``, ``force_download``, ``token``, ``local_files_only``)
        the whole repo once, then load each part from its subfolder with ``map_location`` and
        ``strict``. Other keywords are an error: the parts' settings come from their config.json."""
        if model_kwargs:
            raise TypeError(
                f"Degradation.from_pretrained got unexpected keyword arguments {sorted(model_kwargs)} "
                "(it takes map_location, strict and the Hub download arguments)"
            )
        folder = model_id
        if not os.path.isdir(folder):
            folder = snapshot_download(
                repo_id=model_id,
                revision=revision,
                cache_dir=cache_dir,
                force_download=force_download,
                token=token,
                local_files_only=local_files_only,
            )
        parts = {}
        for name, part_cls in COMPONENTS.items():
            subfolder = os.path.join(folder, name)
            if not os.path.isdir(subfolder):
                raise ModelNotFoundError(f"{model_id}: not a Degradation repo (no {name}/ subfolder)")
            parts[name] = part_cls.from_pretrained(subfolder, map_location=map_location, strict=strict)
        return cls(**parts)
