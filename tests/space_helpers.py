"""Shared by the Space and publish tests: the app module, a tiny dataset from real NAIP, offline Hub.

The dataset's ``cross_sensor`` rows are **simulated** pairs (``source="simulated"``): their "real"
Sentinel-2 LR is the 4 × 4 block mean of the real NAIP tile times Sentinel-2-like band gains
(``dataset_builder.cross_sensor.simulate.S2_LIKE_GAIN``). No co-located NAIP + Sentinel-2 pair exists
offline; the
app treats these rows exactly as real ones.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from conftest import NAIP_FILES, REPO_ROOT, offline_hf
from rasterio.windows import Window

from dataset_builder.core.records import PairRecord
from dataset_builder.core.splits import spatial_roi_id
from dataset_builder.cross_sensor.simulate import S2_LIKE_GAIN
from dataset_builder.write.repo import write_dataset
from sen2naip_hub.io import lr_transform, read_raster
from sen2naip_hub.sensors import SCALE_FACTOR, reflectance_to_s2

SPACE_DIR = REPO_ROOT / "spaces" / "sen2naip-degradation"
ROI_SIZE = 484  # SEN2NAIP's HR ROI size in pixels


def load_app() -> ModuleType:
    """``spaces/sen2naip-degradation/app.py`` as a module (``spaces/`` is not a package)."""
    if "sen2naip_space_app" in sys.modules:
        return sys.modules["sen2naip_space_app"]
    spec = importlib.util.spec_from_file_location("sen2naip_space_app", SPACE_DIR / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _block_mean(data: np.ndarray) -> np.ndarray:
    c, h, w = data.shape
    return data.reshape(c, h // SCALE_FACTOR, SCALE_FACTOR, w // SCALE_FACTOR, SCALE_FACTOR).mean(axis=(2, 4))


def roi_records(n_dates: int = 2, size: int = ROI_SIZE) -> dict[str, list[PairRecord]]:
    """One ``size`` px ROI (top-left of the sample's footprint) on ``n_dates`` dates, both configs."""
    paths = NAIP_FILES[:n_dates]
    if len(paths) < n_dates:
        pytest.skip("real NAIP sample not found in ../shared/sample/naip")
    gains = np.asarray(S2_LIKE_GAIN, dtype=np.float32)[:, None, None]
    rows: dict[str, list[PairRecord]] = {"cross_sensor": [], "synthetic": []}
    for path in paths:
        raster = read_raster(path, window=Window(0, 0, size, size))
        hr = np.nan_to_num(raster.data)
        date = dt.datetime.strptime(path.stem.rsplit("_", 1)[-1], "%Y%m%d").date()
        common = {
            "roi_id": spatial_roi_id(raster.crs, raster.transform, size, size),
            "hr": reflectance_to_s2(hr),
            "crs": raster.crs.to_wkt(),
            "hr_transform": raster.transform.to_gdal(),
            "lr_transform": lr_transform(raster.transform).to_gdal(),
            "hr_date": date,
            "qa1": math.nan,
            "qa2": math.nan,
            "shift_x": 0.0,
            "shift_y": 0.0,
            "source": "simulated",
        }
        real_like = reflectance_to_s2(_block_mean(hr) * gains)
        rows["cross_sensor"].append(
            PairRecord(**{**common, "lr": real_like, "lr_date": date, "degradation_model": None})
        )
        rows["synthetic"].append(
            PairRecord(
                **{
                    **common,
                    "lr": reflectance_to_s2(_block_mean(hr)),
                    "lr_date": None,
                    "degradation_model": "tests/block-mean-x4",
                }
            )
        )
    return rows


def make_dataset(out: Path, repo_id: str = "sen2naip", n_dates: int = 2) -> Path:
    """Write the tiny two-config dataset to ``out`` (parquet shards + card) and return ``out``."""
    write_dataset(roi_records(n_dates), out, repo_id=repo_id)
    return out


@contextmanager
def launched_app(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[object, Path]]:
    """The Space launched in-process, offline, on a tiny dataset: yields ``(demo, dataset folder)``."""
    from sen2naip_hub import Degradation

    app = load_app()
    with pytest.MonkeyPatch.context() as mp:
        offline_hf(mp, tmp_path_factory.mktemp("hf_home"))
        dataset = make_dataset(tmp_path_factory.mktemp("data") / "sen2naip")
        demo = app.build_demo(Degradation.from_pretrained(model_dir), dataset)
        demo.queue().launch(prevent_thread_lock=True, quiet=True)
        try:
            yield demo, dataset
        finally:
            demo.close()
