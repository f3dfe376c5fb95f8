"""Wheels the GPU machine lacks, repacked small enough to travel with one device call (≤ 64 MiB).

The GPU machine (Python 3.12, torch 2.11, pyarrow, pandas, ...) has no registry access and no ray,
rasterio, pydantic, open_clip, smp, timm, jsonschema or pystac. This script

1. downloads the exact versions of :data:`BUNDLES` (those of the project's virtualenv) as cp312
   manylinux wheels (``pip download --no-deps``; the dependencies are listed here by hand, from each
   wheel's ``Requires-Dist``);
2. repacks every wheel as a valid wheel (``RECORD`` rewritten with the new hashes and sizes) whose
   members are *stored*, not deflated, so that xz compresses across files: paths under
   :data:`DROP` are left out (ray's Java jars, the dashboard's web build and the libraries the Ray
   Data path never imports) and ELF files (``.so``, ray's ``raylet``/``gcs_server``) go through
   ``strip --strip-unneeded`` (debug and local symbols only; the dynamic symbol table stays);
3. writes one ``.tar.xz`` per bundle into ``--out`` (gitignored ``.devwheels/``, nothing else there:
   carry that folder) and prints sizes; downloads and repacked wheels stay in ``--work``.

``benchmarks/device/install.sh`` unpacks the bundles on the GPU machine and pip-installs into
``/tmp/site`` the wheels whose distribution is missing there or older.

    python benchmarks/device/pack_wheels.py                          # cp312 → .devwheels/
    python benchmarks/device/pack_wheels.py --python 3.11 --out /tmp/w311   # to test on this machine
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import lzma
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

#: What one device call may carry: the working tree and every carried path together (device README).
DEVICE_CARRY_LIMIT_BYTES: int = 64 * 2**20
#: manylinux tags pip may match for the GPU machine (x86-64, glibc ≥ 2.28 there; device README).
PLATFORMS: tuple[str, ...] = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)
#: Bundle name → wheels (versions as in the project's virtualenv). Dependencies found by reading
#: each wheel's METADATA ``Requires-Dist``; those the GPU machine has (numpy, pandas, pyarrow, fsspec,
#: msgpack, protobuf, pyyaml, requests, click, filelock, packaging, certifi, torch, torchvision,
#: huggingface_hub, safetensors, tqdm, pillow, regex, python-dateutil) are not carried.
BUNDLES: dict[str, tuple[str, ...]] = {
    # ray (core): click, filelock, jsonschema, msgpack, packaging, protobuf, pyyaml, requests;
    # data: numpy, pandas, pyarrow, fsspec.
    "ray": ("ray==2.60.0",),
    # rasterio: affine, attrs, certifi, click, cligj, numpy, click-plugins, pyparsing.
    "rasterio": (
        "rasterio==1.4.4",
        "affine==3.0.1",
        "attrs==26.1.0",
        "cligj==0.7.2",
        "click-plugins==1.1.1.2",
        "pyparsing==3.3.3",
    ),
    # the builder's config (pydantic), CLIP (open_clip: ftfy → wcwidth, timm), the harmonization
    # U-Net (smp: timm), ray's jsonschema (attrs, referencing, rpds-py, specifications) and the
    # sources stage's STAC modules (pystac-core provides `pystac`; pystac-client).
    "builder": (
        "pydantic==2.14.4",
        "pydantic-core==2.50.5",
        "annotated-types==0.8.0",
        "typing-inspection==0.4.5",
        "typing-extensions==4.16.0",
        "open_clip_torch==3.3.0",
        "ftfy==6.3.1",
        "wcwidth==0.9.4",
        "timm==1.0.31",
        "segmentation_models_pytorch==0.6.0",
        "jsonschema==4.26.0",
        "jsonschema-specifications==2025.9.1",
        "referencing==0.37.0",
        "rpds-py==2026.9.1",
        "pystac-core==1.15.2",
        "pystac-client==0.9.1",
    ),
    # the write stage's parquet shards and dataset card (datasets: dill, multiprocess; its other
    # dependencies, pyarrow, pandas, fsspec, huggingface_hub, xxhash, are on the GPU machine).
    "write": ("datasets==5.2.0", "dill==0.4.1", "multiprocess==0.70.19"),
}
#: Path prefixes left out of a distribution's wheel (key: the wheel file name's first part).
#: ray: the Java jars (34.5 MB) and the dashboard's web client (9 MB) are never loaded by a Python
#: driver with the dashboard off; rllib, serve, llm, tune and train are libraries beside Ray Data
#: that its local path does not import (shown by running the build with this install, see
#: SCALING.md).
DROP: dict[str, tuple[str, ...]] = {
    "ray": (
        "ray/jars/",
        "ray/dashboard/client/build/",
        "ray/rllib/",
        "ray/serve/",
        "ray/llm/",
        "ray/tune/",
        "ray/train/",
    ),
}
#: Downloaded and repacked wheels (outside the repository: only the bundles travel).
WORK_DIR: Path = Path(tempfile.gettempdir()) / "sen2naip-devwheels"
#: xz preset of the bundles (9 with the "extreme" flag: slowest, smallest).
XZ_PRESET: int = 9 | lzma.PRESET_EXTREME
ELF_MAGIC: bytes = b"\x7fELF"


class PackError(RuntimeError):
    """A wheel could not be downloaded or repacked."""


@dataclass(frozen=True)
class Repacked:
    """One repacked wheel: its path, sizes before and after, members dropped and ELF files stripped."""

    path: Path
    size_in: int
    size_out: int
    dropped: int
    stripped: int


def record_hash(data: bytes) -> str:
    """A RECORD hash entry: ``sha256=`` and the urlsafe base64 digest without padding (PEP 376/427)."""
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def strip_elf(data: bytes) -> bytes:
    """``data`` after ``strip --strip-unneeded`` when it is an ELF file (the input itself otherwise)."""
    if not data.startswith(ELF_MAGIC):
        return data
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "elf"
        path.write_bytes(data)
        done = subprocess.run(["strip", "--strip-unneeded", str(path)], capture_output=True, text=True)
        if done.returncode != 0:
            raise PackError(f"strip failed: {done.stderr.strip()}")
        return path.read_bytes()


def _record_name(names: list[str]) -> str:
    found = [n for n in names if n.endswith(".dist-info/RECORD") and n.count("/") == 1]
    if len(found) != 1:
        raise PackError(f"expected one .dist-info/RECORD, found {found or 'none'}")
    return found[0]


def repack_wheel(src: Path, dst: Path, drop: tuple[str, ...] = (), strip: bool = True) -> Repacked:
    """Write ``src`` as ``dst``: members under ``drop`` left out, ELF files stripped, stored (not deflated).

    ``RECORD`` lists every member written with its new sha256 and size (itself without a hash), so
    ``dst`` is a valid wheel; it is written to a temporary name and renamed.
    """
    with zipfile.ZipFile(src) as zin:
        infos = zin.infolist()
        record = _record_name([i.filename for i in infos])
        rows: list[tuple[str, str, str]] = []
        dropped = stripped = 0
        tmp = dst.with_name(dst.name + ".tmp")
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zout:
            for info in infos:
                name = info.filename
                if name == record:
                    continue
                if name.startswith(drop):
                    dropped += 1
                    continue
                data = zin.read(info)
                new = strip_elf(data) if strip else data
                stripped += new is not data
                out = zipfile.ZipInfo(name, date_time=info.date_time)
                out.external_attr = info.external_attr  # keeps the executables' mode bits
                zout.writestr(out, new, compress_type=zipfile.ZIP_STORED)
                if not name.endswith("/"):
                    rows.append((name, record_hash(new), str(len(new))))
            rows.append((record, "", ""))
            text = io.StringIO()
            csv.writer(text, lineterminator="\n").writerows(rows)
            zout.writestr(zipfile.ZipInfo(record, date_time=(1980, 1, 1, 0, 0, 0)), text.getvalue())
    os.replace(tmp, dst)
    return Repacked(dst, src.stat().st_size, dst.stat().st_size, dropped, stripped)


def download(specs: tuple[str, ...], dest: Path, python: str) -> None:
    """``pip download`` the exact ``specs`` as binary wheels for CPython ``python`` on manylinux x86-64."""
    tag = "cp" + python.replace(".", "")
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
    command += ["--python-version", python, "--implementation", "cp", "--abi", tag, "--abi", "abi3"]
    command += ["--abi", "none", *(f"--platform={p}" for p in PLATFORMS), "-d", str(dest), *specs]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise PackError(f"pip download failed: {done.stderr.strip().splitlines()[-1]}")


def wheel_for(spec: str, folder: Path) -> Path:
    """The downloaded wheel of ``name==version`` in ``folder`` (names normalised as wheels spell them)."""
    name, version = spec.split("==")
    stem = f"{name.replace('-', '_').lower()}-{version}-"
    found = [p for p in folder.glob("*.whl") if p.name.lower().startswith(stem)]
    if len(found) != 1:
        raise PackError(f"{spec}: expected one wheel in {folder}, found {[p.name for p in found]}")
    return found[0]


def write_bundle(wheels: list[Path], path: Path) -> int:
    """A ``.tar.xz`` of ``wheels`` (flat), written to a temporary name and renamed; its size."""
    tmp = path.with_name(path.name + ".tmp")
    with lzma.open(tmp, "wb", preset=XZ_PRESET) as xz, tarfile.open(fileobj=xz, mode="w") as tar:
        for wheel in wheels:
            tar.add(wheel, arcname=wheel.name)
    os.replace(tmp, path)
    return path.stat().st_size


def _tracked_bytes() -> int:
    names = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True).stdout
    return sum(
        (REPO_ROOT / n).stat().st_size for n in names.decode().split("\0") if (REPO_ROOT / n).is_file()
    )


def _mib(n: int) -> str:
    return f"{n / 2**20:6.1f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--python", default="3.12", help="CPython version of the target (3.12: GPU machine)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / ".devwheels", help="where the bundles go")
    parser.add_argument(
        "--work", type=Path, default=WORK_DIR, help="downloaded and repacked wheels (kept out of --out)"
    )
    parser.add_argument("--no-strip", action="store_true", help="keep the ELF files' symbols")
    parser.add_argument("--also", type=Path, nargs="*", default=[REPO_ROOT / ".devcarry" / "tiles.npy"])
    parser.add_argument(
        "--bundles",
        nargs="*",
        choices=sorted(BUNDLES),
        default=sorted(BUNDLES),
        help="which bundles to (re)build",
    )
    args = parser.parse_args()
    tag = f"cp{args.python.replace('.', '')}"
    downloads, repacked = args.work / f"download-{tag}", args.work / f"wheels-{tag}"
    args.out.mkdir(parents=True, exist_ok=True)
    downloads.mkdir(parents=True, exist_ok=True)
    repacked.mkdir(parents=True, exist_ok=True)
    total = 0
    for bundle in args.bundles:
        specs = BUNDLES[bundle]
        download(specs, downloads, args.python)
        wheels = []
        for spec in specs:
            src = wheel_for(spec, downloads)
            done = repack_wheel(
                src, repacked / src.name, DROP.get(spec.split("==")[0], ()), not args.no_strip
            )
            print(
                f"  {src.name:<80} {_mib(done.size_in)} → {_mib(done.size_out)} stored "
                f"({done.dropped} dropped, {done.stripped} ELF stripped)"
            )
            wheels.append(done.path)
        size = write_bundle(wheels, args.out / f"{bundle}.tar.xz")
        total += size
        print(f"{bundle}.tar.xz: {_mib(size)}")
    extra = _tracked_bytes() + sum(p.stat().st_size for p in args.also if p.is_file())
    print(
        f"bundles {_mib(total)}; with the tracked files and {', '.join(map(str, args.also))}: "
        f"{_mib(total + extra)} of the {_mib(DEVICE_CARRY_LIMIT_BYTES)} one device call may carry"
    )
    if total + extra > DEVICE_CARRY_LIMIT_BYTES:
        sys.exit("over the device's carry limit")


if __name__ == "__main__":
    main()
