"""The wheel repacker and selector of ``benchmarks/device`` (what takes ray and rasterio to the GPU machine).

A tiny fake wheel is repacked: dropped paths are gone from the archive and from ``RECORD``, every
other member keeps its bytes and mode bits, and ``RECORD`` lists each member with the sha256 and size
recomputed here from the new archive's bytes.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.util
import io
import shutil
import stat
import sys
import zipfile
from pathlib import Path

import pytest

DEVICE_DIR = Path(__file__).resolve().parents[1] / "benchmarks" / "device"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"device_{name}", DEVICE_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


pack = _load("pack_wheels")
select = _load("select_wheels")

MEMBERS = {
    "fake/__init__.py": b"VALUE = 1\n",
    "fake/jars/big.jar": b"\0" * 1000,
    "fake/core/tool": b"#!/bin/sh\necho hi\n",
    "fake-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: fake\nVersion: 1.0\n",
    "fake-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
EXECUTABLE = 0o755 << 16 | stat.S_IFREG << 16


def _fake_wheel(path: Path) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as wheel:
        for name, data in MEMBERS.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = EXECUTABLE if name.endswith("tool") else 0o644 << 16
            wheel.writestr(info, data)
        wheel.writestr("fake-1.0.dist-info/RECORD", "stale,sha256=x,1\n")
    return path


def _digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def test_repack_drops_paths_and_rewrites_record(tmp_path) -> None:
    src = _fake_wheel(tmp_path / "fake-1.0-py3-none-any.whl")
    out = tmp_path / "out"
    out.mkdir()
    done = pack.repack_wheel(src, out / src.name, drop=("fake/jars/",), strip=False)
    assert done.dropped == 1 and done.stripped == 0
    with zipfile.ZipFile(done.path) as wheel:
        names = wheel.namelist()
        assert "fake/jars/big.jar" not in names
        assert all(i.compress_type == zipfile.ZIP_STORED for i in wheel.infolist())
        assert wheel.getinfo("fake/core/tool").external_attr == EXECUTABLE
        rows = list(csv.reader(io.StringIO(wheel.read("fake-1.0.dist-info/RECORD").decode())))
        contents = {n: wheel.read(n) for n in names}
    kept = {n: d for n, d in MEMBERS.items() if not n.startswith("fake/jars/")}
    assert {n: contents[n] for n in kept} == kept
    expected = {n: [_digest(d), str(len(d))] for n, d in kept.items()} | {
        "fake-1.0.dist-info/RECORD": ["", ""]
    }
    assert {row[0]: row[1:] for row in rows} == expected
    assert sorted(names) == sorted(expected)


def test_a_wheel_without_record_is_refused(tmp_path) -> None:
    src = tmp_path / "bad-1.0-py3-none-any.whl"
    with zipfile.ZipFile(src, "w") as wheel:
        wheel.writestr("bad/__init__.py", "")
    with pytest.raises(pack.PackError, match=r"expected one \.dist-info/RECORD"):
        pack.repack_wheel(src, tmp_path / "out.whl")
    assert not (tmp_path / "out.whl").exists()


@pytest.mark.skipif(shutil.which("strip") is None, reason="binutils' strip is not installed")
def test_strip_leaves_other_files_alone_and_keeps_an_elf_loadable_header() -> None:
    text = b"not an ELF file"
    assert pack.strip_elf(text) is text
    elf = Path(sys.executable).resolve().read_bytes()
    stripped = pack.strip_elf(elf)
    assert stripped.startswith(pack.ELF_MAGIC) and len(stripped) <= len(elf)


def test_select_installs_only_missing_or_older_distributions(tmp_path) -> None:
    import pytest as installed

    have = installed.__version__
    assert not select.is_needed(tmp_path / f"pytest-{have}-py3-none-any.whl")
    assert not select.is_needed(tmp_path / "pytest-1.0-py3-none-any.whl")
    assert select.is_needed(tmp_path / "pytest-999.0-py3-none-any.whl")
    assert select.is_needed(tmp_path / "no_such_distribution_here-1.0-py3-none-any.whl")
    with pytest.raises(ValueError, match="not a wheel file name"):
        select.is_needed(tmp_path / "pytest.tar.gz")
