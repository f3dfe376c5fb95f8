"""The four Hub models through the shared :class:`HubModelTesterMixin` (tests/model_tester.py)."""

from __future__ import annotations

import torch
from model_tester import HubModelTesterMixin

from sen2naip_hub.models import BlurModel, Degradation, HarmonizationModel, NoiseModel
from sen2naip_hub.models.noise import published_noise_axes


def _image(dtype: torch.dtype, device: str, size: int = 32) -> torch.Tensor:
    x = torch.rand(2, 4, size, size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return (x * 0.6).to(dtype=dtype, device=device)


#: A light U-Net encoder: the Hub mechanics do not depend on it, and it runs ~8x faster on a CPU than the
#: published efficientnet-b1 (covered with the published weights in test_harmonization.py).
TEST_ENCODER = "resnet18"


def _noise() -> NoiseModel:
    edges, values = published_noise_axes()
    table = torch.rand(len(edges) + 1, len(values), generator=torch.Generator().manual_seed(2))
    return NoiseModel.from_table(table, edges, values)


class TestBlurModel(HubModelTesterMixin):
    model_class = BlurModel
    loaded_classes = (BlurModel,)

    def make_model(self):
        return BlurModel(sigmas=(2.2, 3.6, 2.7, 4.1), kernel="sigmoid", downsample="bicubic")

    def make_input(self, dtype=torch.float32, device="cpu"):
        return _image(dtype, device)

    def run(self, model, x, generator):
        return model(x)


class TestNoiseModel(HubModelTesterMixin):
    model_class = NoiseModel
    loaded_classes = (NoiseModel,)
    uses_generator = True

    def make_model(self):
        return _noise()

    def make_input(self, dtype=torch.float32, device="cpu"):
        return _image(dtype, device, size=16)

    def run(self, model, x, generator):
        return model(x, generator)


class TestHarmonizationModel(HubModelTesterMixin):
    model_class = HarmonizationModel
    loaded_classes = (HarmonizationModel,)

    def make_model(self):
        return HarmonizationModel(mode="local", window=16, encoder=TEST_ENCODER)

    def make_input(self, dtype=torch.float32, device="cpu"):
        return _image(dtype, device)

    def run(self, model, x, generator):
        return model(x)


class TestDegradation(HubModelTesterMixin):
    model_class = Degradation
    loaded_classes = (HarmonizationModel, BlurModel, NoiseModel)
    weight_files = ("blur/model.safetensors", "harmonization/model.safetensors", "noise/model.safetensors")
    uses_generator = True

    def make_model(self):
        return Degradation(
            HarmonizationModel(window=16, encoder=TEST_ENCODER),
            BlurModel(sigmas=(1.5, 2.0, 2.5, 3.0)),
            _noise(),
        )

    def make_input(self, dtype=torch.float32, device="cpu"):
        return _image(dtype, device)

    def run(self, model, x, generator):
        return model(x, generator=generator).lr
