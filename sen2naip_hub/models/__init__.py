"""The degradation models: δ (:class:`BlurModel`), λ (:class:`HarmonizationModel`), e (:class:`NoiseModel`)
and the composite :class:`Degradation`."""

from sen2naip_hub.models.blur import BlurModel
from sen2naip_hub.models.degradation import Degradation, DegradationOutput
from sen2naip_hub.models.harmonization import HarmonizationModel
from sen2naip_hub.models.noise import NoiseModel

__all__ = ["BlurModel", "Degradation", "DegradationOutput", "HarmonizationModel", "NoiseModel"]
