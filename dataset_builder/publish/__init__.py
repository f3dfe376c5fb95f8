"""``sen2naip publish``: the four model repos, the dataset repo and the Space, complete and consistent.

Every repo is first *staged* in a folder laid out as the Hub names it (which is also the layout a
read-only Hub mirror such as olah serves)::

    <dir>/models/<org>/sen2naip-{blur,harmonization,noise,degradation}/   weights + config + card
    <dir>/datasets/<org>/sen2naip/                                        parquet shards + card
    <dir>/spaces/<org>/sen2naip-degradation/                              app.py, requirements, card,
                                                                          sen2naip_hub/ (the library)

then checked (:func:`~dataset_builder.publish.stage.check_staged`: every file present, and the cards,
the Space's front matter and its ``repos.json`` name exactly the repo ids being published), then either
left there (``--dry-run DIR``) or uploaded, one commit per repo (:mod:`.push`).

Cards (:mod:`.cards`) are rendered with ``huggingface_hub`` from this package's ``templates/``, filled
with what the run measured: the published model's fidelity (``model_cards/fidelity.json``) for
converted weights, a fit report's held-out numbers for fitted ones, the speed tables of
``benchmarks/RESULTS.md`` when present; the dataset card is the build's own, for the published repo id.
"""

from __future__ import annotations

from dataset_builder.publish.cli import publish_command, write_space_readme
from dataset_builder.publish.ids import DEFAULT_ORG, PublishError, RepoIds, StagedRepo
from dataset_builder.publish.push import publish, push_staged
from dataset_builder.publish.stage import Sources, check_staged, space_requirements, stage_all

__all__ = [
    "DEFAULT_ORG",
    "PublishError",
    "RepoIds",
    "Sources",
    "StagedRepo",
    "check_staged",
    "publish",
    "publish_command",
    "push_staged",
    "space_requirements",
    "stage_all",
    "write_space_readme",
]
