"""A GPU-machine-like site folder on this machine: the project's virtualenv without what the bundles carry.

To show that the bundles of ``pack_wheels.py`` hold everything the Ray build needs, this links every
top-level entry of this Python's site-packages into ``OUT`` *except* the files of the distributions
the bundles carry (ray, rasterio, pydantic, open_clip, timm, smp, jsonschema, pystac, ...) and of
:data:`ABSENT` ones the GPU machine lacks too (``datasets``). ``OUT`` is the site-packages of a fresh
virtualenv (so Ray's worker processes, started with the same interpreter, see the same), and
``/tmp/site311`` the bundles installed by ``install.sh``:

    python -m venv --without-pip /tmp/devlike
    python benchmarks/device/devlike_site.py /tmp/devlike/lib/python3.11/site-packages /tmp/w311/wheels/*.whl
    PYTHON=/tmp/devlike/bin/python bash benchmarks/device/install.sh /tmp/w311 /tmp/site311
    PYTHONPATH=/tmp/site311:$PWD /tmp/devlike/bin/python benchmarks/bench_ray.py
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import sysconfig
from pathlib import Path

#: Distributions the GPU machine lacks besides those the bundles carry (its package list, ENVIRONMENT.md).
ABSENT: tuple[str, ...] = ("datasets", "opensr-degradation", "pystac")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def carried(wheels: list[Path]) -> set[str]:
    """Normalised distribution names of wheel files (``name-version-tags.whl``)."""
    return {_normal(p.name.split("-", 1)[0]) for p in wheels if p.name.endswith(".whl")}


def owned_entries(names: set[str]) -> set[str]:
    """Top-level site-packages entries (packages, modules, .dist-info, .libs) of the distributions."""
    entries: set[str] = set()
    for dist in importlib.metadata.distributions():
        if _normal(dist.metadata["Name"]) in names:
            entries |= {Path(f).parts[0] for f in dist.files or () if not str(f).startswith("..")}
    return entries


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path)
    parser.add_argument("wheels", type=Path, nargs="+", help="the wheels the bundles carry")
    args = parser.parse_args()
    hidden = owned_entries(carried(args.wheels) | {_normal(n) for n in ABSENT})
    site = Path(sysconfig.get_paths()["purelib"])
    args.out.mkdir(parents=True, exist_ok=True)
    linked = 0
    for entry in sorted(site.iterdir()):
        if entry.name not in hidden and entry.name != "__pycache__":
            (args.out / entry.name).symlink_to(entry)
            linked += 1
    print(f"{args.out}: {linked} entries of {site} linked, {len(hidden)} hidden: {', '.join(sorted(hidden))}")


if __name__ == "__main__":
    main()
