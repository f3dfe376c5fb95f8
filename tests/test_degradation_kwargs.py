"""``Degradation.from_pretrained``: the Hub download arguments reach the snapshot, unknown keywords are an
error. (map_location and strict reaching every part: the shared tester, tests/test_hub_models.py.)"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest

from sen2naip_hub.models import Degradation, HarmonizationModel


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("deg") / "model"
    Degradation(harmonization=HarmonizationModel(mode="none")).save_pretrained(folder)
    return folder


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
