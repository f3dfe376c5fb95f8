"""sen2naip-hub: SEN2NAIP's learned NAIP → Sentinel-2 degradation as batched Hugging Face Hub models.

The models are imported lazily, so light submodules (``sensors``, ``models.blur``, ``models.noise``)
work with torch and numpy alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["BlurModel", "Degradation", "DegradationOutput", "HarmonizationModel", "NoiseModel", "__version__"]

if TYPE_CHECKING:
    from sen2naip_hub.models import BlurModel, Degradation, DegradationOutput, HarmonizationModel, NoiseModel


def __getattr__(name: str) -> Any:
    if name in __all__:
        from sen2naip_hub import models

        return getattr(models, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
