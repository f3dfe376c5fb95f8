"""The Space in-process through ``gradio_client``: a dataset ROI, uploaded GeoTIFF and PNG, bad uploads.

The dataset is the tiny one of :mod:`space_helpers` (real NAIP; *simulated* Sentinel-2 LR).
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from conftest import NAIP_FILES
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image
from rasterio.windows import Window
from space_helpers import ROI_SIZE, launched_app, load_app

from sen2naip_hub.io import lr_transform

app = load_app()
N_OUTPUTS = 7
pytestmark = [
    # gradio 6.31's queue still uses pandas options deprecated in pandas 3
    pytest.mark.filterwarnings("ignore:.*no_silent_downcasting:Warning"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated:Warning"),
    pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning"),
]


@pytest.fixture(scope="module")
def served(reference_dir, tmp_path_factory):
    """The app launched once for the module: ``(client, dataset folder)``."""
    with launched_app(reference_dir / "sen2naip-degradation", tmp_path_factory) as (demo, dataset):
        yield Client(demo.local_url, verbose=False), dataset


def _call(client: Client, source: str, roi: str | None = None, upload=None, **kw) -> tuple:
    out = client.predict(
        source,
        roi,
        handle_file(str(upload)) if upload else None,
        kw.get("harmonization", "global"),
        kw.get("noise", True),
        kw.get("seed", 0),
        api_name="/degrade",
    )
    assert len(out) == N_OUTPUTS
    return out


def _image_size(path: str) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def _first_roi(client: Client) -> str:
    info = client.view_api(return_format="dict", print_info=False)
    choices = info["named_endpoints"]["/degrade"]["parameters"][1]["type"]["enum"]
    assert choices, info
    return choices[0]


def _write_geotiff(path, data: np.ndarray, crs=None, transform: Affine | None = None) -> None:
    transform = Affine.identity() if transform is None else transform
    profile = {"driver": "GTiff", "count": data.shape[0], "height": data.shape[1], "width": data.shape[2]}
    profile |= {"dtype": data.dtype.name, "crs": crs, "transform": transform, "compress": "deflate"}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


def test_dataset_roi_gives_georeferenced_lr_and_comparison(served):
    client, _ = served
    roi = _first_roi(client)
    hr, harmonized, lr, real, plot, summary, geotiff = _call(client, app.SOURCE_ROI, roi)
    assert _image_size(hr) == _image_size(harmonized) == (ROI_SIZE, ROI_SIZE)
    assert _image_size(lr) == _image_size(real) == (ROI_SIZE // 4 * 4, ROI_SIZE // 4 * 4)
    assert plot is not None and "MAE" in summary and "spectral angle" in summary
    assert "**simulated**" in summary  # the tiny dataset's cross_sensor LR is simulated, and says so
    with rasterio.open(NAIP_FILES[0]) as naip, rasterio.open(geotiff) as out:
        assert out.count == 4 and out.dtypes[0] == "uint16"
        assert out.descriptions == ("B04", "B03", "B02", "B08")
        assert (out.height, out.width) == (ROI_SIZE // 4, ROI_SIZE // 4)
        assert out.crs == naip.crs
        assert out.transform.almost_equals(lr_transform(naip.transform))  # the ROI is the top-left crop
        values = out.read().astype(float) / 10000
    assert 0.0 < values.mean() < 0.5


def test_uploaded_geotiff_keeps_its_grid(served, tmp_path):
    client, _ = served
    window = Window(100, 60, 256, 200)
    with rasterio.open(NAIP_FILES[2]) as src:
        data, transform, crs = src.read(window=window), src.window_transform(window), src.crs
    path = tmp_path / "naip_crop.tif"
    _write_geotiff(path, data, crs, transform)
    hr, _, lr, real, plot, summary, geotiff = _call(client, app.SOURCE_UPLOAD, upload=path, noise=False)
    assert _image_size(hr) == (256, 200) and _image_size(lr) == (256, 200)
    assert real is None and plot is not None and "nothing to compare" in summary
    with rasterio.open(geotiff) as out:
        assert (out.count, out.height, out.width) == (4, 50, 64)
        assert out.crs == crs and out.transform.almost_equals(lr_transform(transform))
        assert out.res == (transform.a * 4, -transform.e * 4)


def test_uploaded_rgb_png_says_nir_is_missing(served, tmp_path):
    client, _ = served
    with rasterio.open(NAIP_FILES[3]) as src:
        rgb = src.read((1, 2, 3), window=Window(0, 0, 160, 128))
    path = tmp_path / "photo.png"
    Image.fromarray(rgb.transpose(1, 2, 0)).save(path)
    *_, summary, geotiff = _call(client, app.SOURCE_UPLOAD, upload=path, harmonization="none")
    assert "no NIR band" in summary and app.NIR_FILL in summary
    with rasterio.open(geotiff) as out:
        assert (out.count, out.height, out.width) == (4, 32, 40) and out.crs is None


def _bad_uploads(tmp_path) -> dict[str, tuple]:
    """``name: (path, expected message fragment)`` for each kind of bad upload."""
    three = tmp_path / "three_bands.tif"
    _write_geotiff(three, np.full((3, 32, 32), 100, np.uint8))
    big = tmp_path / "huge.tif"  # 6 megapixels of zeros: tiny on disk, refused from its header
    _write_geotiff(big, np.zeros((4, 2000, 3000), np.uint8))
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    fake_png = tmp_path / "fake.png"
    fake_png.write_text("not a png either")
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(NAIP_FILES[0].read_bytes()[:4096])  # a real NAIP GeoTIFF cut short
    fake_tif = tmp_path / "fake.tif"
    fake_tif.write_bytes(b"II*\x00garbage" * 10)
    return {
        "wrong band count": (three, "expected 4 bands"),
        "too many megapixels": (big, "megapixels"),
        "non-image": (text, "not a readable image"),
        "non-image png": (fake_png, "not a readable image"),
        "corrupt tiff": (corrupt, "corrupt or truncated"),
        "not a tiff": (fake_tif, "not a readable GeoTIFF"),
    }


def test_bad_uploads_give_a_message_and_the_app_keeps_serving(served, tmp_path):
    client, _ = served
    for kind, (path, fragment) in _bad_uploads(tmp_path).items():
        with pytest.raises(AppError) as info:
            _call(client, app.SOURCE_UPLOAD, upload=path)
        message = str(info.value)
        assert fragment in message, (kind, message)
        assert "Traceback" not in message and "/tmp/gradio" not in message, (kind, message)
    with pytest.raises(AppError, match="no file uploaded"):
        _call(client, app.SOURCE_UPLOAD)
    *_, summary, geotiff = _call(client, app.SOURCE_ROI, _first_roi(client))  # still serving
    assert "MAE" in summary and geotiff.endswith(".tif")


def test_same_seed_same_lr(served):
    client, _ = served
    roi = _first_roi(client)
    outputs = [_call(client, app.SOURCE_ROI, roi, seed=seed)[-1] for seed in (7, 7, 8)]
    lrs = [rasterio.open(path).read() for path in outputs]
    assert np.array_equal(lrs[0], lrs[1]) and not np.array_equal(lrs[0], lrs[2])


def test_compare_metrics():
    a = np.full((4, 3, 3), 0.2, np.float32)
    b = a * 2  # same spectra, twice as bright: MAE 0.2, angle 0
    metrics = app.compare(a, b)
    assert metrics["mae"] == pytest.approx(0.2) and metrics["spectral_angle_deg"] == pytest.approx(
        0, abs=1e-4
    )
    b[3] = 0.0
    b[:, 0, 0] = np.nan
    metrics = app.compare(a, b)
    assert metrics["pixels"] == 8
    expected = np.degrees(np.arccos(3 * 0.2 * 0.4 / (np.sqrt(4 * 0.04) * np.sqrt(3 * 0.16))))
    assert metrics["spectral_angle_deg"] == pytest.approx(expected, rel=1e-5)


def test_repo_ids_come_from_env_then_local_then_repos_json(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SEN2NAIP_MODEL", raising=False)
    monkeypatch.delenv("SEN2NAIP_DATASET", raising=False)
    repos = app.hub_repos()
    assert app.dataset_source() == repos.get("dataset")
    (tmp_path / "sen2naip").mkdir()
    assert app.dataset_source() == "sen2naip"
    monkeypatch.setenv("SEN2NAIP_DATASET", "someone/else")
    monkeypatch.setenv("SEN2NAIP_MODEL", "someone/model")
    assert app.dataset_source() == "someone/else" and app.model_source() == "someone/model"
