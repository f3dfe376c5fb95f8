"""The import contracts hold for the project, and the check fails on planted violations."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from import_contracts import check

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_the_project_keeps_its_import_contracts() -> None:
    assert check(REPO_ROOT) == []


@pytest.fixture
def tree(tmp_path) -> Path:
    """A copy of the project's packages and Space to plant bad imports in."""
    for name in ("sen2naip_hub", "dataset_builder", "spaces"):
        shutil.copytree(
            REPO_ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "*.png")
        )
    assert check(tmp_path) == []
    return tmp_path


def _plant(path: Path, line: str, inside_function: bool = False) -> None:
    code = f"\n\ndef _planted():\n    {line}\n" if inside_function else f"\n{line}\n"
    with path.open("a", encoding="utf-8") as handle:
        handle.write(code)


def test_the_library_importing_the_builder_fails(tree) -> None:
    _plant(tree / "sen2naip_hub" / "io.py", "from dataset_builder.core import facts", inside_function=True)
    assert check(tree) == ["layer: sen2naip_hub.io imports dataset_builder.core.facts"]


def test_the_builder_importing_the_space_fails(tree) -> None:
    _plant(tree / "dataset_builder" / "build.py", "import spaces.sen2naip_degradation.app")
    assert check(tree) == ["layer: dataset_builder.build imports spaces.sen2naip_degradation.app"]


def test_an_import_cycle_fails_even_through_a_lazy_import(tree) -> None:
    _plant(tree / "dataset_builder" / "core" / "facts.py", "from dataset_builder.core import tiling", True)
    problems = check(tree)
    assert len(problems) == 1 and problems[0].startswith("cycle: ")
    assert "dataset_builder.core.facts" in problems[0] and "dataset_builder.core.tiling" in problems[0]


def test_a_private_import_across_modules_fails(tree) -> None:
    _plant(tree / "dataset_builder" / "build.py", "from dataset_builder.core.config import _describe")
    _plant(tree / "dataset_builder" / "cli.py", "import dataset_builder.core.config as c\nc._known_keys")
    assert check(tree) == [
        "private: dataset_builder.build uses from dataset_builder.core.config import _describe",
        "private: dataset_builder.cli uses dataset_builder.core.config._known_keys",
    ]
