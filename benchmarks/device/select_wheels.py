"""Print the wheels (of the arguments) whose distribution this Python lacks or has in an older version.

``install.sh`` installs only those, so the GPU machine's own packages are never shadowed by an older
or equal copy (its numpy, torch, ... are not carried at all; a carried typing-extensions or attrs is
installed only where the machine's is older than what pydantic or jsonschema need).

    python3 benchmarks/device/select_wheels.py WHEEL...
"""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

from packaging.version import Version

__all__ = ["is_needed", "wheel_name_version"]


def wheel_name_version(wheel: Path) -> tuple[str, Version]:
    """Distribution name and version of a wheel file name (``name-version-tags.whl``, PEP 427)."""
    parts = wheel.name.split("-")
    if len(parts) < 5 or not wheel.name.endswith(".whl"):
        raise ValueError(f"{wheel}: not a wheel file name (expected name-version-python-abi-platform.whl)")
    return parts[0], Version(parts[1])


def is_needed(wheel: Path) -> bool:
    """True when this Python has no distribution of ``wheel``'s name, or an older version of it."""
    name, version = wheel_name_version(wheel)
    try:
        have = Version(importlib.metadata.version(name))
    except importlib.metadata.PackageNotFoundError:
        return True
    return have < version


def main() -> None:
    for arg in sys.argv[1:]:
        if is_needed(Path(arg)):
            print(arg)
        else:
            name, _ = wheel_name_version(Path(arg))
            print(
                f"have {name} {importlib.metadata.version(name)}: skipping {Path(arg).name}", file=sys.stderr
            )


if __name__ == "__main__":
    main()
