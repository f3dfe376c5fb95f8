"""``sen2naip fit blur|harmonization|noise|all``: learn the degradation from data and judge it.

PAIRS is a folder of SEN2NAIP ROI folders (``ROI_0001/hr.tif``, ``lr.tif``, ``metadata.json``), an
``.npz`` (``hr``, ``lr``, ``roi_ids``) or a ``datasets`` folder / Hub repo id (``--config``,
``--split``). Typed errors become one line on stderr and exit code 1 (``sen2naip_hub.cli.main``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sen2naip_hub.devices import resolve_device
from sen2naip_hub.errors import Sen2NaipError

app = typer.Typer(help="Learn the degradation (δ, λ, e) from data.", no_args_is_help=True)

PairsArg = Annotated[str, typer.Argument(help="ROI folders, an .npz, or a datasets folder / repo id.")]
ConfigOpt = Annotated[str, typer.Option(help="datasets config (when PAIRS is a dataset).")]
SplitOpt = Annotated[str, typer.Option(help="datasets split (when PAIRS is a dataset).")]
DeviceOpt = Annotated[str, typer.Option(help="cpu or cuda.")]
DEFAULT_SAMPLE = Path("../shared/sample")


class FitError(Sen2NaipError, ValueError):
    """A fitting input or option the CLI cannot use."""


def _pairs(source: str, config: str, split: str, limit: int | None = None):
    from dataset_builder.fit.pairs import PairSourceError, load_pairs

    try:
        pairs = load_pairs(source, config, split, limit)
    except PairSourceError as err:
        raise FitError(str(err)) from err
    typer.echo(f"{len(pairs)} pairs from {pairs.source} ({pairs.skipped} ROIs with nodata skipped)")
    return pairs


def _blur_model(spec: str):
    """``published`` or a BlurModel folder."""
    from sen2naip_hub.models.blur import BlurModel

    return BlurModel() if spec == "published" else BlurModel.from_pretrained(spec)


@app.command()
def blur(
    pairs: PairsArg,
    out: Annotated[Path, typer.Option(help="Folder of the BlurModel repo to write.")],
    config: ConfigOpt = "cross_sensor",
    split: SplitOpt = "train",
    device: DeviceOpt = "cpu",
    max_shift: Annotated[float, typer.Option(help="Largest misalignment corrected, LR px.")] = 1.0,
    no_register: Annotated[bool, typer.Option("--no-register", help="Pairs are perfectly aligned.")] = False,
    limit: Annotated[int | None, typer.Option(help="Use the first N pairs only.")] = None,
) -> None:
    """Grid search of σ × kernel × downsampling per band (MAE); writes a BlurModel + error curves."""
    from dataset_builder.fit.blur_outputs import save_blur_search
    from dataset_builder.fit.blur_search import BlurSearchError, search_blur

    data = _pairs(pairs, config, split, limit)
    try:
        result = search_blur(
            data.hr,
            data.lr,
            max_shift=max_shift,
            register=not no_register,
            device=resolve_device(device),
            progress=True,
        )
    except BlurSearchError as err:
        raise FitError(str(err)) from err
    save_blur_search(result, out)
    sig = ", ".join(f"{b} {s:.2f}" for b, s in zip(result.band_names, result.sigmas, strict=True))
    typer.echo(f"{result.kernel} + {result.downsample}: σ = {sig} → {out}")


def _train_harmonization(data, out: Path, blur_spec: str, init: str, settings, checkpoints: Path | None):
    from dataset_builder.fit.harmonization import save_harmonization, train_harmonization
    from dataset_builder.fit.pairs import split_by_roi
    from sen2naip_hub.models.harmonization import HarmonizationModel

    train_idx, val_idx = split_by_roi(data.roi_ids)
    start = None
    if init == "published":
        from sen2naip_hub.convert import load_reference_parts

        start = load_reference_parts()["harmonization"]
    elif init != "random":
        start = HarmonizationModel.from_pretrained(init)
    model, state = train_harmonization(
        data.subset(train_idx), data.subset(val_idx), _blur_model(blur_spec), settings,
        checkpoint_dir=checkpoints or out.with_name(out.name + ".checkpoints"), init=start, progress=True,
    )  # fmt: skip
    save_harmonization(model, out, state)
    typer.echo(f"best validation loss {state.best_val:.5f} at step {state.best_step} → {out}")
    return model, (train_idx, val_idx)


@app.command()
def harmonization(
    pairs: PairsArg,
    out: Annotated[Path, typer.Option(help="Folder of the HarmonizationModel repo to write.")],
    blur_model: Annotated[
        str, typer.Option("--blur", help="'published' or a BlurModel folder.")
    ] = "published",
    init: Annotated[str, typer.Option(help="random | published | a HarmonizationModel folder.")] = "random",
    config: ConfigOpt = "cross_sensor",
    split: SplitOpt = "train",
    steps: int = 2000,
    batch_size: int = 8,
    lr: float = 1e-4,
    crop: Annotated[int | None, typer.Option(help="Random HR crops (multiple of 32).")] = None,
    eval_every: int = 100,
    patience: int = 5,
    checkpoints: Annotated[Path | None, typer.Option(help="Checkpoint folder (resumes).")] = None,
    seed: int = 0,
    device: DeviceOpt = "cpu",
) -> None:
    """Train the U-Net through δ at LR resolution (L1 + spectral angle); resumable; early stopping."""
    from dataset_builder.fit.harmonization import HarmonizationTraining

    settings = HarmonizationTraining(
        steps=steps, batch_size=batch_size, lr=lr, crop=crop, eval_every=eval_every, patience=patience,
        seed=seed, device=resolve_device(device), freeze_batchnorm=init != "random",
    )  # fmt: skip
    _train_harmonization(_pairs(pairs, config, split), out, blur_model, init, settings, checkpoints)


@app.command()
def noise(
    out: Annotated[Path, typer.Option(help="Folder of the NoiseModel repo to write.")],
    s2: Annotated[
        list[Path] | None, typer.Option(help="More S2 scenes (.npy / GeoTIFF B04 B03 B02 B08).")
    ] = None,
    sample_dir: Annotated[Path | None, typer.Option(envvar="SEN2NAIP_SAMPLE_DIR")] = DEFAULT_SAMPLE,
    steps: int = 2000,
    batch_size: int = 16,
    patch: int = 48,
    per_band: Annotated[bool, typer.Option(help="One table per band instead of a shared one.")] = False,
    seed: int = 0,
    device: DeviceOpt = "cpu",
) -> None:
    """Train the blind denoiser on clean S2 with synthetic noise; tabulate P(noise | reflectance)."""
    from dataset_builder.fit.denoiser import DenoiserTraining
    from dataset_builder.fit.noise import fit_noise, load_s2_scenes

    sample = sample_dir if sample_dir is not None and sample_dir.is_dir() else None
    scenes = load_s2_scenes(sample, s2 or ())
    settings = DenoiserTraining(
        steps=steps, batch_size=batch_size, patch=patch, seed=seed, device=resolve_device(device)
    )
    repo, summary = fit_noise(scenes, out, settings, per_band=per_band, progress=True)
    ratio = summary.get("ratio_median")
    check = summary["estimator_check"]
    typer.echo(
        f"σ estimator MAE {check['estimator_mae']:.5f} (fixed guess {check['fixed_guess_mae']:.5f}); "
        f"measured/published noise std (median) = {ratio if ratio is None else round(ratio, 3)} → {repo}"
    )


@app.command("all")
def fit_all(
    pairs: PairsArg,
    out: Annotated[
        Path, typer.Option(help="Output folder: blur/, harmonization/, noise/, degradation/, report.")
    ],
    config: ConfigOpt = "cross_sensor",
    split: SplitOpt = "train",
    init: Annotated[str, typer.Option(help="random | published | a HarmonizationModel folder.")] = "random",
    harmonization_steps: int = 2000,
    batch_size: int = 8,
    crop: int | None = None,
    noise_steps: int = 2000,
    sample_dir: Annotated[Path | None, typer.Option(envvar="SEN2NAIP_SAMPLE_DIR")] = DEFAULT_SAMPLE,
    s2: Annotated[list[Path] | None, typer.Option(help="S2 scenes for the noise fit.")] = None,
    seed: int = 0,
    device: DeviceOpt = "cpu",
) -> None:
    """Fit δ, λ and e, assemble a Degradation repo, and write report.md + PNGs on held-out pairs."""
    from dataset_builder.fit.blur_outputs import save_blur_search
    from dataset_builder.fit.blur_search import search_blur
    from dataset_builder.fit.denoiser import DenoiserTraining
    from dataset_builder.fit.harmonization import HarmonizationTraining
    from dataset_builder.fit.noise import fit_noise, load_s2_scenes
    from dataset_builder.fit.report import assemble_and_report

    device = resolve_device(device)
    data = _pairs(pairs, config, split)
    result = search_blur(data.hr, data.lr, device=device, progress=True)
    save_blur_search(result, out / "blur")
    settings = HarmonizationTraining(
        steps=harmonization_steps, batch_size=batch_size, crop=crop, seed=seed, device=device,
        freeze_batchnorm=init != "random",
    )  # fmt: skip
    _, (train_idx, val_idx) = _train_harmonization(
        data, out / "harmonization", str(out / "blur"), init, settings, None
    )
    sample = sample_dir if sample_dir is not None and sample_dir.is_dir() else None
    scenes = load_s2_scenes(sample, s2 or ())
    fit_noise(
        scenes, out / "noise", DenoiserTraining(steps=noise_steps, seed=seed, device=device), progress=True
    )
    report = assemble_and_report(out, data, train_idx, val_idx, seed)
    typer.echo(f"wrote {out / 'degradation'} and {report}")
