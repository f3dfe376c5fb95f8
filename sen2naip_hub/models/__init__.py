"""The degradation models: δ (:class:`BlurModel`), λ (:class:`HarmonizationModel`), e (:class:`NoiseModel`)
and the composite :class:`Degradation`.

Imported lazily (PEP 562): ``import sen2naip_hub.models.blur`` or ``...noise`` needs only torch, numpy,
safetensors and huggingface_hub; the U-Net's ``segmentation_models_pytorch`` is imported only when
:class:`HarmonizationModel` or :class:`Degradation` is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    "BlurModel": "sen2naip_hub.models.blur",
    "Degradation": "sen2naip_hub.models.degradation",
    "DegradationOutput": "sen2naip_hub.models.degradation",
    "HarmonizationModel": "sen2naip_hub.models.harmonization",
    "NoiseModel": "sen2naip_hub.models.noise",
}
__all__ = ["BlurModel", "Degradation", "DegradationOutput", "HarmonizationModel", "NoiseModel"]

if TYPE_CHECKING:
    from sen2naip_hub.models.blur import BlurModel
    from sen2naip_hub.models.degradation import Degradation, DegradationOutput
    from sen2naip_hub.models.harmonization import HarmonizationModel
    from sen2naip_hub.models.noise import NoiseModel


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
