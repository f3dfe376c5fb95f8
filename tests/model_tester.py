"""One tester for every Hub model (as diffusers' ``ModelTesterMixin``): each model's test class sets how
to build a small model and an input, and inherits the same save/load, determinism, dtype, device and
``from_pretrained`` keyword tests.

A test class sets :attr:`model_class`, :attr:`loaded_classes` (the classes whose ``_from_pretrained``
reads weights: the model itself, or a composite's parts), :attr:`weight_files`, :attr:`uses_generator`
and implements :meth:`make_model`, :meth:`make_input` and :meth:`run`.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import ClassVar

import pytest
import safetensors.torch
import torch

from sen2naip_hub.errors import InvalidModelError
from sen2naip_hub.models.hub import HubModel

SEED = 0


def _as_json(config: dict | None) -> object:
    """A config as config.json holds it (tuples become lists)."""
    return json.loads(json.dumps(config, sort_keys=True))


class HubModelTesterMixin:
    model_class: ClassVar[type[HubModel]]
    loaded_classes: ClassVar[tuple[type[HubModel], ...]]
    #: safetensors files a saved repo holds, relative to its folder
    weight_files: ClassVar[tuple[str, ...]] = ("model.safetensors",)
    #: whether the output depends on the generator (then another seed must change it)
    uses_generator: ClassVar[bool] = False

    def make_model(self) -> HubModel:
        """A small model whose weights and config differ from the defaults."""
        raise NotImplementedError

    def make_input(self, dtype: torch.dtype = torch.float32, device: str = "cpu") -> torch.Tensor:
        """A small seeded input of ``dtype`` on ``device``."""
        raise NotImplementedError

    def run(self, model: HubModel, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The model's output for ``x``, drawing any randomness from ``generator``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ fixtures
    @pytest.fixture(scope="class")
    def model(self) -> HubModel:
        torch.manual_seed(SEED)  # untrained weights are random: make them the same on every run
        return self.make_model().eval()

    @pytest.fixture(scope="class")
    def saved(self, model, tmp_path_factory) -> Path:
        folder = tmp_path_factory.mktemp(self.model_class.__name__) / "repo"
        model.save_pretrained(folder)
        return folder

    def _output(self, model: HubModel, x: torch.Tensor, seed: int = SEED) -> torch.Tensor:
        with torch.inference_mode():
            return self.run(model, x, torch.Generator(device=x.device).manual_seed(seed))

    # ------------------------------------------------------------------ tests
    def test_save_pretrained_writes_config_and_safetensors_only(self, saved):
        assert (saved / "config.json").is_file() and (saved / "README.md").is_file()
        for name in self.weight_files:
            assert (saved / name).is_file(), name
            assert {p.name for p in (saved / name).parent.iterdir()} == {
                "config.json",
                "model.safetensors",
                "README.md",
            }
        assert not [p for p in saved.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt")]

    def test_round_trip_keeps_config_weights_and_outputs(self, model, saved):
        loaded = self.model_class.from_pretrained(saved)
        assert type(loaded) is self.model_class
        assert _as_json(loaded._hub_mixin_config) == _as_json(model._hub_mixin_config)
        expected, found = model.state_dict(), loaded.state_dict()
        assert expected.keys() == found.keys()
        for key, value in expected.items():
            assert found[key].dtype == value.dtype and torch.equal(found[key], value), key
        x = self.make_input()
        assert torch.equal(self._output(model, x), self._output(loaded, x))

    def test_same_generator_seed_same_output(self, model):
        x = self.make_input()
        first = self._output(model, x, seed=3)
        assert torch.equal(first, self._output(model, x, seed=3))
        if self.uses_generator:
            assert not torch.equal(first, self._output(model, x, seed=4))

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    def test_output_keeps_the_input_dtype_and_device(self, model, dtype):
        converted = copy.deepcopy(model).to(dtype)
        x = self.make_input(dtype)
        out = self._output(converted, x)
        assert out.dtype == dtype and out.device == x.device
        assert torch.isfinite(out).all()

    def test_loaded_model_is_on_map_location_in_eval_mode(self, saved):
        loaded = self.model_class.from_pretrained(saved, map_location="cpu")
        assert not loaded.training
        assert all(t.device.type == "cpu" for t in [*loaded.parameters(), *loaded.buffers()])

    def test_from_pretrained_keywords_reach_every_loader(self, saved, monkeypatch):
        seen: dict[str, dict] = {}
        original = HubModel._from_pretrained.__func__

        def spy(cls, **kwargs):
            seen[cls.__name__] = kwargs
            return original(cls, **kwargs)

        for cls in self.loaded_classes:
            monkeypatch.setattr(cls, "_from_pretrained", classmethod(spy))
        self.model_class.from_pretrained(saved, map_location="cpu", strict=False)
        assert set(seen) == {cls.__name__ for cls in self.loaded_classes}
        for name, kwargs in seen.items():
            assert kwargs["map_location"] == "cpu" and kwargs["strict"] is False, name

    def test_strict_refuses_a_missing_tensor_unless_false(self, saved, tmp_path):
        import shutil

        copy_dir = tmp_path / "repo"
        shutil.copytree(saved, copy_dir)
        weights = copy_dir / self.weight_files[0]
        state = safetensors.torch.load_file(weights)
        dropped = sorted(state)[0]
        safetensors.torch.save_file({k: v for k, v in state.items() if k != dropped}, weights)
        with pytest.raises(InvalidModelError, match=dropped.split(".")[0]):
            self.model_class.from_pretrained(copy_dir)
        self.model_class.from_pretrained(copy_dir, strict=False)

    @pytest.mark.gpu
    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
    def test_cuda_map_location_and_output_device(self, model, saved):
        loaded = self.model_class.from_pretrained(saved, map_location="cuda")
        assert all(t.device.type == "cuda" for t in [*loaded.parameters(), *loaded.buffers()])
        x = self.make_input(device="cuda")
        tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32
        try:
            out, again = self._output(loaded, x), self._output(loaded, x)
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
        assert out.device.type == "cuda"
        if self.uses_generator:  # a CUDA generator draws another stream than a CPU one of the same seed
            assert torch.equal(out, again) and torch.isfinite(out).all()
        else:
            assert torch.allclose(out.cpu(), self._output(model, self.make_input()), atol=1e-4, rtol=0)
