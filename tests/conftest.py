"""Shared fixtures. Tests run offline: HF_HUB_OFFLINE=1 and a temporary HF_HOME for every test."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = Path(os.environ.get("SEN2NAIP_SAMPLE_DIR", REPO_ROOT.parent / "shared" / "sample"))
NAIP_FILES = sorted((SAMPLE_DIR / "naip").glob("*.tif"))
TILE = 484  # SEN2NAIP's HR ROI size in pixels


def offline_hf(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """HF_HUB_OFFLINE and a temporary HF_HOME, in the environment and in the live values that
    ``huggingface_hub`` and ``datasets`` read once, at import."""
    import huggingface_hub
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HOME", str(home))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(home / "hub"))
    try:
        import datasets
    except ImportError:  # the GPU machine runs the `gpu` tests without the builder's dependencies
        return
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", home / "datasets")


@pytest.fixture(autouse=True)
def offline_hub(tmp_path, monkeypatch):
    """No test touches the network or the user's Hub cache."""
    offline_hf(monkeypatch, tmp_path / "hf_home")
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    if not NAIP_FILES:
        pytest.fail(f"the real sample imagery is missing: expected NAIP GeoTIFFs in {SAMPLE_DIR / 'naip'}")
    return SAMPLE_DIR


@pytest.fixture(scope="session")
def naip_tiles(request) -> torch.Tensor:
    """Real NAIP reflectance tiles (3, 4, 484, 484) from three dates of the sample; on the GPU machine
    (no rasterio there) from ``$SEN2NAIP_TILES_NPY`` (uint8 ``(N, 4, 484, 484)`` cut from the sample by
    ``benchmarks/bench_degradation.py --save-tiles``)."""
    path = os.environ.get("SEN2NAIP_TILES_NPY")
    if path:
        return torch.from_numpy(np.load(path)[:3, :, :TILE, :TILE].astype(np.float32) / 255)
    request.getfixturevalue("sample_dir")
    from sen2naip_hub.io import read_raster

    tiles = [torch.from_numpy(read_raster(path).data[:, :TILE, :TILE]) for path in NAIP_FILES[:3]]
    return torch.stack(tiles)


@pytest.fixture(scope="session")
def reference_dir(tmp_path_factory) -> Path:
    """The published weights converted once per session into Hub-layout folders."""
    from sen2naip_hub.convert import convert_reference

    out = tmp_path_factory.mktemp("models")
    convert_reference(out)
    return out


@pytest.fixture(scope="session")
def reference_unet():
    """The published TorchScript U-Net, loaded as the reference package loads it."""
    from sen2naip_hub.convert import reference_package_dir

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = torch.jit.load(
            str(reference_package_dir() / "naipd/models/model_unet.pt"), map_location="cpu"
        )
    return model.eval()


@pytest.fixture(scope="session")
def reference_noise_table() -> np.ndarray:
    from sen2naip_hub.convert import reference_package_dir

    table = torch.load(str(reference_package_dir() / "naipd/models/model_noise.pt"), weights_only=True)
    return table.numpy()


def write_geotiff(path: Path, data: np.ndarray, **profile) -> Path:
    """A small GeoTIFF of ``data`` ``(C, H, W)`` (no georeferencing unless ``profile`` gives it)."""
    import rasterio

    count, h, w = data.shape
    with rasterio.open(
        path, "w", driver="GTiff", count=count, height=h, width=w, dtype=data.dtype, **profile
    ) as dst:
        dst.write(data)
    return path


def import_reference():
    """``opensr_degradation`` (it warns about pkg_resources on import)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import opensr_degradation
        import opensr_degradation.naipd.blur
        import opensr_degradation.naipd.harmonization
        import opensr_degradation.naipd.noise
        import opensr_degradation.utils
    return opensr_degradation


@pytest.fixture(scope="session")
def build_setup(tmp_path_factory, reference_dir) -> dict:
    """A folder of 4 real NAIP dates and the converted published Degradation model."""
    from build_helpers import naip_folder

    root = tmp_path_factory.mktemp("build")
    return {"root": root, "naip": naip_folder(root), "model": reference_dir / "sen2naip-degradation"}


@pytest.fixture(scope="session")
def built(build_setup) -> dict:
    """One uninterrupted build of the small config: the reference the resume and fault tests compare to."""
    from build_helpers import digests, small_config, write_yaml

    from dataset_builder.build import build_dataset
    from dataset_builder.core.config import load_config

    root = build_setup["root"]
    out = root / "reference" / "sen2naip"
    config = load_config(
        write_yaml(root / "ref.yaml", small_config(build_setup["naip"], build_setup["model"], out))
    )
    with pytest.MonkeyPatch.context() as patch:
        offline_hf(patch, root / "hf_home")
        result = build_dataset(config, progress=False, echo=lambda _: None)
    return {"out": out, "result": result, "config": config, "digests": digests(out)}


def block_mean_record(tile, hr_date):
    """A ``PairRecord`` of a NAIP tile (``dataset_builder.core.tiling.Tile``) and its 4×4 block mean as the
    LR, marked simulated: rows for writer and reader tests that need no model."""
    import math

    from dataset_builder.core.records import PairRecord
    from dataset_builder.core.splits import spatial_roi_id
    from sen2naip_hub.io import lr_transform
    from sen2naip_hub.sensors import SCALE_FACTOR, reflectance_to_s2

    c, h, w = tile.data.shape
    lr = tile.data.reshape(c, h // SCALE_FACTOR, SCALE_FACTOR, w // SCALE_FACTOR, SCALE_FACTOR).mean(
        axis=(2, 4)
    )
    return PairRecord(
        roi_id=spatial_roi_id(tile.crs, tile.transform, h, w),
        hr=reflectance_to_s2(tile.data),
        lr=reflectance_to_s2(lr),
        crs=tile.crs.to_wkt(),
        hr_transform=tile.transform.to_gdal(),
        lr_transform=lr_transform(tile.transform).to_gdal(),
        hr_date=hr_date,
        lr_date=None,
        qa1=math.nan,
        qa2=math.nan,
        shift_x=0.0,
        shift_y=0.0,
        degradation_model="tests/block-mean-x4",
        source="simulated",
    )
