"""Pushing staged repos: one commit each, models first and the Space last (it loads the others)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from dataset_builder.publish.ids import RepoIds, StagedRepo, staged_folder
from dataset_builder.publish.stage import Sources, stage_all
from dataset_builder.write.repo import push_dataset

__all__ = ["publish", "push_staged"]

HIDDEN = [".*", "**/.*"]


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
