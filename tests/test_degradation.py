"""The composite: fidelity to the published pipeline, batching, seeds, nodata, Hub save/load/push."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest
import torch
from conftest import import_reference

from sen2naip_hub import Degradation
from sen2naip_hub.errors import InvalidImageError, ModelNotFoundError
from sen2naip_hub.models import BlurModel, HarmonizationModel, NoiseModel


@pytest.fixture(scope="module")
def degradation(reference_dir) -> Degradation:
    return Degradation.from_pretrained(reference_dir / "sen2naip-degradation")


def test_matches_published_pipeline_without_noise(degradation, naip_tiles):
    ref = import_reference()
    pipe = ref.pipe("naip_d", add_noise=False, params={"reflectance_method": ["unet_histogram_matching"]})
    with torch.no_grad():
        ours = degradation(naip_tiles[:2], noise=False, return_harmonized=True)
    for i in range(2):
        lr, hr = pipe.forward(naip_tiles[i])
        assert torch.allclose(ours.harmonized[i], hr[0].float(), atol=1 / 255, rtol=0)
        assert torch.allclose(ours.lr[i], lr[0].float(), atol=1 / 255, rtol=0)
        assert float((ours.lr[i] - lr[0].float()).abs().mean()) < 1e-5


def test_batch_equals_one_by_one(degradation, naip_tiles):
    with torch.no_grad():
        batch = degradation(naip_tiles, noise=False).lr
        singles = torch.cat([degradation(naip_tiles[i : i + 1], noise=False).lr for i in range(3)])
    # float32 convolutions pick batch-size-dependent algorithms: the U-Net differs by ~1e-5, the LR by less
    assert torch.allclose(batch, singles, atol=1e-5, rtol=0)


def test_push_to_hub_uploads_the_repo_layout(degradation):
    uploaded: dict[str, set[str]] = {}

    def fake_upload_folder(*, repo_id, folder_path, **kwargs):
        uploaded[repo_id] = {
            str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*") if p.is_file()
        }
        uploaded["commit_message"] = {kwargs["commit_message"]}
        return "https://huggingface.co/org/sen2naip-degradation/commit/0"

    with mock.patch("huggingface_hub.hub_mixin.HfApi") as api_cls:
        api = api_cls.return_value
        api.create_repo.return_value.repo_id = "org/sen2naip-degradation"
        api.upload_folder.side_effect = fake_upload_folder
        degradation.push_to_hub("org/sen2naip-degradation", commit_message="Add SEN2NAIP degradation")
    api.create_repo.assert_called_once_with(repo_id="org/sen2naip-degradation", private=None, exist_ok=True)
    expected = {"README.md", "config.json"} | {
        f"{part}/{name}"
        for part in ("harmonization", "blur", "noise")
        for name in ("README.md", "config.json", "model.safetensors")
    }
    assert uploaded["org/sen2naip-degradation"] == expected
    assert uploaded["commit_message"] == {"Add SEN2NAIP degradation"}


def test_model_card_has_hub_metadata_and_credits_source(reference_dir):
    card = (reference_dir / "sen2naip-harmonization" / "README.md").read_text()
    assert "library_name: sen2naip-hub" in card and "license: mit" in card
    assert "pipeline_tag: image-to-image" in card
    assert "opensr-degradation==1.0.1" in card and "MIT" in card


def test_nodata_stays_within_the_kernel_reach(naip_tiles):
    model = Degradation(blur=BlurModel(), noise=NoiseModel(mode="none"))
    x = naip_tiles[:1, :, :128, :128].clone()
    x[..., 60:64, 60:64] = torch.nan  # one LR pixel (15, 15) of nodata
    with torch.no_grad():
        out = model(x, harmonization="none", return_harmonized=True)
        clean = model(torch.nan_to_num(x), harmonization="none").lr
    lr_nan = torch.isnan(out.lr[0, 0])
    assert lr_nan[15, 15]
    reach = (model.blur.kernel_size // 2) // model.scale + 1  # LR pixels the PSF can carry nodata
    rows, cols = torch.nonzero(lr_nan, as_tuple=True)
    assert int((rows - 15).abs().max()) <= reach and int((cols - 15).abs().max()) <= reach
    far = torch.ones_like(lr_nan)
    far[15 - reach - 1 : 15 + reach + 2, 15 - reach - 1 : 15 + reach + 2] = False
    assert torch.isfinite(out.lr[0, :, far]).all()
    assert torch.equal(out.lr[0, :, far], clean[0, :, far])  # valid pixels beyond the reach untouched
    assert torch.isnan(out.harmonized[0, :, 60:64, 60:64]).all()


def test_nodata_is_left_out_of_the_harmonization_histograms(degradation, naip_tiles):
    x = naip_tiles[:1, :, :128, :128].clone()
    x[..., :, :32] = torch.nan
    with torch.no_grad():
        masked = degradation(x, noise=False, return_harmonized=True).harmonized
        assert torch.isfinite(masked[..., 32:]).all()
        expected = degradation.harmonization.forward(naip_tiles[:1, :, :128, 32:128])
    # the valid part is matched against the U-Net output of the valid part only (up to the U-Net's
    # dependence on the zero-filled context): the medians agree closely
    assert torch.allclose(masked[..., 32:].median(), expected.median(), atol=0.01)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: torch.rand(1, 3, 64, 64), r"\(B, 4, H, W\)"),
        (lambda: torch.rand(4, 64, 64), r"\(B, 4, H, W\)"),
        (lambda: torch.rand(1, 4, 3, 3), "smaller than one LR pixel"),
        (lambda: torch.rand(1, 4, 16, 16) * 2, r"\[0, 1\]"),
        (lambda: torch.full((1, 4, 16, 16), torch.nan), "every pixel is nodata"),
        (lambda: torch.randint(0, 255, (1, 4, 16, 16), dtype=torch.uint8), "float reflectance"),
    ],
)
def test_bad_inputs_fail_early(make, message):
    model = Degradation(harmonization=HarmonizationModel(mode="none"), noise=NoiseModel(mode="none"))
    with pytest.raises(InvalidImageError, match=message):
        model(make())


def test_unknown_model_path_or_repo_id(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no such model folder"):
        Degradation.from_pretrained(tmp_path / "missing")
    with pytest.raises(ModelNotFoundError, match="nobody/no-such-model"):
        Degradation.from_pretrained("nobody/no-such-model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="not a Degradation repo"):
        Degradation.from_pretrained(tmp_path / "empty")
