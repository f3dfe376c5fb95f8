"""Seeded miniature SEN2NAIP releases, in the published layouts, cut from the real sample NAIP.

The sample NAIP is real (``../shared/sample/naip``, 5 m); every LR here is **simulated** from it (4 × 4
block means of the reflectance plus seeded noise, as int32 DN) and each ROI's metadata says so
(``"fixture": "LR simulated from the sample NAIP"``). ROIs are :data:`HR_PX` px (LR ``HR_PX / 4``).

- :func:`write_cross_sensor` → ``cross-sensor.zip``: ``cross-sensor/ROI_XXXX/{hr.tif, lr.tif,
  metadata.json}``, with a truncated ``hr.tif`` (ROI_0003), a ROI without ``lr.tif`` (ROI_0004), a
  non-JSON ``metadata.json`` (ROI_0005) and an LR with DN above 65535 (ROI_0006); ROI_0000-0002 are
  readable, ROI_0001 fails the paper's QA, ROI_0001 and ROI_0002 touch.
- :func:`write_synthetic` → ``synthetic_01.zip``: ``<prefix>/ROI_XXXX/{early,late}/NN__<naip-id>.tif`` and a
  ``metadata.json`` holding ``sim_histograms`` in opensr-degradation 1.0.1's ``full_table`` layout.
- :func:`write_v2` → a legacy TACO written by the real writer (tacotoolbox 0.5.2 + pytortilla 0.5.1):
  one nested tortilla (``lr``, ``hr`` GeoTIFFs) per sample, with ``tortilla:data_split``.

Run ``python tests/data/releases/data.py OUT_DIR`` to write all three.
"""

from __future__ import annotations

import json
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

SAMPLE_NAIP = Path(__file__).resolve().parents[3].parent / "shared" / "sample" / "naip"
HR_PX = 64
SCALE = 4
FIXTURE_NOTE = "LR simulated from the sample NAIP (no real Sentinel-2 here)"
#: (row, col) of each cross-sensor ROI's top-left pixel in the sample; ROI 1 and 2 touch (side by side).
CROSS_SENSOR_CELLS = [(0, 0), (200, 200), (200, 264), (400, 0), (400, 200), (400, 400), (600, 0)]
#: (QA1, QA2) per cross-sensor ROI; ROI_0001 fails the paper's thresholds (QA1 ≤ 1, QA2 ≤ 2°).
CROSS_SENSOR_QA = [(0.4, 1.1), (1.6, 2.5), (0.9, 1.9), (0.3, 0.5), (0.2, 0.4), (0.5, 0.5), (0.1, 0.2)]
SIM_METHODS = [f"method{i:02d}" for i in range(13)]  # 13 methods; the authors' names are not needed here
BANDS = ("red", "green", "blue", "nir")


def naip_files() -> list[Path]:
    files = sorted(SAMPLE_NAIP.glob("*.tif"))
    if not files:
        raise FileNotFoundError(f"{SAMPLE_NAIP}: the real sample NAIP is missing")
    return files


def crop(path: Path, row: int, col: int, size: int = HR_PX) -> tuple[np.ndarray, rasterio.crs.CRS, object]:
    """``size`` × ``size`` uint8 NAIP pixels at (row, col), with CRS and transform."""
    with rasterio.open(path) as src:
        window = Window(col, row, size, size)
        return src.read(window=window), src.crs, src.window_transform(window)


def simulate_lr(hr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """int32 DN: 4 × 4 block means of the reflectance × 10000, plus seeded noise (a stand-in, labelled)."""
    refl = hr.astype(np.float64) / 255.0 * 10000.0
    size = hr.shape[-1]
    blocks = refl.reshape(4, size // SCALE, SCALE, size // SCALE, SCALE).mean(axis=(2, 4))
    return np.clip(np.rint(blocks + rng.normal(0, 20, blocks.shape)), 0, 65535).astype(np.int32)


def geotiff(data: np.ndarray, crs, transform) -> bytes:
    with rasterio.MemoryFile() as memory:
        profile = {
            "driver": "GTiff",
            "count": data.shape[0],
            "height": data.shape[1],
            "width": data.shape[2],
            "dtype": data.dtype.name,
            "crs": crs,
            "transform": transform,
        }
        with memory.open(**profile) as dst:
            dst.write(data)
        return memory.read()


def lr_transform(transform):
    return from_origin(transform.c, transform.f, transform.a * SCALE, -transform.e * SCALE)


def write_cross_sensor(out: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path = out / "cross-sensor.zip"
    files = naip_files()
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for i, (row, col) in enumerate(CROSS_SENSOR_CELLS):
            naip = files[i % len(files)]
            hr, crs, transform = crop(naip, row, col)
            lr = simulate_lr(hr, rng)
            if i == 6:
                lr[0, 0, 0] = 70000  # does not fit uint16: must be rejected, never wrapped
            folder = f"cross-sensor/ROI_{i:04d}"
            hr_bytes = geotiff(hr, crs, transform)
            zf.writestr(f"{folder}/hr.tif", hr_bytes[: len(hr_bytes) // 3] if i == 3 else hr_bytes)
            if i != 4:
                zf.writestr(f"{folder}/lr.tif", geotiff(lr, crs, lr_transform(transform)))
            qa1, qa2 = CROSS_SENSOR_QA[i]
            meta = {
                "roi_id": f"ROI_{i:04d}",
                "s2_id": f"S2A_MSIL2A_2019081{i}T170901_N0213_R112_T14TNT",
                "naip_id": naip.stem,
                "QA1": qa1,
                "QA2": qa2,
                "histograms": {},
                "fixture": FIXTURE_NOTE,
            }
            text = json.dumps(meta)
            zf.writestr(f"{folder}/metadata.json", text[:20] if i == 5 else text)
    return path


def sim_histograms(rng: np.random.Generator) -> dict:
    """opensr-degradation 1.0.1's ``full_table``: ``bins`` + ``lr__{band}__{method}``, last row −999."""
    bins = np.linspace(0, 1, 1001)
    table = {"bins": [*bins.tolist(), -999.0]}
    for band in BANDS:
        for method in SIM_METHODS:
            counts = rng.integers(0, 50, bins.size).astype(float)
            table[f"lr__{band}__{method}"] = [*counts.tolist(), -999.0]
    return table


def write_synthetic(out: Path, seed: int = 0, prefix: str = "synthetic_01/data") -> Path:
    rng = np.random.default_rng(seed + 1)
    path = out / "synthetic_01.zip"
    files = naip_files()
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i, (row, col) in enumerate([(0, 0), (300, 300), (500, 100)]):
            folder = f"{prefix}/ROI_{i:04d}"
            for k, date in enumerate(("early", "late")):
                naip = files[(i + 3 * k) % len(files)]
                hr, crs, transform = crop(naip, row, col)
                zf.writestr(f"{folder}/{date}/{k + 1:02d}__{naip.stem}.tif", geotiff(hr, crs, transform))
            meta = json.dumps({"roi_id": f"ROI_{i:04d}", "sim_histograms": sim_histograms(rng)})
            zf.writestr(f"{folder}/metadata.json", "{not json" if i == 2 else meta)
    return path


def write_v2(out: Path, seed: int = 0, splits=("train", "validation", "test")) -> Path:
    """A legacy TACO by the real writer: tacotoolbox 0.5.2 + pytortilla 0.5.1."""

    rng = np.random.default_rng(seed + 2)
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        return _write_v2(out, Path(tmp), rng, splits)


def _write_v2(out: Path, work: Path, rng: np.random.Generator, splits) -> Path:
    import pytortilla
    import tacotoolbox
    from pytortilla.datamodel.main import STAC

    files = naip_files()
    samples = []
    for i, split in enumerate(splits):
        hr, crs, transform = crop(files[i], 100 + 150 * i, 100)
        lr = simulate_lr(hr, rng).astype(np.uint16)
        parts = []
        for name, data, tr in (("lr", lr, lr_transform(transform)), ("hr", hr, transform)):
            member = work / f"{i}_{name}.tif"
            member.write_bytes(geotiff(data, crs, tr))
            stac = STAC(
                crs=crs.to_string(),
                raster_shape=data.shape[1:],
                geotransform=tr.to_gdal(),
                time_start=1_560_000_000 + i * 86400,
            )
            parts.append(
                pytortilla.datamodel.Sample(id=name, file_format="GTiff", path=member, stac_data=stac)
            )
        inner = pytortilla.create(
            pytortilla.datamodel.Samples(samples=parts), work / f"{i}.tortilla", quiet=True
        )
        stac = STAC(
            crs=crs.to_string(),
            raster_shape=hr.shape[1:],
            geotransform=transform.to_gdal(),
            time_start=1_560_000_000 + i * 86400,
        )
        samples.append(
            pytortilla.datamodel.Sample(
                id=f"ROI_{i:05d}",
                file_format="TORTILLA",
                path=inner,
                data_split=split,
                stac_data=stac,
                fixture=FIXTURE_NOTE,
            )
        )
    collection = tacotoolbox.datamodel.Collection(
        id="sen2naipv2fixture",
        dataset_version="0.0.1",
        description=FIXTURE_NOTE,
        licenses=["cc0-1.0"],
        extent={
            "spatial": [[-180.0, -90.0, 180.0, 90.0]],
            "temporal": [["2019-01-01T00:00:00Z", "2019-12-31T00:00:00Z"]],
        },
        providers=[{"name": "sen2naip-hub tests"}],
        task="super-resolution",
    )
    path = out / "sen2naipv2-fixture.taco"
    tacotoolbox.create(collection, pytortilla.datamodel.Samples(samples=samples), path, quiet=True)
    return path


if __name__ == "__main__":
    target = Path(sys.argv[1])
    target.mkdir(parents=True, exist_ok=True)
    for writer in (write_cross_sensor, write_synthetic, write_v2):
        print(writer(target))
