"""The ``sen2naip`` command line. Every expected failure is one line on stderr and exit code 1.

Commands from other installed packages (the dataset builder's ``build``, ``push-dataset``, ``fit``)
are added through the ``sen2naip.commands`` entry-point group, so this library never imports them.
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated

import typer

from sen2naip_hub.constants import DEFAULT_MODEL_REPO_ID
from sen2naip_hub.devices import resolve_device
from sen2naip_hub.errors import InvalidImageError, Sen2NaipError
from sen2naip_hub.sensors import NAIP

#: SEN2NAIP's HR pixel size (m); repeated from :mod:`sen2naip_hub.resample` so that ``--help`` needs
#: no rasterio import.
HR_RESOLUTION_M: float = NAIP.resolution_m

app = typer.Typer(
    name="sen2naip",
    help="SEN2NAIP degradation: NAIP (2.5 m, R G B NIR) → Sentinel-2-like (10 m, B04 B03 B02 B08).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

LOCAL_MODEL = Path("models") / "sen2naip-degradation"


def default_model() -> str:
    """``$SEN2NAIP_MODEL``, else ``./models/sen2naip-degradation`` when present, else the Hub repo."""
    env = os.environ.get("SEN2NAIP_MODEL")
    if env:
        return env
    return str(LOCAL_MODEL) if LOCAL_MODEL.is_dir() else DEFAULT_MODEL_REPO_ID


@app.command()
def degrade(
    input: Annotated[
        Path, typer.Argument(help="NAIP GeoTIFF: 4 bands R, G, B, NIR (uint8, or float in [0, 1]).")
    ],
    output: Annotated[Path, typer.Argument(help="Output S2-like COG (uint16 reflectance × 10000).")],
    model: Annotated[str | None, typer.Option(help="Degradation folder or Hub repo id.")] = None,
    harmonization: Annotated[
        str | None, typer.Option(help="global | local | none (default: the model's).")
    ] = None,
    noise: Annotated[bool, typer.Option("--noise/--no-noise", help="Add the learned sensor noise.")] = True,
    seed: Annotated[int, typer.Option(help="Seed of the noise.")] = 0,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    hr_out: Annotated[Path | None, typer.Option(help="Also write the harmonized HR here.")] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 8,
    precision: Annotated[
        str,
        typer.Option(help="U-Net precision: fp32 (as published), fp16 or bf16 (faster; fp16 more accurate)."),
    ] = "fp32",
    compile: Annotated[
        bool,
        typer.Option(
            "--compile/--no-compile",
            help="Fold BatchNorm into the U-Net and torch.compile it and the histogram matching (GPU).",
        ),
    ] = False,
    tile: Annotated[int, typer.Option(min=16, help="Tile size in HR pixels.")] = 512,
    nodata: Annotated[
        float | None,
        typer.Option(help="Input value that means nodata (in every band); default: the file's tag or mask."),
    ] = None,
    hr_resolution: Annotated[
        float, typer.Option(min=0.01, help="HR pixel size (m) finer inputs are area-averaged to; LR = ×4.")
    ] = HR_RESOLUTION_M,
    allow_coarse: Annotated[
        bool, typer.Option("--allow-coarse", help="Degrade inputs coarser than --hr-resolution as they are.")
    ] = False,
    bands: Annotated[
        str | None, typer.Option(help="Input band numbers of R,G,B,NIR, e.g. 3,2,1,4 (default: 1,2,3,4).")
    ] = None,
    scale: Annotated[
        float | None, typer.Option(help="Reflectance per input DN (default: 1/255 for NAIP uint8).")
    ] = None,
) -> None:
    """Degrade a NAIP GeoTIFF of any size into a Sentinel-2-like COG, streaming it window by window
    (memory bounded by --tile and --batch-size, not by the image; see sen2naip_hub.streaming)."""
    from sen2naip_hub.models import Degradation
    from sen2naip_hub.models.harmonization import HARMONIZATION_MODES, PRECISIONS
    from sen2naip_hub.streaming import degrade_file
    from sen2naip_hub.windowed import HrWindowReader

    if harmonization is not None and harmonization not in HARMONIZATION_MODES:
        raise InvalidImageError(
            f"--harmonization must be one of {', '.join(HARMONIZATION_MODES)}, got {harmonization!r}"
        )
    if precision not in PRECISIONS:
        raise InvalidImageError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    _check_outputs(input, output, hr_out)
    reader = HrWindowReader(
        str(input),
        nodata=nodata,
        bands=_band_numbers(bands),
        scale=scale,
        target_m=hr_resolution,
        allow_coarse=allow_coarse,
    )
    reader.check()
    if reader.note:
        typer.echo(reader.note)
    deg = Degradation.from_pretrained(model or default_model())
    deg.harmonization.precision = precision
    if compile:
        deg.compile()
    result = degrade_file(
        deg,
        reader,
        output,
        hr_out=hr_out,
        harmonization=harmonization,
        noise=noise,
        seed=seed,
        device=resolve_device(device),
        batch_size=batch_size,
        tile=tile,
    )
    typer.echo(f"wrote {output} ({result.height}×{result.width} px, bands {', '.join(result.band_names)})")


def _band_numbers(text: str | None) -> list[int] | None:
    """``--bands 3,2,1,4`` → ``[3, 2, 1, 4]``."""
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise InvalidImageError(f"--bands expects band numbers such as 1,2,3,4, got {text!r}") from None


def _check_outputs(input: Path, output: Path, hr_out: Path | None) -> None:
    """Refuse, before any computation, outputs that are folders, lie under a file, overwrite the input
    or each other."""
    from sen2naip_hub.files import check_distinct_outputs, check_output_path

    for path in (output, hr_out):
        if path is not None:
            check_output_path(path, inputs=[input])
    check_distinct_outputs(output, hr_out)


@app.command("convert-reference")
def convert_reference_command(
    out: Annotated[Path, typer.Option(help="Folder for the four Hub-layout model repos.")] = Path("models"),
) -> None:
    """Convert the published SEN2NAIP weights (PyPI opensr-degradation 1.0.1) into Hub repos."""
    from sen2naip_hub.convert import convert_reference

    for name, path in convert_reference(out).items():
        typer.echo(f"{name:>13}: {path}")


@app.command()
def demo(
    sample_dir: Annotated[Path, typer.Option(envvar="SEN2NAIP_SAMPLE_DIR")] = Path("../shared/sample"),
    models_dir: Annotated[Path, typer.Option()] = Path("models"),
    out: Annotated[Path, typer.Option()] = Path("demo_output"),
) -> None:
    """The main job on the real sample: convert weights if missing, degrade NAIP, write LR + a PNG."""
    from sen2naip_hub.demo import run_demo

    run_demo(sample_dir, models_dir, out, echo=typer.echo)


def _add_plugin_commands(argv: list[str]) -> None:
    """Register the entry-point commands. Only the one being run is imported (the others are heavy),
    so ``sen2naip degrade`` never pays for the dataset builder; ``--help`` lists them all."""
    plugins = {ep.name: ep for ep in entry_points(group="sen2naip.commands")}
    wanted = next((arg for arg in argv if not arg.startswith("-")), None)
    for name, ep in plugins.items():
        if name != wanted:
            app.command(name, help=f"({ep.value.split(':')[0]}) run `sen2naip {name} --help`")(_placeholder)
            continue
        try:
            plugin = ep.load()
        except ImportError as err:
            raise Sen2NaipError(
                f"`sen2naip {name}` needs the dataset builder: pip install 'sen2naip-hub[builder]' ({err})"
            ) from err
        if isinstance(plugin, typer.Typer):
            app.add_typer(plugin, name=name)
        else:
            app.command(name)(plugin)


def _placeholder() -> None:  # pragma: no cover - replaced by the real command when it is run
    """Stands in for a plugin command in the help listing."""


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; typed errors become one line on stderr and exit code 1."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        _add_plugin_commands(argv)
        code = app(args=argv, standalone_mode=False)  # a command's typer.Exit(code) comes back as a value
    except Sen2NaipError as err:
        typer.echo(f"error: {err}", err=True)
        return 1
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    except Exception as err:  # usage errors: typer (its own copy of click since 0.26) and click's
        import click

        if isinstance(err, click.exceptions.Exit):
            return err.exit_code
        if isinstance(err, click.ClickException | typer.TyperException) and hasattr(err, "show"):
            err.show()
            return err.exit_code
        raise
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
