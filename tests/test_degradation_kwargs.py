"""``Degradation.from_pretrained`` passes its keyword arguments on to its parts and to the download."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest
import torch

from sen2naip_hub.models import Degradation, HarmonizationModel
from sen2naip_hub.models.degradation import COMPONENTS
from sen2naip_hub.models.hub import HubModel


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("deg") / "model"
    Degradation(harmonization=HarmonizationModel(mode="none")).save_pretrained(folder)
    return folder


def _spy_parts(monkeypatch) -> dict[str, dict]:
    """Record the keyword arguments each part's ``_from_pretrained`` receives."""
    seen: dict[str, dict] = {}
    original = HubModel._from_pretrained.__func__

    def spy(cls, **kwargs):
        seen[cls.__name__] = kwargs
        return original(cls, **kwargs)

    for part in COMPONENTS.values():
        monkeypatch.setattr(part, "_from_pretrained", classmethod(spy))
    return seen


def test_map_location_and_strict_reach_every_part(saved, monkeypatch):
    seen = _spy_parts(monkeypatch)
    model = Degradation.from_pretrained(saved, map_location="cpu", strict=False)
    assert set(seen) == {cls.__name__ for cls in COMPONENTS.values()}
    for name, kwargs in seen.items():
        assert kwargs["map_location"] == "cpu" and kwargs["strict"] is False, name
    assert all(p.device == torch.device("cpu") for p in model.parameters())


def test_strict_false_loads_parts_with_missing_tensors(saved, tmp_path):
    import shutil

    import safetensors.torch

    copy = tmp_path / "model"
    shutil.copytree(saved, copy)
    weights = copy / "blur" / "model.safetensors"
    state = safetensors.torch.load_file(weights)
    safetensors.torch.save_file({k: v for k, v in state.items() if k != "kernels"}, weights)
    with pytest.raises(Exception, match="kernels"):
        Degradation.from_pretrained(copy)
    model = Degradation.from_pretrained(copy, strict=False)
    assert torch.equal(model.blur.kernels, Degradation().blur.kernels)


def test_hub_download_arguments_reach_the_snapshot(saved, tmp_path):
    config = str(saved / "config.json")
    with (
        mock.patch("huggingface_hub.hub_mixin.hf_hub_download", return_value=config),
        mock.patch("sen2naip_hub.models.degradation.snapshot_download", return_value=str(saved)) as download,
    ):
        Degradation.from_pretrained(
            "someone/sen2naip-degradation", revision="v1", cache_dir=tmp_path, force_download=True, token="t"
        )
    kwargs = download.call_args.kwargs
    assert kwargs["repo_id"] == "someone/sen2naip-degradation" and kwargs["revision"] == "v1"
    assert kwargs["cache_dir"] == tmp_path and kwargs["force_download"] is True and kwargs["token"] == "t"


def test_unknown_keyword_is_an_error_not_dropped(saved):
    with pytest.raises(TypeError, match="mapp_location"):
        Degradation.from_pretrained(saved, mapp_location="cpu")
