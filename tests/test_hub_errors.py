"""Loading models: only a missing folder, repo or file is "not found"; a bad config is its own error."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import write_geotiff

from sen2naip_hub.errors import InvalidModelError, ModelNotFoundError
from sen2naip_hub.models import BlurModel, Degradation, NoiseModel


def test_bad_config_value_is_not_reported_as_not_found(tmp_path):
    BlurModel().save_pretrained(tmp_path / "blur")
    config = tmp_path / "blur" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "downsample": "lanczos"}))
    with pytest.raises(InvalidModelError, match=r"blur.*'lanczos'") as caught:
        BlurModel.from_pretrained(tmp_path / "blur")
    assert not isinstance(caught.value, ModelNotFoundError)
    assert "not a local model folder" not in str(caught.value)


def test_weights_that_do_not_fit_the_config_are_an_invalid_model(tmp_path):
    NoiseModel(table_shape=(5, 7)).save_pretrained(tmp_path / "noise")
    config = tmp_path / "noise" / "config.json"
    config.write_text(json.dumps({"mode": "table", "table_shape": [101, 101]}))
    with pytest.raises(InvalidModelError, match="noise"):
        NoiseModel.from_pretrained(tmp_path / "noise")


def test_missing_folder_repo_and_files_are_not_found(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no such model folder"):
        BlurModel.from_pretrained(tmp_path / "missing")
    with pytest.raises(ModelNotFoundError, match="nobody/no-such-model"):
        BlurModel.from_pretrained("nobody/no-such-model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match=r"no config\.json"):
        BlurModel.from_pretrained(tmp_path / "empty")
    BlurModel().save_pretrained(tmp_path / "blur")
    (tmp_path / "blur" / "model.safetensors").unlink()
    with pytest.raises(ModelNotFoundError, match=r"no model\.safetensors"):
        BlurModel.from_pretrained(tmp_path / "blur")


def test_composite_errors_are_not_wrapped_twice(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError) as caught:
        Degradation.from_pretrained(tmp_path / "empty")
    assert str(caught.value).count("empty") == 1, str(caught.value)


def test_cli_model_folder_without_a_model_prints_exactly_one_line(tmp_path):
    """In a fresh process, so that a logger's stray warning on stderr would be seen."""
    naip = write_geotiff(tmp_path / "in.tif", np.ones((4, 16, 16), np.uint8))
    (tmp_path / "empty").mkdir()
    model = ["--model", str(tmp_path / "empty")]
    result = subprocess.run(
        [sys.executable, "-m", "sen2naip_hub.cli", "degrade", str(naip), str(tmp_path / "lr.tif"), *model],
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "config.json" in lines[0]
