"""A whole dataset repo: shards and card written together, and pushed to the Hub in one commit."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from dataset_builder.core.records import CONFIG_NAMES, PairRecord
from dataset_builder.core.splits import RoiSplitter
from dataset_builder.write.card import FACTS_NAME, BuildFacts, write_dataset_card
from dataset_builder.write.shards import ShardLimits, WriterError, write_config

__all__ = ["DEFAULT_COMMIT_MESSAGE", "DEFAULT_REPO_ID", "push_dataset", "write_dataset"]

DEFAULT_REPO_ID: str = "sen2naip"
DEFAULT_COMMIT_MESSAGE: str = "Upload SEN2NAIP parquet shards and dataset card"


def write_dataset(
    records_by_config: Mapping[str, Iterable[PairRecord]],
    out_dir: str | os.PathLike,
    repo_id: str = DEFAULT_REPO_ID,
    splitter: RoiSplitter | None = None,
    limits: ShardLimits | None = None,
    facts: BuildFacts | None = None,
) -> dict[str, dict[str, int]]:
    """Write every given config, then the card; return ``{config: {split: rows}}`` for the configs written.

    ``facts`` describe where the rows came from (:class:`~dataset_builder.write.card.BuildFacts`); the
    default says that it was not recorded.
    """
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    splitter = splitter or RoiSplitter()
    counts = {
        config: write_config(records, out_dir, config, splitter=splitter, limits=limits)
        for config, records in records_by_config.items()
    }
    facts = facts or BuildFacts(repo_id=repo_id, splitter=splitter)
    write_dataset_card(out_dir, facts)
    return counts


def push_dataset(
    folder: str | os.PathLike,
    repo_id: str,
    api=None,
    commit_message: str = DEFAULT_COMMIT_MESSAGE,
    private: bool | None = None,
    revision: str | None = None,
):
    """Create the dataset repo if needed and upload ``folder`` (card + shards) in one commit.

    ``api`` is an ``huggingface_hub.HfApi`` (a default one is built when None). Hidden files
    (temporary shards) are never uploaded. Returns ``upload_folder``'s commit info.
    """
    folder = Path(folder)
    if not (folder / "README.md").is_file():
        raise WriterError(f"{folder}: no README.md dataset card; run write_dataset first")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    api.create_repo(repo_id=repo_id, repo_type="dataset", exist_ok=True, private=private)
    return api.upload_folder(
        folder_path=str(folder),
        repo_id=repo_id,
        repo_type="dataset",
        commit_message=commit_message,
        revision=revision,
        allow_patterns=["README.md", FACTS_NAME, *(f"{c}/*.parquet" for c in CONFIG_NAMES)],
        ignore_patterns=[".*", "**/.*"],
    )
