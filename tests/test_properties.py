"""Property-based tests (hypothesis): random shapes, dtypes, value ranges, nodata masks and band names give
either a valid output whose nodata spreads no further than the PSF, or a typed one-line error; never a
traceback, and never NaN in a valid pixel. Seeded (``derandomize``) and small, so CI is stable and fast.
"""

from __future__ import annotations

import tempfile
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sen2naip_hub.cli import main
from sen2naip_hub.errors import InvalidImageError
from sen2naip_hub.models import BlurModel, Degradation, HarmonizationModel, NoiseModel
from sen2naip_hub.models.blur import DOWNSAMPLE_MODES
from sen2naip_hub.models.noise import published_noise_axes
from sen2naip_hub.sensors import NAIP, SENTINEL2, reflectance_to_counts

SCALE = 4
KERNEL = 13
PROPERTY_SETTINGS = settings(
    max_examples=25,
    deadline=timedelta(seconds=20),
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def psf_reach(hr_invalid: torch.Tensor) -> torch.Tensor:
    """``(B, h, w)`` True for LR pixels whose 4×4 footprint lies within the kernel's half-width of an
    invalid HR pixel ``(B, H, W)``: where nodata may spread, and nowhere else."""
    spread = F.max_pool2d(hr_invalid[:, None].float(), KERNEL, stride=1, padding=KERNEL // 2)
    return F.max_pool2d(spread, SCALE, stride=SCALE)[:, 0] > 0


@st.composite
def images_with_nodata(draw, min_side: int = SCALE, max_side: int = 40) -> torch.Tensor:
    """``(B, 4, H, W)`` float32 reflectance in [0, 1] with NaN pixels (all bands) or single-band NaNs."""
    batch = draw(st.integers(1, 2))
    height, width = draw(st.integers(min_side, max_side)), draw(st.integers(min_side, max_side))
    values = draw(hnp.arrays(np.float32, (batch, 4, height, width), elements=st.floats(0, 1, width=32)))
    mask = draw(
        hnp.arrays(
            np.bool_,
            (batch, height, width),
            elements=st.booleans() if draw(st.booleans()) else st.just(False),
        )
    )
    x = torch.from_numpy(values)
    x[torch.from_numpy(mask)[:, None].expand_as(x)] = torch.nan
    if draw(st.booleans()):  # one band missing somewhere
        b, r, c = (
            draw(st.integers(0, batch - 1)),
            draw(st.integers(0, height - 1)),
            draw(st.integers(0, width - 1)),
        )
        x[b, draw(st.integers(0, 3)), r, c] = torch.nan
    return x


@pytest.fixture(scope="module")
def noise_model() -> NoiseModel:
    edges, values = published_noise_axes()
    table = torch.rand(len(edges) + 1, len(values), generator=torch.Generator().manual_seed(0))
    return NoiseModel.from_table(table, edges, values)


@PROPERTY_SETTINGS
@given(x=images_with_nodata(), mode=st.sampled_from(DOWNSAMPLE_MODES), conv=st.booleans())
def test_blur_nodata_stays_within_the_psf(x, mode, conv, monkeypatch):
    from sen2naip_hub.models import blur as blur_module

    monkeypatch.setattr(blur_module, "OPERATOR_MAX_SIDE", 4 if conv else 1024)
    out = BlurModel(downsample=mode)(x)
    assert out.shape == (*x.shape[:2], x.shape[2] // SCALE, x.shape[3] // SCALE)
    reach = psf_reach(torch.isnan(x).any(dim=1))
    nan = torch.isnan(out).any(dim=1)
    assert not (nan & ~reach).any()
    assert torch.isfinite(out.permute(1, 0, 2, 3)[:, ~reach]).all()


@PROPERTY_SETTINGS
@given(x=images_with_nodata(), seed=st.integers(0, 2**31 - 1))
def test_degradation_masks_exactly_the_psf_reach_or_says_all_is_nodata(x, seed, noise_model):
    model = Degradation(HarmonizationModel(mode="none"), BlurModel(), noise_model)
    invalid = torch.isnan(x).any(dim=1)
    if not torch.isfinite(x).any():
        with pytest.raises(InvalidImageError, match="nodata"):
            model(x, generator=torch.Generator().manual_seed(seed))
        return
    lr = model(x, generator=torch.Generator().manual_seed(seed)).lr
    reach = psf_reach(invalid)
    assert torch.equal(torch.isnan(lr).any(dim=1), reach)
    assert torch.isfinite(lr.permute(1, 0, 2, 3)[:, ~reach]).all()


@PROPERTY_SETTINGS
@given(
    values=hnp.arrays(np.float64, st.integers(1, 64), elements=st.floats(allow_nan=True, allow_infinity=True))
)
def test_dn_rule_keeps_nodata_apart_from_every_valid_value(values):
    for sensor in (SENTINEL2, NAIP):
        counts = reflectance_to_counts(values, sensor)
        finite = np.isfinite(values)
        assert counts.dtype == np.dtype(sensor.dtype)
        assert (counts[~finite] == sensor.nodata).all() and (counts[finite] >= 1).all()
        inside = finite & (values >= 0.5 / sensor.dn_scale) & (values <= 1)
        assert (
            np.abs(counts[inside] / sensor.dn_scale - values[inside]).max(initial=0) <= 0.5 / sensor.dn_scale
        )


# ---------------------------------------------------------------------------------------- the CLI
@pytest.fixture(scope="module")
def cli_model(tmp_path_factory, noise_model) -> Path:
    folder = tmp_path_factory.mktemp("prop") / "model"
    torch.manual_seed(0)
    Degradation(HarmonizationModel(encoder="resnet18"), BlurModel(), noise_model).save_pretrained(folder)
    return folder


@st.composite
def geotiffs(draw) -> dict:
    """What to write: pixels of a random dtype and range, band count, names, nodata tag or mask."""
    dtype = draw(st.sampled_from(["uint8"] * 4 + ["float32"] * 3 + ["uint16"]))
    count = draw(st.sampled_from([4] * 8 + [3, 5]))
    side = st.integers(4, 36) if draw(st.integers(0, 9)) else st.integers(1, 3)
    height, width = draw(side), draw(side)
    if dtype == "float32":
        top = draw(st.sampled_from([1.0, 1.0, 1.5]))
        low = draw(st.sampled_from([0.0, 0.0, -0.25]))
        elements = st.floats(low, top, width=32)
        if draw(st.booleans()):
            elements = elements | st.just(float("nan"))
    else:
        elements = st.integers(0, int(np.iinfo(dtype).max) if draw(st.booleans()) else 9)
    data = draw(hnp.arrays(dtype, (count, height, width), elements=elements))
    names = draw(st.lists(st.text(min_size=0, max_size=6), min_size=count, max_size=count))
    nodata = draw(st.sampled_from([None, None, 0, 7]))
    mask = draw(hnp.arrays(np.bool_, (height, width))) if nodata is None and draw(st.booleans()) else None
    harmonization = draw(st.sampled_from(["none", "global", "local"]))
    return dict(data=data, names=names, nodata=nodata, mask=mask, harmonization=harmonization)


def _write(path: Path, spec: dict) -> None:
    count, height, width = spec["data"].shape
    profile = dict(driver="GTiff", count=count, height=height, width=width, dtype=spec["data"].dtype)
    if spec["nodata"] is not None:
        profile["nodata"] = spec["nodata"]
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as dst:
        dst.write(spec["data"])
        for index, name in enumerate(spec["names"], start=1):
            dst.set_band_description(index, name)
        if spec["mask"] is not None:
            dst.write_mask(np.where(spec["mask"], 0, 255).astype(np.uint8))


@settings(PROPERTY_SETTINGS, max_examples=30)  # a light encoder: the U-Net's weights do not matter here
@given(spec=geotiffs(), seed=st.integers(0, 1000))
def test_degrade_cli_gives_a_valid_cog_or_one_typed_line(spec, seed, cli_model, capfd):
    from sen2naip_hub.io import read_raster

    with tempfile.TemporaryDirectory() as tmp:
        source, out = Path(tmp) / "in.tif", Path(tmp) / "out" / "lr.tif"
        _write(source, spec)
        capfd.readouterr()
        args = ["degrade", str(source), str(out), "--model", str(cli_model), "--seed", str(seed)]
        code = main([*args, "--harmonization", spec["harmonization"], "--tile", "16"])
        err = capfd.readouterr().err.strip().splitlines()
        event(f"exit {code}: " + (err[0].split(": ")[-1][:40] if code else "written"))
        if code != 0:
            assert code == 1 and len(err) == 1 and err[0].startswith("error: "), err
            assert not out.exists()
            return
        hr_invalid = torch.from_numpy(~read_raster(source).valid)[None]
        with rasterio.open(out) as lr:
            counts = lr.read()
            assert lr.descriptions == SENTINEL2.all_bands and lr.nodata == 0
    height, width = spec["data"].shape[1:]
    assert counts.shape == (4, height // SCALE, width // SCALE)
    nodata = torch.from_numpy((counts == 0).any(axis=0))
    assert torch.equal(nodata, psf_reach(hr_invalid)[0])
    assert ((counts == 0).all(axis=0) == (counts == 0).any(axis=0)).all()  # nodata in every band or none
