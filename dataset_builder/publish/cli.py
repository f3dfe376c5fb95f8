"""``sen2naip publish``, and the refresh of the committed Space README."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dataset_builder.publish.cards import render_space_readme, space_repos_json
from dataset_builder.publish.ids import DATASET_NAME, DEFAULT_ORG, RepoIds
from dataset_builder.publish.push import publish
from dataset_builder.publish.stage import SPACE_SOURCE, Sources

__all__ = ["publish_command", "write_space_readme"]


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
    (space_dir / "README.md").write_text(render_space_readme(ids, converted=True), "utf-8")
    (space_dir / "repos.json").write_text(space_repos_json(ids), "utf-8")
