"""Every published card, rendered with ``huggingface_hub`` (``ModelCard``, ``DatasetCard``, ``SpaceCard``)
from the templates shipped in this package (``templates/``, read with :mod:`importlib.resources`).

What a card says comes from the run: a model card shows the published model's measured fidelity only
for converted published weights (the model folder's own card says so); fitted weights must come with
their fit report (``sen2naip fit all``'s ``metrics.json``), whose held-out numbers the card shows
instead. The dataset card is the build's own (:mod:`dataset_builder.write.card`) for the published repo
id, with a section on the published models.
"""

from __future__ import annotations

import importlib.resources
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
from huggingface_hub import ModelCard, ModelCardData, SpaceCard, SpaceCardData

from dataset_builder.publish.ids import PublishError, RepoIds
from dataset_builder.write.card import BuildFacts, config_facts, load_facts, render_dataset_card
from sen2naip_hub import __version__
from sen2naip_hub.constants import PAPER_CITATION, REFERENCE_PACKAGE, REFERENCE_VERSION
from sen2naip_hub.convert import REPO_NAMES, SOURCE_NOTE
from sen2naip_hub.models.hub import REPO_URL

__all__ = [
    "SPACE_SDK_VERSION",
    "fidelity_section",
    "is_converted",
    "render_dataset_readme",
    "render_model_card",
    "render_space_readme",
    "space_repos_json",
]

#: The gradio version the Space is tested with (tests/test_space*.py), written as its ``sdk_version``.
SPACE_SDK_VERSION: str = "6.31.0"
EXTRA_MODEL_TAGS: tuple[str, ...] = ("sen2naip", "naip", "sentinel-2", "remote-sensing", "super-resolution")
#: The dataset card section before which the published-models section is inserted.
DATASET_CARD_ANCHOR = "\n## Licenses"
REFERENCE: str = f"{REFERENCE_PACKAGE}=={REFERENCE_VERSION}"
#: Which fidelity measurements each converted model's card shows, with their labels.
FIDELITY_ROWS: dict[str, list[tuple[str, str]]] = {
    "blur": [("blur", "δ: blur + ×4 downsampling vs `naipd.blur.blur`")],
    "harmonization": [
        ("unet", "U-Net output vs the published TorchScript U-Net"),
        ("harmonization_global", "λ `global` vs `naipd.harmonization.harmonization_03`"),
    ],
    "noise": [],
    "degradation": [
        ("blur", "δ: blur + ×4 downsampling vs `naipd.blur.blur`"),
        ("unet", "U-Net output vs the published TorchScript U-Net"),
        ("harmonization_global", "λ `global` vs `naipd.harmonization.harmonization_03`"),
        ("degradation_without_noise", "λ → δ (no noise) vs `opensr_degradation.pipe('naip_d')`"),
    ],
}


def _template(name: str) -> str:
    return importlib.resources.files("dataset_builder.publish").joinpath("templates", name).read_text("utf-8")


def _render(name: str, values: Mapping[str, Any]) -> str:
    return jinja2.Template(_template(name), keep_trailing_newline=True).render(values).strip()


def _fmt(value: float) -> str:
    return f"{value:.2e}" if abs(value) < 1e-3 and value != 0 else f"{value:.4g}"


def fidelity_section(kind: str, fidelity: Mapping[str, Any]) -> str:
    """Markdown table of the measured differences to the published model, with how they were made."""
    metrics = fidelity["metrics"]
    lines = [
        f"Measured against `{fidelity['reference']}` on {fidelity['data']}, {fidelity['measured_on']} "
        f"(torch {fidelity['torch']}), with `{fidelity['command']}`; {fidelity['units']}.",
        "",
    ]
    rows = FIDELITY_ROWS[kind]
    if rows:
        lines += ["| comparison | max abs diff | mean abs diff |", "|---|---|---|"]
        for key, label in rows:
            m = metrics[key]
            lines.append(f"| {label} | {_fmt(m['max_abs_diff'])} | {_fmt(m['mean_abs_diff'])} |")
    if kind in ("noise", "degradation"):
        n = metrics["noise"]
        lines += [
            "",
            f"e: {n['samples_per_bin']:,} draws in each of the {n['bins']} reflectance bins of the table; "
            f"the sampled mean is within {n['max_mean_error_in_std']:.3f} table standard deviations of the "
            f"table's mean, and the sampled standard deviation within "
            f"{100 * n['max_std_relative_error']:.1f} % of the table's, in every bin.",
        ]
    return "\n".join(lines)


def fitted_section(report: Mapping[str, Any]) -> str:
    """The fit report's held-out numbers (``sen2naip fit all``'s ``metrics.json``) as a table."""
    results = report.get("results")
    if not isinstance(results, Mapping) or "fitted" not in results:
        raise PublishError("fit report: expected `sen2naip fit all`'s metrics.json with results.fitted")
    metrics = sorted({key for row in results.values() for key in row})
    lines = ["| predictor | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for name, row in results.items():
        label = f"**{name}** (these weights)" if name == "fitted" else name
        lines.append(f"| {label} | " + " | ".join(_fmt(row[m]) if m in row else "" for m in metrics) + " |")
    info = report.get("info", {})
    notes = [f"- {key}: {value}" for key, value in info.items()]
    intro = (
        "Measured by `sen2naip fit all` on held-out pairs (LR reflectance MAE; spectral angle in degrees):"
    )
    return "\n".join([intro, "", *lines, "", *notes]).strip()


def speed_section(results: Path | None) -> str:
    """The tables of ``benchmarks/RESULTS.md`` (its commands and machine notes are there)."""
    if results is None or not results.is_file():
        return "No benchmark results in this release; run `make bench` (CPU) or `benchmarks/bench_gpu.py`."
    kept = [line for line in results.read_text("utf-8").splitlines() if line.startswith(("|", "#"))]
    body = "\n".join(line if line.startswith("|") else f"**{line.lstrip('#').strip()}**\n" for line in kept)
    return (
        f"From `benchmarks/RESULTS.md` of sen2naip-hub {__version__} (commands and machines there):\n\n{body}"
    )


def is_converted(source_card: Path) -> bool:
    """True if a model folder's card says its weights are the converted published ones."""
    return source_card.is_file() and SOURCE_NOTE in source_card.read_text("utf-8")


def _model_card_data(source_card: Path, ids: RepoIds) -> ModelCardData:
    """The model repo's card metadata (library_name, license, pipeline_tag, tags) + datasets."""
    data = ModelCard.load(source_card).data.to_dict() if source_card.is_file() else {}
    data.setdefault("library_name", "sen2naip-hub")
    data.setdefault("license", "mit")
    data.setdefault("pipeline_tag", "image-to-image")
    data["tags"] = sorted(set(data.get("tags", [])) | set(EXTRA_MODEL_TAGS))
    data["datasets"] = [ids.dataset]
    return ModelCardData(**data)


def _origin_values(kind: str, source_card: Path, fidelity: Mapping, fit_report: Mapping | None) -> dict:
    if fit_report is not None:
        return {
            "converted": False,
            "fit_source": "see the fit report below",
            "fidelity_title": "Fidelity, measured for these weights",
            "fidelity": fitted_section(fit_report),
            "fit": "",
        }
    if not is_converted(source_card):
        raise PublishError(
            f"{source_card.parent}: not the converted published weights (its card does not say so); "
            "pass --fit-report with `sen2naip fit all`'s metrics.json so the cards show their own numbers"
        )
    return {
        "converted": True,
        "fidelity_title": "Fidelity to the published model",
        "fidelity": fidelity_section(kind, fidelity),
        "fit": "## Training\n\nNot retrained: these are the published SEN2NAIP weights, converted.",
    }


def render_model_card(
    kind: str,
    ids: RepoIds,
    fidelity: Mapping[str, Any],
    source_card: Path,
    bench_results: Path | None = None,
    fit_report: Mapping[str, Any] | None = None,
) -> str:
    """The card of model repo ``kind`` (``blur``, ``harmonization``, ``noise``, ``degradation``)."""
    values: dict[str, Any] = ids.template_values() | {"repo_id": ids.model(kind), "code_url": REPO_URL}
    values |= {"reference": REFERENCE, "reference_url_path": f"{REFERENCE_PACKAGE}/{REFERENCE_VERSION}"}
    values |= _origin_values(kind, source_card, fidelity, fit_report)
    values |= {
        name: _render(f"partials/{name}.md", values) for name in ("attribution", "bands", "limitations")
    }
    values |= {"speed": speed_section(bench_results), "citation": PAPER_CITATION}
    card = ModelCard.from_template(
        _model_card_data(source_card, ids), template_str=_template(f"{REPO_NAMES[kind]}.md"), **values
    )
    return str(card)


def render_dataset_readme(dataset_dir: Path, ids: RepoIds) -> str:
    """The build's dataset card for the published repo id, with the published-models section inserted
    before its licenses."""
    facts = load_facts(dataset_dir) or BuildFacts()
    facts = BuildFacts(**{**facts.__dict__, "repo_id": ids.dataset})
    base = str(render_dataset_card(dataset_dir, facts)).rstrip() + "\n"
    configs = config_facts(dataset_dir, facts)
    real = any(c["name"] == "cross_sensor" and c["real"] for c in configs)
    extra = _render("sen2naip.md", ids.template_values() | {"cross_sensor_real": real})
    head, marker, tail = base.partition(DATASET_CARD_ANCHOR)
    return f"{head.rstrip()}\n\n{extra}\n{marker}{tail}" if marker else f"{base}\n{extra}\n"


def _space_card_data(ids: RepoIds) -> SpaceCardData:
    return SpaceCardData(
        title="SEN2NAIP degradation",
        emoji="🛰️",
        colorFrom="green",
        colorTo="blue",
        sdk="gradio",
        sdk_version=SPACE_SDK_VERSION,
        app_file="app.py",
        pinned=False,
        license="mit",
        short_description="NAIP → Sentinel-2 degradation beside real Sentinel-2",
        models=list(ids.models.values()),
        datasets=[ids.dataset],
        tags=["sen2naip", "sentinel-2", "naip", "super-resolution", "remote-sensing"],
    )


def render_space_readme(ids: RepoIds, converted: bool = True, max_megapixels: float = 4.0) -> str:
    """The Space's README.md: Hub front matter naming exactly ``ids``' repos, then the description."""
    weights = (
        f"the SEN2NAIP authors' published ones (PyPI `{REFERENCE}`, MIT)"
        if converted
        else "fitted with `sen2naip fit`, not the published ones (see the model cards)"
    )
    values = ids.template_values() | {
        "model_list": ", ".join(f"[`{i}`](https://huggingface.co/{i})" for i in ids.models.values()),
        "max_megapixels": f"{max_megapixels:g}",
        "weights_note": weights,
    }
    return str(SpaceCard.from_template(_space_card_data(ids), template_str=_template("space.md"), **values))


def space_repos_json(ids: RepoIds) -> str:
    """``repos.json``: the repo ids the Space's ``app.py`` loads when no local folder or env var is set."""
    return json.dumps({"model": ids.model("degradation"), "dataset": ids.dataset}, indent=2) + "\n"
