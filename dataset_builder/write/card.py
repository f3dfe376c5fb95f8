"""The dataset card, true by construction: rendered with :class:`huggingface_hub.DatasetCard` from the
package's template, filled from the shards on disk (rows, splits, tile and pixel sizes, how many rows
are simulated) and from the build's own facts (:class:`BuildFacts`: which sources, which degradation
model and where its weights come from, which CLIP weights, code version, fingerprint). Licenses and
credits are listed only for the sources the rows actually use.
"""

from __future__ import annotations

import importlib.resources
import json
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Features
from huggingface_hub import DatasetCard, DatasetCardData

from dataset_builder.core.facts import DATASET_LICENSE, RELEASES, SOURCE_CREDITS
from dataset_builder.core.records import CONFIG_NAMES, SPLIT_NAMES
from dataset_builder.core.splits import RoiSplitter
from dataset_builder.write.shards import WriterError, scan_shards
from sen2naip_hub import __version__
from sen2naip_hub.constants import (
    DEFAULT_MODEL_REPO_ID,
    PAPER_CITATION,
    PAPER_URL,
    REFERENCE_PACKAGE,
    REFERENCE_VERSION,
)
from sen2naip_hub.convert import SOURCE_NOTE
from sen2naip_hub.files import atomic_file
from sen2naip_hub.sensors import NAIP, SCALE_FACTOR, SENTINEL2

__all__ = [
    "CARD_TEMPLATE",
    "DATASET_TAGS",
    "FACTS_NAME",
    "BuildFacts",
    "config_facts",
    "describe_degradation",
    "load_facts",
    "render_dataset_card",
    "save_facts",
    "write_dataset_card",
]

#: The card template, package data (read with importlib.resources, so an installed wheel has it).
CARD_TEMPLATE: str = "dataset_card.md"
#: The build's facts, saved beside the card so the card can be rendered again (``sen2naip publish``).
FACTS_NAME: str = "build.json"
DATASET_TASK_CATEGORIES: tuple[str, ...] = ("image-to-image",)
DATASET_TAGS: tuple[str, ...] = ("remote-sensing", "sentinel-2", "naip", "super-resolution")
DATASET_PRETTY_NAME: str = "SEN2NAIP (sen2naip-hub rebuild)"
NOT_RECORDED: str = "not recorded (written outside `sen2naip build`)"
REFERENCE: str = f"{REFERENCE_PACKAGE}=={REFERENCE_VERSION}"


@dataclass(frozen=True)
class BuildFacts:
    """What the shards cannot tell: where the data came from and what made it.

    Attributes:
        repo_id: the repo id the card's loading examples name.
        splitter: how rows were split.
        naip_source, s2_source: the sources as configured (``None``: not used).
        degradation_model: the Degradation folder or Hub id that made the synthetic LR.
        clip: the open_clip architecture and its weights (a tag, a checkpoint, or random).
        fingerprint: the build's fingerprint (:mod:`dataset_builder.core.fingerprint`).
    """

    repo_id: str = "sen2naip"
    splitter: RoiSplitter = field(default_factory=RoiSplitter)
    naip_source: str | None = NOT_RECORDED
    s2_source: str | None = NOT_RECORDED
    degradation_model: str | None = None
    clip: str = NOT_RECORDED
    fingerprint: str = NOT_RECORDED
    code_version: str = __version__
    #: the published release the rows were imported from (``sen2naip import-release``), or None
    release: str | None = None
    #: the import's manifest counts: ``kept``, ``rejected``, ``filtered`` (by the QA filter)
    release_counts: dict[str, int] | None = None
    #: the QA filter applied at import, in words (None: every readable pair kept)
    qa_filter: str | None = None

    @property
    def license(self) -> str:
        """The dataset's license: the release's when imported, else the original release's."""
        return RELEASES[self.release]["license"] if self.release else DATASET_LICENSE


def describe_degradation(model_id: str | None) -> str:
    """Where a Degradation model's weights come from: converted published weights, or not."""
    if model_id is None:
        return NOT_RECORDED
    card = Path(model_id) / "README.md"
    if card.is_file():
        if SOURCE_NOTE in card.read_text("utf-8"):
            return f"`{model_id}`: the published SEN2NAIP weights, converted from PyPI `{REFERENCE}`"
        return f"`{model_id}`: not the published weights (made with sen2naip-hub, e.g. `sen2naip fit`)"
    if model_id == DEFAULT_MODEL_REPO_ID:
        return f"`{model_id}` on the Hub: the published SEN2NAIP weights, converted"
    return f"`{model_id}` (Hub repo or path; its origin is stated in its own model card)"


def _pixel_m(transforms: np.ndarray) -> str:
    sizes = np.abs(transforms[:, 1])
    low, high = float(sizes.min()), float(sizes.max())
    return f"{low:.4g}" if np.isclose(low, high, rtol=1e-6) else f"{low:.4g}-{high:.4g}"


def _one_config(out_dir: Path, config: str, splits: Mapping[str, int], facts: BuildFacts) -> dict:
    """Rows, splits, geometry and sources of one config, read from its shards (not from the config)."""
    shards = sorted((out_dir / config).glob("*.parquet"))
    features = Features.from_arrow_schema(pq.read_schema(shards[0]))
    columns = ["source", "hr_transform", "lr_transform"]
    table = pa.concat_tables([pq.read_table(path, columns=columns) for path in shards])
    sources = Counter(table.column("source").to_pylist())
    hr_t = np.asarray(table.column("hr_transform").to_pylist(), dtype=np.float64)
    lr_t = np.asarray(table.column("lr_transform").to_pylist(), dtype=np.float64)
    rows = sum(splits.values())
    return {
        "name": config,
        "rows": rows,
        "splits": dict(splits),
        "simulated": sources.get("simulated", 0),
        "real": sources.get("real", 0),
        "hr_size": "×".join(str(n) for n in features["hr"].shape[1:]),
        "lr_size": "×".join(str(n) for n in features["lr"].shape[1:]),
        "hr_pixel_m": _pixel_m(hr_t),
        "lr_pixel_m": _pixel_m(lr_t),
        "lr_origin": _lr_origin(config, sources, facts),
    }


def _lr_origin(config: str, sources: Counter, facts: BuildFacts) -> str:
    if facts.release is not None:
        return f"imported from `{facts.release}`: {RELEASES[facts.release]['lr']}"
    if config == "synthetic":
        return f"the NAIP tile degraded by {describe_degradation(facts.degradation_model)}"
    parts = []
    if sources.get("real"):
        parts.append(f"{sources['real']} real Sentinel-2 acquisitions, co-registered (QA1) and checked (QA2)")
    if sources.get("simulated"):
        parts.append(f"{sources['simulated']} **simulated** (not real Sentinel-2; see below)")
    return "; ".join(parts)


def _provenance(facts: BuildFacts, configs: list[dict]) -> list[str]:
    lines = [f"NAIP (HR): {facts.naip_source}"]
    if facts.release is not None:
        if facts.degradation_model:
            lines.append(f"Degradation (synthetic LR): {describe_degradation(facts.degradation_model)}")
        lines.append(f"Code: sen2naip-hub {facts.code_version}")
        return lines
    cross = next((c for c in configs if c["name"] == "cross_sensor"), None)
    if cross is not None:
        s2 = facts.s2_source or "none: every cross_sensor LR was simulated from the NAIP"
        lines.append(f"Sentinel-2 (cross_sensor LR): {s2}")
    if any(c["name"] == "synthetic" for c in configs):
        lines.append(f"Degradation (synthetic LR): {describe_degradation(facts.degradation_model)}")
        lines.append(f"Tile selection: CLIP {facts.clip}, then k-means++")
    lines.append(f"Code: sen2naip-hub {facts.code_version}; build fingerprint `{facts.fingerprint}`")
    return lines


def _release(facts: BuildFacts) -> dict | None:
    """What the card says about an imported release (None for a build)."""
    if facts.release is None:
        return None
    info = RELEASES[facts.release]
    return {"name": facts.release, **info, "counts": facts.release_counts or {}, "qa_filter": facts.qa_filter}


def _credits(configs: list[dict]) -> list[str]:
    credits = [SOURCE_CREDITS["naip"]]
    if any(c["name"] == "cross_sensor" and c["real"] for c in configs):
        credits.append(SOURCE_CREDITS["sentinel-2"])
    return credits


def _size_category(n_rows: int) -> str:
    """The Hub's ``size_categories`` bucket for ``n_rows``."""
    for limit, label in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
    ):
        if n_rows < limit:
            return label
    return "1M<n<10M"


def _card_data(counts: Mapping[str, Mapping[str, int]], license: str = DATASET_LICENSE) -> DatasetCardData:
    configs = [
        {
            "config_name": config,
            "data_files": [
                {"split": s, "path": f"{config}/{s}-*.parquet"} for s in SPLIT_NAMES if s in splits
            ],
        }
        for config, splits in counts.items()
    ]
    total = sum(sum(s.values()) for s in counts.values())
    return DatasetCardData(
        license=license,
        task_categories=list(DATASET_TASK_CATEGORIES),
        tags=list(DATASET_TAGS),
        pretty_name=DATASET_PRETTY_NAME,
        size_categories=[_size_category(total)],
        configs=configs,
    )


def config_facts(out_dir: str | os.PathLike, facts: BuildFacts) -> list[dict]:
    """Rows, splits, geometry and sources of each config with rows, read from the shards."""
    out_dir = Path(out_dir)
    counts = scan_shards(out_dir)
    if not counts:
        raise WriterError(f"{out_dir}: no rows in any config: nothing to describe (write records first)")
    return [_one_config(out_dir, c, counts[c], facts) for c in CONFIG_NAMES if c in counts]


def save_facts(out_dir: str | os.PathLike, facts: BuildFacts) -> Path:
    """Write ``facts`` as ``<out_dir>/build.json`` (what ``sen2naip publish`` re-renders the card from)."""
    data = {
        **facts.__dict__,
        "splitter": {"fractions": list(facts.splitter.fractions), "salt": facts.splitter.salt},
    }
    path = Path(out_dir) / FACTS_NAME
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return path


def load_facts(out_dir: str | os.PathLike) -> BuildFacts | None:
    """The facts a build saved beside its card, or None when it saved none."""
    path = Path(out_dir) / FACTS_NAME
    if not path.is_file():
        return None
    data = json.loads(path.read_text("utf-8"))
    split = data.pop("splitter")
    return BuildFacts(**data, splitter=RoiSplitter(tuple(split["fractions"]), salt=split["salt"]))


def render_dataset_card(out_dir: str | os.PathLike, facts: BuildFacts | None = None) -> DatasetCard:
    """The card of the dataset folder ``out_dir`` (shards already written) and the build's ``facts``."""
    facts = facts or BuildFacts()
    counts = scan_shards(out_dir)
    configs = config_facts(out_dir, facts)
    template = importlib.resources.files("dataset_builder.write").joinpath("templates", CARD_TEMPLATE)
    standard = all(
        c["hr_pixel_m"] == f"{NAIP.resolution_m:.4g}" and c["lr_pixel_m"] == f"{SENTINEL2.resolution_m:.4g}"
        for c in configs
    )
    return DatasetCard.from_template(
        _card_data(counts, facts.license),
        template_str=template.read_text("utf-8"),
        pretty_name=DATASET_PRETTY_NAME,
        paper_url=PAPER_URL,
        code_version=facts.code_version,
        configs=configs,
        example_config="synthetic" if "synthetic" in counts else configs[0]["name"],
        split_names=SPLIT_NAMES,
        split_salt=facts.splitter.salt,
        split_fractions=" / ".join(f"{f:g}" for f in facts.splitter.fractions),
        standard_scale=standard,
        scale=SCALE_FACTOR,
        dn_scale=int(SENTINEL2.dn_scale),
        provenance=_provenance(facts, configs),
        repo_id=facts.repo_id,
        license=facts.license,
        release=_release(facts),
        credits=_credits(configs),
        citation=PAPER_CITATION,
    )


def write_dataset_card(out_dir: str | os.PathLike, facts: BuildFacts | None = None) -> Path:
    """(Re)write ``<out_dir>/README.md`` from the shards on disk and ``facts`` (saved beside it as
    ``build.json``), atomically."""
    facts = facts or BuildFacts()
    path = Path(out_dir) / "README.md"
    with atomic_file(path) as tmp:
        tmp.write_text(str(render_dataset_card(out_dir, facts)), encoding="utf-8")
    save_facts(out_dir, facts)
    return path
