"""The base class of every model here: ``nn.Module`` + ``PyTorchModelHubMixin``, loaded strictly.

``from_pretrained`` takes a local folder or a Hub repo id; weights are safetensors only, loaded once,
with ``strict=True`` so a file that does not match the architecture fails instead of half-loading.
Anything that cannot be resolved to a model becomes :class:`ModelNotFoundError`; a model that was found
but whose config or weights are invalid becomes :class:`InvalidModelError`.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import safetensors.torch
from huggingface_hub import ModelCard, PyTorchModelHubMixin, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError
from torch import nn

from sen2naip_hub.constants import PAPER_CITATION, PAPER_URL, REFERENCE_LICENSE
from sen2naip_hub.errors import InvalidModelError, ModelNotFoundError, Sen2NaipError
from sen2naip_hub.files import atomic_file

WEIGHTS_NAME = "model.safetensors"
REPO_URL = "https://github.com/sen2naip-hub/sen2naip-hub"
T = TypeVar("T", bound="HubModel")

#: What "this model cannot be found" looks like: a bad repo id, a missing repo, revision or file (on the
#: Hub or in the offline cache), a missing local file. Any other error (a bad value in config.json,
#: weights that do not fit it) is about a model that *was* found: :class:`InvalidModelError`.
_RESOLVE_ERRORS = (HFValidationError, HfHubHTTPError, LocalEntryNotFoundError, FileNotFoundError)
CONFIG_NAME = "config.json"


class HubModel(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="sen2naip-hub",
    license=REFERENCE_LICENSE,
    repo_url=REPO_URL,
    paper_url=PAPER_URL,
    pipeline_tag="image-to-image",
    model_card_template=resources.files("sen2naip_hub").joinpath("templates/model_card.md").read_text(),
):
    """Shared Hub behaviour. Subclasses set a docstring (its first paragraph becomes the card's
    description); ``card_source``, when set, is the card's note on where the weights come from."""

    card_source: str | None = None

    @classmethod
    def from_pretrained(cls: type[T], pretrained_model_name_or_path: str | Path, **kwargs: Any) -> T:
        """Load from a local folder (``config.json`` + ``model.safetensors``) or a Hub repo id."""
        name = str(pretrained_model_name_or_path)
        if _looks_like_path(name) and not os.path.isdir(name):
            raise ModelNotFoundError(f"{name}: no such model folder (expected config.json + {WEIGHTS_NAME})")
        if os.path.isdir(name) and not os.path.isfile(os.path.join(name, CONFIG_NAME)):
            raise ModelNotFoundError(f"{name}: not a {cls.__name__} repo (no {CONFIG_NAME} in this folder)")
        try:
            return super().from_pretrained(name, **kwargs)
        except Sen2NaipError:
            raise
        except _RESOLVE_ERRORS as err:
            raise ModelNotFoundError(
                f"{name}: not a local model folder nor a reachable Hub repo ({err})"
            ) from err

    @classmethod
    def _from_pretrained(
        cls: type[T],
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        map_location: str = "cpu",
        strict: bool = True,
        **model_kwargs: Any,
    ) -> T:
        try:
            model = cls(**model_kwargs)
        except (TypeError, ValueError) as err:
            message = f"{model_id}: {CONFIG_NAME} does not make a {cls.__name__} ({err})"
            raise InvalidModelError(message) from err
        if os.path.isdir(model_id):
            weights = os.path.join(model_id, WEIGHTS_NAME)
            if not os.path.isfile(weights):
                raise ModelNotFoundError(f"{model_id}: no {WEIGHTS_NAME} in this folder")
        else:
            weights = hf_hub_download(
                repo_id=model_id,
                filename=WEIGHTS_NAME,
                revision=revision,
                cache_dir=cache_dir,
                force_download=force_download,
                token=token,
                local_files_only=local_files_only,
            )
        try:
            safetensors.torch.load_model(model, weights, strict=strict, device=map_location)
        except RuntimeError as err:
            first = str(err).strip().splitlines()
            detail = " ".join(line.strip() for line in first[:2])
            raise InvalidModelError(
                f"{model_id}: {WEIGHTS_NAME} does not fit its {CONFIG_NAME} ({detail})"
            ) from err
        # load_model copies into the existing parameters, which stay where they were: move the module.
        return model.to(map_location).eval()

    def _save_pretrained(self, save_directory: Path) -> None:
        """``model.safetensors`` through :func:`atomic_file`: complete or absent, and with the umask's
        permissions (safetensors alone leaves its 0o600 temporary file's)."""
        with atomic_file(Path(save_directory) / WEIGHTS_NAME) as tmp:
            safetensors.torch.save_model(self, str(tmp))

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        """The card: the class docstring as description, the config as a table, the citation."""
        kwargs.setdefault("model_name", type(self).__name__)
        kwargs.setdefault("model_description", _summary(type(self).__doc__))
        kwargs.setdefault("config_items", sorted((self._hub_mixin_config or {}).items()))
        kwargs.setdefault("citation", PAPER_CITATION)
        kwargs.setdefault("source", self.card_source)
        return super().generate_model_card(*args, **kwargs)


def _summary(docstring: str | None) -> str:
    """The first paragraph of a docstring, on one line."""
    first = (docstring or "").strip().split("\n\n")[0]
    return " ".join(first.split())


def _looks_like_path(name: str) -> bool:
    """True for things a user meant as a path: absolute, ./ or ../, ~, or more than one '/'."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or os.path.exists(name)
