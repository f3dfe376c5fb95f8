"""What the Space installs (``sen2naip publish`` writes it from pyproject.toml and the Space's own
requirements.txt) pins nothing a user cannot install.

Checked against the registry (2026-12): ``pip install --dry-run --python-version 3.11 --only-binary=:all:
torch==2.14.1`` fails (its pinned ``nvidia-nccl-cu13==2.30.7`` is not there; 2.11-2.15 likewise), while
the Space's whole set with ``torch>=2.10`` resolves. torch is pinned exactly on this machine only by its
local constraint file, not by the project.
"""

from __future__ import annotations

import ast
from pathlib import Path

from packaging.requirements import Requirement

from dataset_builder.publish import space_requirements

ROOT = Path(__file__).resolve().parents[1]
SPACE_DIR = ROOT / "spaces" / "sen2naip-degradation"
#: Packages whose wheels pin hardware-specific builds of their dependencies (CUDA libraries): an exact
#: pin leaves pip no installable choice when one of those builds is missing for the user's platform.
NO_EXACT_PIN: tuple[str, ...] = ("torch",)


def _requirements(text: str) -> list[Requirement]:
    return [Requirement(line) for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _imports(paths: list[Path]) -> set[str]:
    names = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
    return names


def test_every_line_is_an_index_requirement():
    for requirement in _requirements(space_requirements()):
        assert requirement.url is None, requirement
        assert not requirement.marker, requirement


def test_torch_is_not_pinned_to_one_build():
    requirements = {r.name.lower(): r for r in _requirements(space_requirements())}
    for name in NO_EXACT_PIN:
        operators = {spec.operator for spec in requirements[name].specifier}
        assert not operators & {"==", "==="}, requirements[name]


def test_nothing_is_installed_that_the_space_does_not_import():
    """torchvision (needed by the builder's CLIP, not by the library nor the Space) is not asked for."""
    names = {r.name.lower() for r in _requirements(space_requirements())}
    used = _imports([*sorted((ROOT / "sen2naip_hub").rglob("*.py")), SPACE_DIR / "app.py"])
    assert "torchvision" not in names and "torchvision" not in used
