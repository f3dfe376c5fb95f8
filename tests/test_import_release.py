"""`sen2naip import-release`: miniature releases in the published layouts (tests/data/releases/data.py) →
`load_dataset` splits whose every value equals the release's member files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
from range_server import RangeServer

from dataset_builder.sources.releases import archive as archive_module
from dataset_builder.sources.releases.groups import connected_groups
from dataset_builder.sources.releases.importer import ImportSettings
from dataset_builder.sources.releases.run import import_release
from dataset_builder.sources.releases.taco import TACO_MAGIC, TacoError, Tortilla, parse_header
from sen2naip_hub.sensors import reflectance_to_naip, reflectance_to_s2

sys.path.insert(0, str(Path(__file__).parent / "data" / "releases"))
import data as fixtures

ENTRY = EntryPoint(
    name="import-release",
    value="dataset_builder.sources.releases.cli:import_release_command",
    group="sen2naip.commands",
)
READABLE = ["ROI_0000", "ROI_0001", "ROI_0002"]


@pytest.fixture(scope="module")
def releases(tmp_path_factory, sample_dir) -> Path:
    out = tmp_path_factory.mktemp("releases")
    for writer in (fixtures.write_cross_sensor, fixtures.write_synthetic, fixtures.write_v2):
        writer(out, seed=0)
    return out


def run_import(release: str, sources, out: Path, **kwargs):
    settings = ImportSettings(
        release, tuple(map(str, sources)), out, out.with_name(out.name + "-work"), **kwargs
    )
    return import_release(settings, progress=False, echo=lambda _: None)


def load(out: Path, config: str) -> dict[str, list[dict]]:
    from datasets import load_dataset

    data = load_dataset(str(out), config)
    fmt = {"columns": ["hr", "lr"], "dtype": np.uint16, "output_all_columns": True}
    return {split: list(data[split].with_format("numpy", **fmt)) for split in data}


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def vsizip(zip_path: Path, member: str) -> np.ndarray:
    """A member's pixels read by GDAL straight from the zip (independent of the importer's reader)."""
    with rasterio.open(f"/vsizip/{zip_path}/{member}") as src:
        return src.read()


@pytest.fixture(scope="module")
def cross_sensor(releases, tmp_path_factory):
    out = tmp_path_factory.mktemp("imports") / "cross"
    return out, run_import("v1-cross-sensor", [releases / "cross-sensor.zip"], out)


def test_cross_sensor_rows_equal_the_members(cross_sensor, releases):
    out, result = cross_sensor
    rows = [row for split in load(out, "cross_sensor").values() for row in split]
    assert sorted(r["roi_id"] for r in rows) == READABLE
    assert result.kept == len(READABLE)
    zip_path = releases / "cross-sensor.zip"
    for row in rows:
        folder = f"cross-sensor/{row['roi_id']}"
        hr, lr = vsizip(zip_path, f"{folder}/hr.tif"), vsizip(zip_path, f"{folder}/lr.tif")
        assert row["hr"].dtype == np.uint16 and row["lr"].dtype == np.uint16
        # HR: the member's uint8 counts as the builder stores NAIP (reflectance × 10000), one-to-one but
        # for a count of 0, stored as DN 1: 0 means nodata in the builder's arrays
        expected = np.maximum(np.rint(hr / 255.0 * 10000), 1).astype(np.uint16)
        np.testing.assert_array_equal(row["hr"], expected)
        np.testing.assert_array_equal(reflectance_to_naip(row["hr"] / 10000.0), np.maximum(hr, 1))
        assert lr.dtype == np.int32
        np.testing.assert_array_equal(row["lr"].astype(np.int64), lr.astype(np.int64))  # the DN, exactly
        meta = json.loads(zipfile.ZipFile(zip_path).read(f"{folder}/metadata.json"))
        assert (row["qa1"], row["qa2"]) == pytest.approx((meta["QA1"], meta["QA2"]))
        assert (row["release"], row["s2_id"], row["naip_id"]) == (
            "v1-cross-sensor",
            meta["s2_id"],
            meta["naip_id"],
        )
        assert row["lr_date"] == f"2019-08-1{row['roi_id'][-1]}"  # from the s2_id


def test_cross_sensor_same_features_as_a_build(cross_sensor):
    from datasets import load_dataset

    from dataset_builder.write.shards import pair_features

    out, _ = cross_sensor
    split = next(iter(load_dataset(str(out), "cross_sensor").values()))
    built = pair_features((4, fixtures.HR_PX, fixtures.HR_PX), (4, fixtures.HR_PX // 4, fixtures.HR_PX // 4))
    for name, feature in built.items():
        assert split.features[name] == feature, name
    assert set(split.features) - set(built) == {"release", "split_group"}
    assert {"naip_id", "s2_id"} <= set(built)  # provenance columns every build has


def test_corrupt_members_are_listed_with_reasons(cross_sensor):
    out, result = cross_sensor
    rejected = {e["id"]: e["reason"] for e in manifest(out) if e["status"] == "rejected"}
    assert result.rejected == 4
    assert "not a readable GeoTIFF" in rejected["cross-sensor/ROI_0003"]  # truncated hr.tif
    assert "no lr.tif" in rejected["cross-sensor/ROI_0004"]
    assert "metadata.json: not readable JSON" in rejected["cross-sensor/ROI_0005"]
    assert "outside the uint16 range" in rejected["cross-sensor/ROI_0006"]
    assert "70000" in rejected["cross-sensor/ROI_0006"]  # never wrapped


def test_touching_rois_share_a_split(cross_sensor):
    out, _ = cross_sensor
    kept = {e["roi_id"]: e for e in manifest(out) if e["status"] == "kept"}
    assert kept["ROI_0001"]["split_group"] == kept["ROI_0002"]["split_group"] == "ROI_0001"
    assert kept["ROI_0001"]["split"] == kept["ROI_0002"]["split"]
    assert kept["ROI_0000"]["split_group"] == "ROI_0000"


def test_connected_groups_join_chains_of_touching_footprints():
    boxes = [
        ("c", "EPSG:1", (20.0, 0.0, 30.0, 10.0)),
        ("a", "EPSG:1", (0.0, 0.0, 10.0, 10.0)),
        ("b", "EPSG:1", (10.0, 5.0, 20.0, 15.0)),  # touches a, overlaps c
        ("d", "EPSG:1", (40.0, 0.0, 50.0, 10.0)),  # apart
        ("e", "EPSG:2", (0.0, 0.0, 10.0, 10.0)),  # same bounds, another CRS
        ("f", "EPSG:1", (0.0, 10.5, 9.5, 20.0)),  # 0.5 above a, 0.5 left of b: apart
    ]
    assert connected_groups(boxes) == {"a": "a", "b": "a", "c": "a", "d": "d", "e": "e", "f": "f"}


def test_card_names_release_license_counts(cross_sensor):
    out, _ = cross_sensor
    card = (out / "README.md").read_text()
    assert "license: cc-by-4.0" in card and "isp-uv-es/SEN2NAIP" in card and "`v1-cross-sensor`" in card
    assert "pairs kept: 3" in card and "rejected" in card and ": 4;" in card
    assert "QA filter: none" in card


def test_qa_filter_through_the_cli(releases, tmp_path, monkeypatch, capsys):
    import sen2naip_hub.cli as cli

    monkeypatch.setattr(cli, "entry_points", lambda group: [ENTRY])
    out = tmp_path / "qa"
    argv = ["import-release", "v1-cross-sensor", str(releases / "cross-sensor.zip"), "--out", str(out)]
    code = cli.main([*argv, "--work-dir", str(tmp_path / "work"), "--qa-filter", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    rows = [r for split in load(out, "cross_sensor").values() for r in split]
    assert sorted(r["roi_id"] for r in rows) == ["ROI_0000", "ROI_0002"]  # ROI_0001: QA1 1.6, QA2 2.5
    assert all(r["qa1"] <= 1 and r["qa2"] <= 2 for r in rows)
    filtered = [e for e in manifest(out) if e["status"] == "filtered"]
    assert [e["roi_id"] for e in filtered] == ["ROI_0001"]
    card = (out / "README.md").read_text()
    assert "QA1 ≤ 1.0 LR px and QA2 ≤ 2.0°" in card and "dropped by the QA filter: 1" in card
    # a release without QA refuses the filter: one line, exit 1
    v2 = ["import-release", "v2", str(releases / "sen2naipv2-fixture.taco"), "--out", str(tmp_path / "x")]
    capsys.readouterr()
    assert cli.main([*v2, "--qa-filter"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--qa-filter" in err and "v2" in err


def test_v2_taco_keeps_its_splits_and_values(releases, tmp_path):
    taco_path = releases / "sen2naipv2-fixture.taco"
    out = tmp_path / "v2"
    result = run_import("v2", [taco_path], out)
    assert result.counts == {"cross_sensor": {"train": 1, "validation": 1, "test": 1}}
    with taco_path.open("rb") as handle:
        taco = Tortilla.open(handle, str(taco_path))
        assert taco.header.magic == TACO_MAGIC and taco.header.partitions == 1
        assert taco.collection()["id"] == "sen2naipv2fixture"
        by_id = {row["tortilla:id"]: (i, row) for i, row in enumerate(taco.rows)}
        for split, rows in load(out, "cross_sensor").items():
            for row in rows:
                index, footer = by_id[row["roi_id"]]
                assert footer["tortilla:data_split"] == split
                inner = taco.nested(index)
                with rasterio.MemoryFile(inner.member("hr")) as m, m.open() as src:
                    expected = np.maximum(src.read(), 1)  # a count of 0 is stored as the smallest valid DN
                    np.testing.assert_array_equal(reflectance_to_naip(row["hr"] / 10000.0), expected)
                with rasterio.MemoryFile(inner.member("lr")) as m, m.open() as src:
                    np.testing.assert_array_equal(row["lr"], src.read())
    card = (out / "README.md").read_text()
    assert "license: cc0-1.0" in card and "tacofoundation/SEN2NAIPv2" in card


def test_taco_reader_rules(tmp_path):
    with pytest.raises(TacoError, match="magic"):
        parse_header(b"PK" + bytes(198), "x.taco")
    with pytest.raises(TacoError, match="shorter"):
        parse_header(b"WX", "x.taco")
    bad = tmp_path / "bad.taco"
    header = TACO_MAGIC + (10**6).to_bytes(8, "little") + (10).to_bytes(8, "little") + bytes(182)
    bad.write_bytes(header)
    with bad.open("rb") as handle, pytest.raises(TacoError, match="footer at"):
        Tortilla.open(handle, str(bad))


def test_url_import_fetches_a_fraction_and_gives_the_same_rows(releases, tmp_path, monkeypatch):
    monkeypatch.setattr(archive_module, "RANGE_BLOCK_BYTES", 8 * 1024)
    zip_path = releases / "cross-sensor.zip"
    local = run_import("v1-cross-sensor", [zip_path], tmp_path / "local", limit=2)
    with RangeServer(releases) as server:
        remote = run_import("v1-cross-sensor", [server.url("cross-sensor.zip")], tmp_path / "remote", limit=2)
    size = zip_path.stat().st_size
    assert 0 < remote.fetched == server.sent < size / 2
    assert remote.counts == local.counts
    for shard in sorted((tmp_path / "local" / "cross_sensor").glob("*.parquet")):
        other = tmp_path / "remote" / "cross_sensor" / shard.name
        assert pq.read_metadata(shard).num_rows > 0
        assert shard.read_bytes() == other.read_bytes()  # same rows, same bytes


def test_network_failure_stops_the_import_and_a_rerun_resumes(releases, tmp_path, monkeypatch):
    from dataset_builder.sources.releases.archive import NetworkError

    monkeypatch.setattr(archive_module, "RANGE_BLOCK_BYTES", 8 * 1024)
    zip_path = releases / "cross-sensor.zip"
    local = run_import("v1-cross-sensor", [zip_path], tmp_path / "local", limit=3)
    out = tmp_path / "remote"
    with RangeServer(releases, fail_after=4) as server:
        with pytest.raises(NetworkError, match="503"):
            run_import("v1-cross-sensor", [server.url("cross-sensor.zip")], out, limit=3)
        server.fail_after = None
        remote = run_import("v1-cross-sensor", [server.url("cross-sensor.zip")], out, limit=3)
    assert remote.rejected == local.rejected == 0 and remote.kept == local.kept == 3
    for shard in sorted((tmp_path / "local" / "cross_sensor").glob("*.parquet")):
        assert shard.read_bytes() == (out / "cross_sensor" / shard.name).read_bytes()


def test_v2_over_http_reads_header_footer_and_the_samples_asked(releases, tmp_path, monkeypatch):
    monkeypatch.setattr(archive_module, "RANGE_BLOCK_BYTES", 4 * 1024)
    taco_path = releases / "sen2naipv2-fixture.taco"
    local = run_import("v2", [taco_path], tmp_path / "local", limit=1)
    with RangeServer(releases) as server:
        remote = run_import("v2", [server.url(taco_path.name)], tmp_path / "remote", limit=1)
    # one sample of three, plus header and footers (each read rounded up to 4 KiB blocks)
    assert 0 < remote.fetched == server.sent < 0.6 * taco_path.stat().st_size
    assert remote.counts == local.counts == {"cross_sensor": {"train": 1}}
    for shard in sorted((tmp_path / "local" / "cross_sensor").glob("*.parquet")):
        assert shard.read_bytes() == (tmp_path / "remote" / "cross_sensor" / shard.name).read_bytes()


KILL_SCRIPT = """
import sys
from pathlib import Path
from dataset_builder.sources.releases.importer import ImportSettings
from dataset_builder.sources.releases.run import import_release
out = Path(sys.argv[2])
import_release(ImportSettings("v1-cross-sensor", (sys.argv[1],), out, Path(sys.argv[3])), progress=False)
"""


def test_killed_import_resumes_to_identical_shards(releases, tmp_path, cross_sensor):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "SEN2NAIP_BUILD_KILL_AT": "rows/0000002-*"}
    out = tmp_path / "k" / "cross"  # the reference's folder name: the card names the folder
    args = [
        sys.executable,
        "-c",
        KILL_SCRIPT,
        str(releases / "cross-sensor.zip"),
        str(out),
        str(tmp_path / "w"),
    ]
    killed = subprocess.run(args, env=env, capture_output=True, timeout=120)
    assert killed.returncode == -9, killed.stderr.decode()[-500:]
    assert not out.exists()
    done = sorted(p.name for p in (tmp_path / "w" / "checkpoints" / "rows").glob("*.npz"))
    assert len(done) == 3
    env.pop("SEN2NAIP_BUILD_KILL_AT")
    subprocess.run(args, env=env, check=True, capture_output=True, timeout=120)
    reference, _ = cross_sensor
    for shard in sorted((reference / "cross_sensor").glob("*.parquet")):
        assert shard.read_bytes() == (out / "cross_sensor" / shard.name).read_bytes()
    for name in ("README.md", "manifest.jsonl"):
        assert (out / name).read_text() == (reference / name).read_text()


def test_synthetic_lr_is_the_named_model_on_the_member(releases, tmp_path, reference_dir):
    import torch

    from dataset_builder.synthetic.stage import tile_seed
    from sen2naip_hub.models import Degradation

    model_dir = str(reference_dir / "sen2naip-degradation")
    zip_path = releases / "synthetic_01.zip"
    out = tmp_path / "syn"
    result = run_import("v1-synthetic", [zip_path], out, model=model_dir, seed=3)
    rows = [r for split in load(out, "synthetic").values() for r in split]
    assert (
        len(rows) == result.kept == 4
    )  # ROI_0000 and ROI_0001, early and late; ROI_0002's metadata is broken
    assert [e["id"] for e in manifest(out) if e["status"] == "rejected"] == ["synthetic_01/data/ROI_0002"]
    names = {n for n in zipfile.ZipFile(zip_path).namelist() if n.endswith(".tif")}
    model = Degradation.from_pretrained(model_dir).eval()
    for row in rows:
        member = next(
            n for n in names if n.startswith(f"synthetic_01/data/{row['roi_id']}/") and row["naip_id"] in n
        )
        hr = vsizip(zip_path, member)
        # a count of 0 is stored as the smallest valid DN (0 means nodata in the builder's arrays)
        np.testing.assert_array_equal(reflectance_to_naip(row["hr"] / 10000.0), np.maximum(hr, 1))
        assert row["degradation_model"] == model_dir and row["release"] == "v1-synthetic"
        with torch.inference_mode():
            lr = model(torch.from_numpy(row["hr"].astype(np.float32) / 10000)[None], noise=False).lr
            lr = model.noise(lr, torch.Generator().manual_seed(tile_seed(3, member)))
        np.testing.assert_array_equal(row["lr"], reflectance_to_s2(lr[0].numpy()))  # the one DN rule


def test_fit_reads_an_imported_dataset(cross_sensor):
    from dataset_builder.fit.pairs import load_pairs

    out, _ = cross_sensor
    split = next(e["split"] for e in manifest(out) if e["status"] == "kept")
    pairs = load_pairs(out, "cross_sensor", split)
    rows = load(out, "cross_sensor")[split]
    assert len(pairs) == len(rows)
    np.testing.assert_allclose(pairs.lr.numpy(), np.stack([r["lr"] for r in rows]) / 10000.0, rtol=1e-6)


def test_reference_quantiles_follow_the_table():
    from dataset_builder.sources.releases.sim_histograms import method_table, reference_quantiles

    table = {"bins": [0.1, 0.5, 0.9, -999.0]}
    for band in ("red", "green", "blue", "nir"):
        table[f"lr__{band}__m"] = [1.0, 3.0, 0.0, -999.0]
    values, weights = method_table(table, "m", "t")
    ref = reference_quantiles(values, weights, 4)
    assert ref.shape == (4, 4)
    np.testing.assert_allclose(ref[0].numpy(), [0.1, 0.5, 0.5, 0.5])
    rows = [dict(zip(table, r, strict=True)) for r in zip(*table.values(), strict=True)]  # records layout
    np.testing.assert_array_equal(method_table(rows, "m", "t")[1], weights)


def test_synthetic_with_the_release_sim_histograms(releases, tmp_path, reference_dir):
    import torch

    from dataset_builder.synthetic.stage import tile_seed
    from sen2naip_hub.models import Degradation
    from sen2naip_hub.models.histogram import match_histograms

    model_dir = str(reference_dir / "sen2naip-degradation")
    zip_path = releases / "synthetic_01.zip"
    out = tmp_path / "sim"
    run_import("v1-synthetic", [zip_path], out, model=model_dir, harmonization="sim:method03", limit=1)
    rows = [r for split in load(out, "synthetic").values() for r in split]
    assert len(rows) == 2 and all(r["degradation_model"] == f"{model_dir} + sim:method03" for r in rows)
    meta = json.loads(zipfile.ZipFile(zip_path).read("synthetic_01/data/ROI_0000/metadata.json"))
    table = meta["sim_histograms"]
    values = np.asarray(table["bins"][:-1])
    model = Degradation.from_pretrained(model_dir).eval()
    for row in rows:
        member = next(
            n for n in zipfile.ZipFile(zip_path).namelist() if row["naip_id"] in n and "ROI_0000" in n
        )
        with torch.inference_mode():
            lr = model(
                torch.from_numpy(row["hr"].astype(np.float32) / 10000)[None],
                harmonization="none",
                noise=False,
            ).lr
            n = lr.shape[-1] * lr.shape[-2]
            levels = (np.arange(n) + 0.5) / n
            reference = []
            for band in ("red", "green", "blue", "nir"):
                cdf = np.cumsum(table[f"lr__{band}__method03"][:-1])
                cdf = cdf / cdf[-1]
                reference.append([values[np.argmax(cdf >= level)] for level in levels])
            ref = torch.tensor(np.asarray(reference, dtype=np.float32)).reshape(1, 4, 1, -1)
            lr = model.noise(match_histograms(lr, ref), torch.Generator().manual_seed(tile_seed(0, member)))
        np.testing.assert_array_equal(row["lr"], reflectance_to_s2(lr[0].numpy()))  # the one DN rule


def test_synthetic_unknown_method_is_listed(releases, tmp_path, reference_dir):
    model_dir = str(reference_dir / "sen2naip-degradation")
    out = tmp_path / "bad"
    with pytest.raises(Exception, match="no row was kept"):
        run_import(
            "v1-synthetic", [releases / "synthetic_01.zip"], out, model=model_dir, harmonization="sim:nope"
        )
    checkpoints = sorted((tmp_path / "bad-work" / "checkpoints" / "rows").glob("*.npz"))
    reasons = [np.load(p)["meta"].tobytes().decode() for p in checkpoints]
    assert all("method" in r or "not readable JSON" in r for r in reasons)
    assert any("lr__red__nope" in r and "method03" in r for r in reasons)


def test_settings_refuse_what_a_release_cannot_do(tmp_path):
    from dataset_builder.core.errors import ConfigError

    with pytest.raises(ConfigError, match="only v1-synthetic"):
        ImportSettings("v2", ("x",), tmp_path, tmp_path, model="m")
    with pytest.raises(ConfigError, match="sim:<method>"):
        ImportSettings("v1-synthetic", ("x",), tmp_path, tmp_path, harmonization="histmatch")
    with pytest.raises(ConfigError, match="release must be one of"):
        ImportSettings("v3", ("x",), tmp_path, tmp_path)
