"""``sen2naip evaluate CANDIDATE REFERENCE`` and ``sen2naip evaluate-sr SR LR [--hr HR]``.

Registered as ``sen2naip.commands`` entry points (``pyproject.toml``); typed errors become one line on
stderr and exit code 1 (:func:`sen2naip_hub.cli.main`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

SideArg = Annotated[str, typer.Argument(help="Folder of S2-like GeoTIFFs, or a datasets folder / repo id.")]
ConfigOpt = Annotated[str, typer.Option(help="datasets config (when a side is a dataset).")]
SplitOpt = Annotated[str, typer.Option(help="datasets split (when a side is a dataset).")]
JsonOpt = Annotated[Path | None, typer.Option("--json", help="Write every metric to this JSON file.")]
PlotOpt = Annotated[Path | None, typer.Option("--plot", help="Write a PNG of histograms and spectra.")]


def _print(table) -> None:
    from rich.console import Console

    Console(width=140).print(table)


def evaluate_command(
    candidate: SideArg,
    reference: SideArg,
    json_out: JsonOpt = None,
    plot: PlotOpt = None,
    config: ConfigOpt = "cross_sensor",
    split: SplitOpt = "test",
    denoiser: Annotated[
        Path | None,
        typer.Option(help="denoiser.safetensors from `sen2naip fit noise` (else trained on REFERENCE)."),
    ] = None,
    denoiser_steps: Annotated[
        int | None, typer.Option(min=1, help="Training steps of the denoiser trained on REFERENCE.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of pixel subsampling and denoiser training.")] = 0,
) -> None:
    """Realism of CANDIDATE (LR images) against REFERENCE (real Sentinel-2): distributions, spectra,
    noise, and paired scores for files of the same name. ``distance``: lower is closer, 0 = identical."""
    from dataset_builder.evaluate.report import evaluation_table, plot_evaluation, save_json
    from dataset_builder.evaluate.run import evaluate_sets
    from dataset_builder.evaluate.sources import read_set

    result = evaluate_sets(
        read_set(candidate, config, split),
        read_set(reference, config, split),
        denoiser=denoiser,
        denoiser_steps=denoiser_steps,
        seed=seed,
    )
    _print(evaluation_table(result))
    if json_out is not None:
        typer.echo(f"wrote {save_json(result, json_out)}")
    if plot is not None:
        typer.echo(f"wrote {plot_evaluation(result, plot)}")


def evaluate_sr_command(
    sr: Annotated[str, typer.Argument(help="Folder of super-resolved GeoTIFFs (Sentinel-2 radiometry).")],
    lr: SideArg,
    hr: Annotated[str | None, typer.Option(help="HR images of the same names (folder or dataset).")] = None,
    json_out: JsonOpt = None,
    plot: PlotOpt = None,
    model: Annotated[str | None, typer.Option(help="Degradation folder or Hub repo id.")] = None,
    harmonization: Annotated[
        str, typer.Option(help="global | local | none (SR is already S2-like).")
    ] = "none",
    config: ConfigOpt = "cross_sensor",
    split: SplitOpt = "test",
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
) -> None:
    """Degrade SR with the learned degradation and compare with LR (L1, spectral angle, residual
    shift); with --hr, PSNR and SSIM against HR."""
    from dataset_builder.evaluate.report import plot_sr, save_json, sr_table
    from dataset_builder.evaluate.sources import EvaluationError, read_folder, read_set
    from dataset_builder.evaluate.sr import evaluate_sr
    from sen2naip_hub.cli import default_model
    from sen2naip_hub.devices import resolve_device
    from sen2naip_hub.models import Degradation
    from sen2naip_hub.models.harmonization import HARMONIZATION_MODES

    if harmonization not in HARMONIZATION_MODES:
        raise EvaluationError(
            f"--harmonization must be one of {', '.join(HARMONIZATION_MODES)}, got {harmonization!r}"
        )
    device = resolve_device(device)
    result = evaluate_sr(
        read_folder(Path(sr)),
        read_set(lr, config, split, column="lr"),
        Degradation.from_pretrained(model or default_model()),
        read_set(hr, config, split, column="hr") if hr is not None else None,
        harmonization=harmonization,
        device=device,
    )
    _print(sr_table(result))
    if json_out is not None:
        typer.echo(f"wrote {save_json(result, json_out)}")
    if plot is not None:
        typer.echo(f"wrote {plot_sr(result, plot)}")
