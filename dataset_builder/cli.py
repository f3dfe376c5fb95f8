"""``sen2naip build`` and ``sen2naip push-dataset``, added to the ``sen2naip`` CLI by entry points.

Both are plain functions that ``sen2naip_hub.cli`` registers as commands; their typed errors
(:class:`~sen2naip_hub.errors.Sen2NaipError`) become one line on stderr and exit code 1 there.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from sen2naip_hub.errors import Sen2NaipError

__all__ = ["DEMO_CONFIG", "build", "format_counts", "load_line", "push_dataset_command"]

#: The demo build's config, relative to the repository root.
DEMO_CONFIG = Path("dataset_builder") / "configs" / "demo.yaml"


def format_counts(counts: dict[str, dict[str, int]]) -> str:
    """Rows per config and split as a small aligned table."""
    from dataset_builder.core.records import CONFIG_NAMES, SPLIT_NAMES

    lines = [f"{'config':<14}" + "".join(f"{s:>12}" for s in SPLIT_NAMES) + f"{'total':>10}"]
    for config in CONFIG_NAMES:
        splits = counts.get(config, {})
        cells = "".join(f"{splits.get(s, 0):>12}" for s in SPLIT_NAMES)
        lines.append(f"{config:<14}{cells}{sum(splits.values()):>10}")
    return "\n".join(lines)


def load_line(out: Path, config: str = "synthetic", split: str = "train") -> str:
    """A ``python -c`` line that loads the built dataset (by its folder name when it is in the cwd)."""
    name = out.name if out.resolve().parent == Path.cwd().resolve() else str(out.resolve())
    return (
        f'python -c "from datasets import load_dataset; '
        f"print(load_dataset('{name}', '{config}', split='{split}'))\""
    )


class InterruptedBuildError(BaseException):
    """SIGTERM reached a running build. A ``BaseException``, like ``KeyboardInterrupt``, so that no
    per-item fault boundary (:func:`dataset_builder.core.plan.run_task`) takes it for an item's error."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def forget_caught_interrupt() -> None:
    """Make CPython forget a ``KeyboardInterrupt`` that ended code it ran from a string, now caught.

    CPython (3.11 at least) notes a ``KeyboardInterrupt`` that ends any ``exec``/``eval`` of a string
    (``dataclasses`` and ``namedtuple`` build their methods that way, on import), even when a caller
    catches it later; a process started as ``python -m`` then kills itself with SIGINT at exit in place
    of the exit code it was given (-2, not 130). Evaluating a string clears the note: ``eval`` resets it
    before it runs.
    """
    eval("None")


@contextmanager
def stop_signals_resumably(work: Path) -> Iterator[None]:
    """Turn SIGINT and SIGTERM during the block into one line saying how to resume and exit code
    128 + the signal's number (130, 143). Every checkpoint is written atomically, so the ones that exist
    are complete and the next run resumes from them."""

    def raise_interrupted(signum: int, _frame) -> None:
        raise InterruptedBuildError(signum)

    previous = signal.signal(signal.SIGTERM, raise_interrupted)
    try:
        yield
    except (KeyboardInterrupt, InterruptedBuildError) as err:
        forget_caught_interrupt()
        signum = getattr(err, "signum", signal.SIGINT)
        name = signal.Signals(signum).name
        typer.echo(
            f"interrupted by {name}: the checkpoints in {work} are kept; run the same command to resume",
            err=True,
        )
        raise typer.Exit(128 + signum) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def build(
    config: Annotated[Path | None, typer.Option(help="YAML build config (e.g. the demo's).")] = None,
    out: Annotated[str | None, typer.Option(help="Dataset folder to write.")] = None,
    work_dir: Annotated[
        str | None, typer.Option(help="Checkpoint folder (default: build_cache/<out>).")
    ] = None,
    models: Annotated[str | None, typer.Option(help="Folder of converted models.")] = None,
    degradation_model: Annotated[str | None, typer.Option(help="Degradation folder or Hub repo id.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of every random step.")] = None,
    clip_model: Annotated[str | None, typer.Option(help="open_clip architecture, e.g. ViT-B-32.")] = None,
    clip_pretrained: Annotated[
        str | None, typer.Option(help="open_clip pretrained tag or local checkpoint path.")
    ] = None,
    synthetic_size: Annotated[
        int | None, typer.Option(help="Tiles to select for the synthetic config.")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Tiles per degradation batch.")] = None,
    precision: Annotated[
        str | None, typer.Option(help="Degradation U-Net precision: fp32 (as published), bf16 or fp16.")
    ] = None,
    compile: Annotated[
        bool | None,
        typer.Option("--compile/--no-compile", help="torch.compile the degradation (GPUs, large builds)."),
    ] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")] = True,
    backend: Annotated[
        str, typer.Option(help="Where the synthetic stage runs: local, or ray (the optional ray extra).")
    ] = "local",
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address for --backend ray (default: a local cluster).")
    ] = None,
    print_config: Annotated[
        bool, typer.Option("--print-config", help="Print the resolved config as YAML and exit.")
    ] = False,
) -> None:
    """Build (or resume) the SEN2NAIP dataset: cross_sensor and synthetic configs, parquet + card."""
    from dataset_builder.build import build_dataset
    from dataset_builder.core.config import load_config

    overrides = {
        "out": out,
        "work_dir": work_dir,
        "models": models,
        "degradation_model": degradation_model,
        "device": device,
        "seed": seed,
        "synthetic.clip_model": clip_model,
        "synthetic.clip_pretrained": clip_pretrained,
        "synthetic.size": synthetic_size,
        "batch_size": batch_size,
        "precision": precision,
        "compile": compile,
    }
    settings = load_config(config, overrides)
    if print_config:
        typer.echo(settings.to_yaml().rstrip())
        return
    with stop_signals_resumably(settings.work_path):
        result = build_dataset(settings, progress=progress, echo=typer.echo, backend=backend, address=address)
    typer.echo(format_counts(result.counts))
    typer.echo(
        f"{result.kept} kept, {result.rejected} rejected (reasons in {result.manifest}); "
        f"dataset {'written to' if result.changed else 'unchanged in'} {result.out}"
    )
    first = next(iter(result.counts), "synthetic")
    typer.echo(f"try: {load_line(result.out, first)}")


def push_dataset_command(
    folder: Annotated[Path, typer.Argument(help="A dataset folder written by `sen2naip build`.")],
    repo_id: Annotated[str, typer.Option(help="Hub dataset repo, ORG/NAME.")],
    private: Annotated[
        bool | None, typer.Option("--private/--public", help="Visibility if the repo is created.")
    ] = None,
    commit_message: Annotated[str | None, typer.Option(help="Commit message.")] = None,
    revision: Annotated[str | None, typer.Option(help="Branch to push to.")] = None,
) -> None:
    """Upload a built dataset (card + parquet shards) to the Hugging Face Hub."""
    from dataset_builder.write.repo import DEFAULT_COMMIT_MESSAGE, push_dataset

    if not folder.is_dir():
        raise Sen2NaipError(f"{folder}: no such folder; build the dataset first (`sen2naip build`)")
    if "/" not in repo_id:
        raise Sen2NaipError(f"--repo-id must look like ORG/NAME, found {repo_id!r}")
    info = push_dataset(
        folder,
        repo_id,
        commit_message=commit_message or DEFAULT_COMMIT_MESSAGE,
        private=private,
        revision=revision,
    )
    url = getattr(info, "commit_url", None) or f"https://huggingface.co/datasets/{repo_id}"
    typer.echo(f"pushed {folder} to {repo_id}: {url}")
