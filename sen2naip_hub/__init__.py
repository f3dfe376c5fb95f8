"""sen2naip-hub: SEN2NAIP's learned NAIP → Sentinel-2 degradation as batched Hugging Face Hub models."""

from sen2naip_hub.models import BlurModel, Degradation, DegradationOutput, HarmonizationModel, NoiseModel

__version__ = "0.1.0"
__all__ = ["BlurModel", "Degradation", "DegradationOutput", "HarmonizationModel", "NoiseModel", "__version__"]
