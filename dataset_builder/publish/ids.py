"""The repos one ``sen2naip publish --org ORG`` creates, and how each is staged and committed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from huggingface_hub.utils import HFValidationError, validate_repo_id

from sen2naip_hub import __version__
from sen2naip_hub.constants import DEFAULT_MODEL_REPO_ID
from sen2naip_hub.convert import REPO_NAMES
from sen2naip_hub.errors import Sen2NaipError

__all__ = [
    "DATASET_NAME",
    "DEFAULT_ORG",
    "MODEL_KINDS",
    "SPACE_NAME",
    "PublishError",
    "RepoIds",
    "StagedRepo",
    "commit_message",
    "staged_folder",
]

#: The organisation the committed Space README and ``repos.json`` name (that of the library's default).
DEFAULT_ORG: str = DEFAULT_MODEL_REPO_ID.split("/")[0]
DATASET_NAME: str = "sen2naip"
SPACE_NAME: str = "sen2naip-degradation"
MODEL_KINDS: tuple[str, ...] = tuple(REPO_NAMES)  # blur, harmonization, noise, degradation


class PublishError(Sen2NaipError, ValueError):
    """Something to publish is missing or inconsistent; the message says what and how to make it."""


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
