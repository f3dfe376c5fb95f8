"""``sen2naip publish``: the four model repos, the dataset repo and the Space, complete and consistent.

Every repo is first *staged* in a folder laid out as the Hub names it (which is also the layout a
read-only Hub mirror such as olah serves)::

    <dir>/models/<org>/sen2naip-{blur,harmonization,noise,degradation}/   weights + config + card
    <dir>/datasets/<org>/sen2naip/                                        parquet shards + card
    <dir>/spaces/<org>/sen2naip-degradation/                              app.py, requirements, card,
                                                                          sen2naip_hub/ (the library)

then checked (:func:`check_staged`: every file present, and the cards, the Space's front matter and its
``repos.json`` name exactly the repo ids being published), then either left there (``--dry-run DIR``)
or uploaded, one commit per repo, models first and the Space last (it loads the others).

Cards are rendered from ``model_cards/*.md`` (``string.Template``) with the numbers measured by
``model_cards/measure_fidelity.py`` (``model_cards/fidelity.json``), the speed tables of
``benchmarks/RESULTS.md`` when present and, optionally, a fit report. The dataset card is the one
:func:`dataset_builder.writer.render_dataset_card` writes, for the published repo id, followed by
``model_cards/sen2naip.md``. These paths are those of a source checkout: publishing is a maintainer's
job run from one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Annotated, Any

import typer
import yaml
from huggingface_hub import ModelCard
from huggingface_hub.utils import HFValidationError, validate_repo_id

from dataset_builder.records import CONFIG_NAMES
from dataset_builder.writer import push_dataset, render_dataset_card, scan_shards
from sen2naip_hub import __version__
from sen2naip_hub.constants import DEFAULT_MODEL_REPO_ID, PAPER_CITATION
from sen2naip_hub.convert import REPO_NAMES
from sen2naip_hub.errors import Sen2NaipError
from sen2naip_hub.models.degradation import COMPONENTS
from sen2naip_hub.models.hub import REPO_URL, WEIGHTS_NAME

__all__ = [
    "DEFAULT_ORG",
    "PublishError",
    "RepoIds",
    "StagedRepo",
    "check_staged",
    "publish",
    "publish_command",
    "push_staged",
    "render_model_card",
    "render_space_readme",
    "space_requirements",
    "stage_all",
]

CHECKOUT = Path(__file__).resolve().parents[1]
CARDS_DIR = CHECKOUT / "model_cards"
SPACE_SOURCE = CHECKOUT / "spaces" / "sen2naip-degradation"
LIBRARY_SOURCE = CHECKOUT / "sen2naip_hub"
PYPROJECT = CHECKOUT / "pyproject.toml"
BENCH_RESULTS = CHECKOUT / "benchmarks" / "RESULTS.md"
FIDELITY_FILE = CARDS_DIR / "fidelity.json"
#: The organisation the committed Space README and ``repos.json`` name (that of the library's default).
DEFAULT_ORG: str = DEFAULT_MODEL_REPO_ID.split("/")[0]
DATASET_NAME: str = "sen2naip"
SPACE_NAME: str = "sen2naip-degradation"
#: The gradio version the Space is tested with (tests/test_space*.py), written as its ``sdk_version``.
SPACE_SDK_VERSION: str = "6.31.0"
#: Files the Space repo holds, copied from ``spaces/sen2naip-degradation`` (README, repos.json and
#: requirements.txt are rendered).
SPACE_FILES: tuple[str, ...] = ("app.py", "screenshot.png")
#: The Space's own requirements beside the library's (``spaces/sen2naip-degradation``).
SPACE_REQUIREMENTS = "requirements.txt"
#: The library's folder inside the Space repo. A Space installs ``requirements.txt`` before the repo
#: is copied in, so it cannot install sen2naip-hub from a path in it (and the package is not on
#: PyPI); ``app.py``'s folder is on ``sys.path``, so the copied package imports as it is.
SPACE_LIBRARY = "sen2naip_hub"
MODEL_KINDS: tuple[str, ...] = tuple(REPO_NAMES)  # blur, harmonization, noise, degradation
EXTRA_MODEL_TAGS: tuple[str, ...] = ("sen2naip", "naip", "sentinel-2", "remote-sensing", "super-resolution")
HIDDEN = [".*", "**/.*"]
#: The writer's dataset card section before which ``model_cards/sen2naip.md`` is inserted.
DATASET_CARD_ANCHOR = "\n## Licenses"


class PublishError(Sen2NaipError, ValueError):
    """Something to publish is missing or inconsistent; the message says what and how to make it."""


# ---------------------------------------------------------------------------- repo ids
@dataclass(frozen=True)
class RepoIds:
    """Every repo id one ``publish --org ORG`` creates."""

    org: str

    def model(self, kind: str) -> str:
        return f"{self.org}/{REPO_NAMES[kind]}"

    @property
    def models(self) -> dict[str, str]:
        return {kind: self.model(kind) for kind in MODEL_KINDS}

    @property
    def dataset(self) -> str:
        return f"{self.org}/{DATASET_NAME}"

    @property
    def space(self) -> str:
        return f"{self.org}/{SPACE_NAME}"

    def all(self) -> list[tuple[str, str]]:
        """``(repo_type, repo_id)`` in push order: models, dataset, Space."""
        return [("model", i) for i in self.models.values()] + [
            ("dataset", self.dataset),
            ("space", self.space),
        ]

    def template_values(self) -> dict[str, str]:
        values = {f"{kind}_id": repo_id for kind, repo_id in self.models.items()}
        return values | {"dataset_id": self.dataset, "space_id": self.space, "org": self.org}

    def validate(self) -> None:
        for _, repo_id in self.all():
            try:
                validate_repo_id(repo_id)
            except HFValidationError as err:
                raise PublishError(f"--org {self.org!r} makes an invalid repo id {repo_id!r}: {err}") from err


@dataclass(frozen=True)
class StagedRepo:
    """One repo ready to upload: its folder and the commit that uploads it."""

    repo_type: str
    repo_id: str
    folder: Path
    commit_message: str


def commit_message(repo_type: str, repo_id: str) -> str:
    """The commit message of each upload (names the repo and the code version)."""
    what = {"model": "model", "dataset": "dataset", "space": "Space"}[repo_type]
    return f"Upload {repo_id.split('/')[1]} {what} (sen2naip-hub {__version__})"


def staged_folder(root: Path, repo_type: str, repo_id: str) -> Path:
    """``<root>/<models|datasets|spaces>/<org>/<name>``: the Hub's (and olah's) layout."""
    return root / f"{repo_type}s" / repo_id


# ---------------------------------------------------------------------------- card sections
def _fmt(value: float) -> str:
    return f"{value:.2e}" if abs(value) < 1e-3 and value != 0 else f"{value:.4g}"


#: Which fidelity measurements each model card shows, with their labels.
FIDELITY_ROWS: dict[str, list[tuple[str, str]]] = {
    "blur": [("blur", "δ: blur + ×4 downsampling vs `naipd.blur.blur`")],
    "harmonization": [
        ("unet", "U-Net output vs the published TorchScript U-Net"),
        ("harmonization_global", "λ `global` vs `naipd.harmonization.harmonization_03`"),
    ],
    "noise": [],
    "degradation": [
        ("blur", "δ: blur + ×4 downsampling vs `naipd.blur.blur`"),
        ("unet", "U-Net output vs the published TorchScript U-Net"),
        ("harmonization_global", "λ `global` vs `naipd.harmonization.harmonization_03`"),
        ("degradation_without_noise", "λ → δ (no noise) vs `opensr_degradation.pipe('naip_d')`"),
    ],
}


def fidelity_section(kind: str, fidelity: Mapping[str, Any]) -> str:
    """Markdown table of the measured differences to the published model, with how they were made."""
    metrics = fidelity["metrics"]
    lines = [
        f"Measured against `{fidelity['reference']}` on {fidelity['data']}, {fidelity['measured_on']} "
        f"(torch {fidelity['torch']}), with `{fidelity['command']}`; {fidelity['units']}.",
        "",
    ]
    rows = FIDELITY_ROWS[kind]
    if rows:
        lines += ["| comparison | max abs diff | mean abs diff |", "|---|---|---|"]
        for key, label in rows:
            m = metrics[key]
            lines.append(f"| {label} | {_fmt(m['max_abs_diff'])} | {_fmt(m['mean_abs_diff'])} |")
    if kind in ("noise", "degradation"):
        n = metrics["noise"]
        lines += [
            "",
            f"e: {n['samples_per_bin']:,} draws in each of the {n['bins']} reflectance bins of the table; "
            f"the sampled mean is within {n['max_mean_error_in_std']:.3f} table standard deviations of the "
            f"table's mean, and the sampled standard deviation within "
            f"{100 * n['max_std_relative_error']:.1f} % of the table's, in every bin.",
        ]
    return "\n".join(lines)


def speed_section(results: Path | None) -> str:
    """The tables of ``benchmarks/RESULTS.md`` (its commands and machine notes are there)."""
    if results is None or not results.is_file():
        return "No benchmark results in this release; run `make bench` (CPU) or `benchmarks/bench_gpu.py`."
    kept = [line for line in results.read_text("utf-8").splitlines() if line.startswith(("|", "#"))]
    body = "\n".join(line if line.startswith("|") else f"**{line.lstrip('#').strip()}**\n" for line in kept)
    return (
        f"From `benchmarks/RESULTS.md` of sen2naip-hub {__version__} (commands and machines there):\n\n{body}"
    )


def fit_section(report: Mapping[str, Any] | None) -> str:
    """The numeric entries of a ``sen2naip fit`` report, or a note that the weights are not refitted."""
    if not report:
        return "## Training\n\nNot retrained: these are the published SEN2NAIP weights, converted."
    rows = [f"| `{key}` | {_fmt(value)} |" for key, value in _numeric_leaves(report)]
    return "## Fit report\n\n| metric | value |\n|---|---|\n" + "\n".join(rows)


def _numeric_leaves(data: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, float]]:
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _numeric_leaves(value, f"{name}.")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            yield name, float(value)


def _partials(cards_dir: Path, values: Mapping[str, str]) -> dict[str, str]:
    return {
        path.stem: Template(path.read_text("utf-8")).substitute(values).strip()
        for path in sorted((cards_dir / "partials").glob("*.md"))
    }


# ---------------------------------------------------------------------------- rendering
def model_front_matter(source_card: Path, ids: RepoIds) -> str:
    """The converted repo's card metadata (library_name, license, pipeline_tag, tags) + datasets."""
    data = ModelCard.load(source_card).data if source_card.is_file() else None
    meta = data.to_dict() if data is not None else {}
    meta.setdefault("library_name", "sen2naip-hub")
    meta.setdefault("license", "mit")
    meta.setdefault("pipeline_tag", "image-to-image")
    meta["tags"] = sorted(set(meta.get("tags", [])) | set(EXTRA_MODEL_TAGS))
    meta["datasets"] = [ids.dataset]
    return yaml.safe_dump(meta, sort_keys=True).strip()


def render_model_card(
    kind: str,
    ids: RepoIds,
    fidelity: Mapping[str, Any],
    source_card: Path,
    cards_dir: Path = CARDS_DIR,
    bench_results: Path | None = BENCH_RESULTS,
    fit_report: Mapping[str, Any] | None = None,
) -> str:
    """The card of model repo ``kind`` (``blur``, ``harmonization``, ``noise``, ``degradation``)."""
    values = ids.template_values() | {"repo_id": ids.model(kind), "code_url": REPO_URL}
    values |= _partials(cards_dir, values)
    values |= {
        "front_matter": model_front_matter(source_card, ids),
        "fidelity": fidelity_section(kind, fidelity),
        "speed": speed_section(bench_results),
        "fit": fit_section(fit_report),
        "citation": PAPER_CITATION,
    }
    template = (cards_dir / f"{REPO_NAMES[kind]}.md").read_text("utf-8")
    return Template(template).substitute(values)


def render_dataset_readme(dataset_dir: Path, ids: RepoIds, cards_dir: Path = CARDS_DIR) -> str:
    """The writer's dataset card for the published repo id with ``model_cards/sen2naip.md`` inserted
    before its licenses section (or appended when it has none)."""
    counts = scan_shards(dataset_dir)
    base = render_dataset_card(counts, repo_id=ids.dataset).rstrip() + "\n"
    extra = Template((cards_dir / f"{DATASET_NAME}.md").read_text("utf-8")).substitute(ids.template_values())
    head, marker, tail = base.partition(DATASET_CARD_ANCHOR)  # before the licenses, when there are any
    return f"{head.rstrip()}\n\n{extra.strip()}\n{marker}{tail}" if marker else f"{base}\n{extra}"


def space_front_matter(ids: RepoIds) -> str:
    meta = {
        "title": "SEN2NAIP degradation",
        "emoji": "🛰️",
        "colorFrom": "green",
        "colorTo": "blue",
        "sdk": "gradio",
        "sdk_version": SPACE_SDK_VERSION,
        "app_file": "app.py",
        "pinned": False,
        "license": "mit",
        "short_description": "NAIP → Sentinel-2 degradation beside real Sentinel-2",
        "models": list(ids.models.values()),
        "datasets": [ids.dataset],
        "tags": ["sen2naip", "sentinel-2", "naip", "super-resolution", "remote-sensing"],
    }
    return yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).strip()


def render_space_readme(ids: RepoIds, cards_dir: Path = CARDS_DIR, max_megapixels: float = 4.0) -> str:
    """The Space's README.md: Hub front matter naming exactly ``ids``' repos, then the description."""
    values = ids.template_values() | {
        "front_matter": space_front_matter(ids),
        "model_list": ", ".join(f"[`{i}`](https://huggingface.co/{i})" for i in ids.models.values()),
        "max_megapixels": f"{max_megapixels:g}",
    }
    return Template((cards_dir / "space.md").read_text("utf-8")).substitute(values)


def space_repos_json(ids: RepoIds) -> str:
    """``repos.json``: the repo ids the Space's ``app.py`` loads when no local folder or env var is set."""
    return json.dumps({"model": ids.model("degradation"), "dataset": ids.dataset}, indent=2) + "\n"


# ---------------------------------------------------------------------------- staging
@dataclass(frozen=True)
class Sources:
    """What to publish: converted models, a written dataset, the Space's files, the cards' inputs."""

    models_dir: Path
    dataset_dir: Path
    space_dir: Path = SPACE_SOURCE
    library_dir: Path = LIBRARY_SOURCE
    pyproject: Path = PYPROJECT
    cards_dir: Path = CARDS_DIR
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
        if not self.fidelity_file.is_file():
            raise PublishError(
                f"{self.fidelity_file}: no fidelity measurements; "
                "run `python model_cards/measure_fidelity.py`"
            )


def _copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".*"))


def _stage_models(sources: Sources, ids: RepoIds, root: Path) -> list[StagedRepo]:
    fidelity = json.loads(sources.fidelity_file.read_text("utf-8"))
    report = json.loads(sources.fit_report.read_text("utf-8")) if sources.fit_report else None
    staged = []
    for kind, repo_id in ids.models.items():
        src, dst = sources.models_dir / REPO_NAMES[kind], staged_folder(root, "model", repo_id)
        _copy_tree(src, dst)
        card = render_model_card(
            kind, ids, fidelity, src / "README.md", sources.cards_dir, sources.bench_results, report
        )
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
    (dst / "README.md").write_text(
        render_dataset_readme(sources.dataset_dir, ids, sources.cards_dir), "utf-8"
    )
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
    (dst / "README.md").write_text(render_space_readme(ids, sources.cards_dir), "utf-8")
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


# ---------------------------------------------------------------------------- consistency
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


# ---------------------------------------------------------------------------- pushing
def push_staged(staged: list[StagedRepo], api=None, private: bool | None = None) -> list[Any]:
    """Create each repo (if needed) and upload its folder in one commit; returns the commit infos."""
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    commits = []
    for repo in staged:
        if repo.repo_type == "dataset":
            commits.append(
                push_dataset(
                    repo.folder, repo.repo_id, api=api, commit_message=repo.commit_message, private=private
                )
            )
            continue
        extra = {"space_sdk": "gradio"} if repo.repo_type == "space" else {}
        api.create_repo(
            repo_id=repo.repo_id, repo_type=repo.repo_type, exist_ok=True, private=private, **extra
        )
        commits.append(
            api.upload_folder(
                folder_path=str(repo.folder),
                repo_id=repo.repo_id,
                repo_type=repo.repo_type,
                commit_message=repo.commit_message,
                ignore_patterns=HIDDEN,
            )
        )
    return commits


def publish(
    org: str, sources: Sources, dry_run: Path | None = None, api=None, private: bool | None = None
) -> list[StagedRepo]:
    """Stage every repo; then move them under ``dry_run`` or push them. Returns the staged repos.

    A dry run replaces earlier copies of the same repos under ``dry_run`` only once all are staged
    and checked, so a failure leaves it as it was.
    """
    ids = RepoIds(org)
    if dry_run is None:
        with tempfile.TemporaryDirectory(prefix="sen2naip-publish-") as tmp:
            staged = stage_all(sources, ids, Path(tmp))
            push_staged(staged, api=api, private=private)
        return staged
    dry_run.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".publish-", dir=dry_run) as tmp:
        staged = stage_all(sources, ids, Path(tmp))
        final = []
        for repo in staged:
            target = staged_folder(dry_run, repo.repo_type, repo.repo_id)
            if target.exists():
                shutil.rmtree(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(repo.folder, target)
            final.append(StagedRepo(repo.repo_type, repo.repo_id, target, repo.commit_message))
    return final


def publish_command(
    org: Annotated[str, typer.Option(help="Hub user or organisation that will own the six repos.")],
    dry_run: Annotated[
        Path | None, typer.Option("--dry-run", help="Write the repos under this folder instead of pushing.")
    ] = None,
    models: Annotated[Path, typer.Option(help="Folder of the four model repos (convert-reference).")] = Path(
        "models"
    ),
    dataset: Annotated[Path, typer.Option(help="Dataset folder written by `sen2naip build`.")] = Path(
        DATASET_NAME
    ),
    fit_report: Annotated[
        Path | None, typer.Option(help="A `sen2naip fit` report (JSON) for the cards.")
    ] = None,
    private: Annotated[bool, typer.Option(help="Create the repos private.")] = False,
) -> None:
    """Publish the four degradation models, the dataset and the Space to the Hub (or --dry-run DIR)."""
    sources = Sources(models_dir=models, dataset_dir=dataset, fit_report=fit_report)
    staged = publish(org, sources, dry_run=dry_run, private=private or None)
    verb = "wrote" if dry_run is not None else "pushed"
    for repo in staged:
        where = f" → {repo.folder}" if dry_run is not None else ""
        typer.echo(f"{verb} {repo.repo_type:>7} {repo.repo_id}{where}")


def write_space_readme(space_dir: Path = SPACE_SOURCE, org: str = DEFAULT_ORG) -> None:
    """(Re)write the committed ``README.md`` and ``repos.json`` of the Space folder for ``org``."""
    ids = RepoIds(org)
    (space_dir / "README.md").write_text(render_space_readme(ids), "utf-8")
    (space_dir / "repos.json").write_text(space_repos_json(ids), "utf-8")


if __name__ == "__main__":  # python -m dataset_builder.publish: refresh the committed Space README
    write_space_readme()
