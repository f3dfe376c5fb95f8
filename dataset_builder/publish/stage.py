"""Staging: every repo written under one folder in the Hub's layout, then checked for completeness and
for naming exactly the repo ids being published.

The Space's files, ``pyproject.toml``, the benchmark results and the fidelity measurements are read
from the source checkout this package runs from (publishing is a maintainer's job run from one); the
library copied into the Space is the installed ``sen2naip_hub`` package.
"""

from __future__ import annotations

import json
import re
import shutil
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

import sen2naip_hub
from dataset_builder.core.records import CONFIG_NAMES
from dataset_builder.publish.cards import (
    render_dataset_readme,
    render_model_card,
    render_space_readme,
    space_repos_json,
)
from dataset_builder.publish.ids import PublishError, RepoIds, StagedRepo, commit_message, staged_folder
from dataset_builder.write.card import FACTS_NAME
from dataset_builder.write.shards import scan_shards
from sen2naip_hub import __version__
from sen2naip_hub.convert import REPO_NAMES
from sen2naip_hub.models.degradation import COMPONENTS
from sen2naip_hub.models.hub import WEIGHTS_NAME

__all__ = ["SPACE_SOURCE", "Sources", "check_staged", "space_requirements", "stage_all"]

CHECKOUT = Path(__file__).resolve().parents[2]
SPACE_SOURCE = CHECKOUT / "spaces" / "sen2naip-degradation"
LIBRARY_SOURCE = Path(sen2naip_hub.__file__).resolve().parent
PYPROJECT = CHECKOUT / "pyproject.toml"
BENCH_RESULTS = CHECKOUT / "benchmarks" / "RESULTS.md"
#: The published model's fidelity, measured by ``model_cards/measure_fidelity.py``.
FIDELITY_FILE = CHECKOUT / "model_cards" / "fidelity.json"
#: Files the Space repo holds, copied from ``spaces/sen2naip-degradation`` (README, repos.json and
#: requirements.txt are rendered).
SPACE_FILES: tuple[str, ...] = ("app.py", "screenshot.png")
#: The Space's own requirements beside the library's (``spaces/sen2naip-degradation``).
SPACE_REQUIREMENTS = "requirements.txt"
#: The library's folder inside the Space repo. A Space installs ``requirements.txt`` before the repo
#: is copied in, so it cannot install sen2naip-hub from a path in it (and the package is not on
#: PyPI); ``app.py``'s folder is on ``sys.path``, so the copied package imports as it is.
SPACE_LIBRARY = "sen2naip_hub"


@dataclass(frozen=True)
class Sources:
    """What to publish: converted models, a written dataset, the Space's files, the cards' inputs."""

    models_dir: Path
    dataset_dir: Path
    space_dir: Path = SPACE_SOURCE
    library_dir: Path = LIBRARY_SOURCE
    pyproject: Path = PYPROJECT
    fidelity_file: Path = FIDELITY_FILE
    bench_results: Path | None = BENCH_RESULTS
    fit_report: Path | None = None

    def check(self) -> None:
        for kind, name in REPO_NAMES.items():
            if not (self.models_dir / name / "config.json").is_file():
                raise PublishError(
                    f"{self.models_dir / name}: no {kind} model; run `sen2naip convert-reference --out "
                    f"{self.models_dir}` (or `sen2naip fit`)"
                )
        if not (self.dataset_dir / "README.md").is_file() or not scan_shards(self.dataset_dir):
            raise PublishError(
                f"{self.dataset_dir}: no dataset (card + parquet shards); run `sen2naip build`"
            )
        missing = [n for n in (*SPACE_FILES, SPACE_REQUIREMENTS) if not (self.space_dir / n).is_file()]
        if missing:
            raise PublishError(f"{self.space_dir}: missing Space files {missing}")
        if self.fit_report is None and not self.fidelity_file.is_file():
            raise PublishError(
                f"{self.fidelity_file}: no fidelity measurements; "
                "run `python model_cards/measure_fidelity.py`"
            )


def _copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".*"))


def _stage_models(sources: Sources, ids: RepoIds, root: Path) -> list[StagedRepo]:
    fidelity = json.loads(sources.fidelity_file.read_text("utf-8")) if sources.fidelity_file.is_file() else {}
    report = json.loads(sources.fit_report.read_text("utf-8")) if sources.fit_report else None
    staged = []
    for kind, repo_id in ids.models.items():
        src, dst = sources.models_dir / REPO_NAMES[kind], staged_folder(root, "model", repo_id)
        _copy_tree(src, dst)
        card = render_model_card(kind, ids, fidelity, src / "README.md", sources.bench_results, report)
        (dst / "README.md").write_text(card, "utf-8")
        staged.append(StagedRepo("model", repo_id, dst, commit_message("model", repo_id)))
    return staged


def _stage_dataset(sources: Sources, ids: RepoIds, root: Path) -> StagedRepo:
    dst = staged_folder(root, "dataset", ids.dataset)
    dst.mkdir(parents=True)
    for config in CONFIG_NAMES:
        for shard in sorted((sources.dataset_dir / config).glob("*.parquet")):
            (dst / config).mkdir(exist_ok=True)
            shutil.copy2(shard, dst / config / shard.name)
    if (sources.dataset_dir / FACTS_NAME).is_file():
        shutil.copy2(sources.dataset_dir / FACTS_NAME, dst / FACTS_NAME)
    (dst / "README.md").write_text(render_dataset_readme(sources.dataset_dir, ids), "utf-8")
    return StagedRepo("dataset", ids.dataset, dst, commit_message("dataset", ids.dataset))


def space_requirements(pyproject: Path = PYPROJECT, space_dir: Path = SPACE_SOURCE) -> str:
    """The Space's ``requirements.txt``: the library's dependencies as ``pyproject.toml`` pins them,
    then the Space's own (``requirements.txt`` of ``space_dir``, whose comments are dropped)."""
    library = tomllib.loads(pyproject.read_text("utf-8"))["project"]["dependencies"]
    own = [
        line.strip()
        for line in (space_dir / SPACE_REQUIREMENTS).read_text("utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    header = [
        f"# Written by `sen2naip publish` (sen2naip-hub {__version__}); gradio comes from the README's",
        f"# sdk_version. The library itself is the {SPACE_LIBRARY}/ folder beside app.py; its dependencies:",
    ]
    return "\n".join([*header, *library, "# the Space's own:", *own]) + "\n"


def _stage_space(sources: Sources, ids: RepoIds, root: Path) -> StagedRepo:
    dst = staged_folder(root, "space", ids.space)
    dst.mkdir(parents=True)
    for name in SPACE_FILES:
        shutil.copy2(sources.space_dir / name, dst / name)
    shutil.copytree(
        sources.library_dir, dst / SPACE_LIBRARY, ignore=shutil.ignore_patterns(".*", "__pycache__", "*.pyc")
    )
    (dst / SPACE_REQUIREMENTS).write_text(space_requirements(sources.pyproject, sources.space_dir), "utf-8")
    converted = sources.fit_report is None
    (dst / "README.md").write_text(render_space_readme(ids, converted=converted), "utf-8")
    (dst / "repos.json").write_text(space_repos_json(ids), "utf-8")
    return StagedRepo("space", ids.space, dst, commit_message("space", ids.space))


def stage_all(sources: Sources, ids: RepoIds, root: Path) -> list[StagedRepo]:
    """Write every repo under ``root`` (Hub layout) and check them; returns them in push order."""
    ids.validate()
    sources.check()
    staged = [
        *_stage_models(sources, ids, root),
        _stage_dataset(sources, ids, root),
        _stage_space(sources, ids, root),
    ]
    check_staged(staged, ids)
    return staged


def _front(text: str) -> dict[str, Any]:
    parts = text.split("---\n", 2)
    if not text.startswith("---\n") or len(parts) < 3:
        raise PublishError("card without YAML front matter")
    return yaml.safe_load(parts[1]) or {}


def _required_files(repo: StagedRepo) -> list[str]:
    if repo.repo_type == "space":
        return ["README.md", "repos.json", SPACE_REQUIREMENTS, *SPACE_FILES, f"{SPACE_LIBRARY}/__init__.py"]
    if repo.repo_type == "dataset":
        return ["README.md"]
    if repo.repo_id.endswith(REPO_NAMES["degradation"]):
        parts = [f"{part}/{name}" for part in COMPONENTS for name in ("config.json", WEIGHTS_NAME)]
        return ["README.md", "config.json", *parts]
    return ["README.md", "config.json", WEIGHTS_NAME]


def _check_metadata(repo: StagedRepo, meta: dict[str, Any], ids: RepoIds) -> list[str]:
    problems = []
    if repo.repo_type == "model":
        expected = {"license": "mit", "library_name": "sen2naip-hub", "pipeline_tag": "image-to-image"}
        problems += [
            f"{k} is {meta.get(k)!r}, expected {v!r}" for k, v in expected.items() if meta.get(k) != v
        ]
        if meta.get("datasets") != [ids.dataset]:
            problems.append(f"datasets {meta.get('datasets')} != [{ids.dataset!r}]")
    elif repo.repo_type == "dataset":
        if not meta.get("configs") or not meta.get("license"):
            problems.append("dataset card without configs or license")
    else:
        if meta.get("models") != list(ids.models.values()) or meta.get("datasets") != [ids.dataset]:
            problems.append(f"front matter names {meta.get('models')} / {meta.get('datasets')}")
        if meta.get("sdk") != "gradio" or meta.get("app_file") != "app.py":
            problems.append("front matter is not a gradio Space running app.py")
        repos = json.loads((repo.folder / "repos.json").read_text("utf-8"))
        if repos != {"model": ids.model("degradation"), "dataset": ids.dataset}:
            problems.append(f"repos.json names {repos}")
    return problems


def _foreign_ids(text: str, ids: RepoIds) -> set[str]:
    """Ids of this org's sen2naip repos mentioned in ``text`` that are not being published."""
    mentioned = set(re.findall(rf"(?<![\w.-]){re.escape(ids.org)}/sen2naip[\w.-]*\w", text))
    return mentioned - {repo_id for _, repo_id in ids.all()}


def check_staged(staged: list[StagedRepo], ids: RepoIds) -> None:
    """Raise :class:`PublishError` unless every repo is complete and names only ``ids``' repos."""
    expected = ids.all()
    found = [(r.repo_type, r.repo_id) for r in staged]
    if found != expected:
        raise PublishError(f"staged repos {found} differ from {expected}")
    problems: list[str] = []
    for repo in staged:
        missing = [name for name in _required_files(repo) if not (repo.folder / name).is_file()]
        problems += [f"{repo.repo_id}: missing {name}" for name in missing]
        if repo.repo_type == "dataset" and not list(repo.folder.glob("*/*.parquet")):
            problems.append(f"{repo.repo_id}: no parquet shards")
        if missing:
            continue
        card = (repo.folder / "README.md").read_text("utf-8")
        problems += [f"{repo.repo_id}: {p}" for p in _check_metadata(repo, _front(card), ids)]
        foreign = _foreign_ids(card, ids)
        if foreign:
            problems.append(f"{repo.repo_id}: README names repos not published: {sorted(foreign)}")
        if repo.repo_type == "model" and repo.repo_id not in card:
            problems.append(f"{repo.repo_id}: card does not name its own repo id")
    if problems:
        raise PublishError("; ".join(problems))
