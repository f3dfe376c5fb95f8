"""``sen2naip import-release {v1-cross-sensor | v1-synthetic | v2} SRC... --out DIR`` (entry point)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["import_release_command"]


def import_release_command(
    release: Annotated[str, typer.Argument(help="v1-cross-sensor, v1-synthetic or v2.")],
    sources: Annotated[
        list[str], typer.Argument(help="Zips, extracted folders or TACO files; local paths or http(s) URLs.")
    ],
    out: Annotated[Path, typer.Option(help="Dataset folder to write.")],
    work_dir: Annotated[
        Path | None, typer.Option(help="Checkpoint folder (default: build_cache/<out>-import).")
    ] = None,
    qa_filter: Annotated[
        bool, typer.Option("--qa-filter", help="Keep only pairs with QA1 ≤ 1 and QA2 ≤ 2° (v1-cross-sensor).")
    ] = False,
    model: Annotated[
        str | None,
        typer.Option(
            help="v1-synthetic: Degradation folder or Hub id (default: the published one, converted)."
        ),
    ] = None,
    harmonization: Annotated[
        str | None,
        typer.Option(
            help="v1-synthetic: sim:<method> of the release's sim_histograms instead of the model's."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic LR's noise.")] = 0,
    limit: Annotated[
        int | None, typer.Option(help="Import only the first N ROIs / samples (read with range requests).")
    ] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
) -> None:
    """Import a published SEN2NAIP release into a dataset folder that `load_dataset` reads."""
    from dataset_builder.cli import format_counts, load_line
    from dataset_builder.sources.releases.importer import ImportSettings
    from dataset_builder.sources.releases.run import import_release

    settings = ImportSettings(
        release=release,
        sources=tuple(sources),
        out=out,
        work_dir=work_dir or Path("build_cache") / f"{out.name}-import",
        qa_filter=qa_filter,
        model=model,
        harmonization=harmonization,
        seed=seed,
        limit=limit,
    )
    result = import_release(settings, progress=progress, echo=typer.echo)
    typer.echo(format_counts(result.counts))
    typer.echo(
        f"{result.kept} kept, {result.rejected} rejected, {result.filtered} filtered by QA "
        f"(reasons in {result.out / 'manifest.jsonl'})"
    )
    if result.fetched:
        typer.echo(f"{result.fetched} bytes fetched over HTTP")
    typer.echo(f"try: {load_line(result.out, settings.config)}")
