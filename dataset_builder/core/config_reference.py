"""The README's config reference: every leaf key of :class:`~dataset_builder.core.config.BuildConfig` as a
Markdown table row, rendered from the schema (its types, defaults and descriptions), so the README cannot
drift from the code (tests/test_config.py checks it)."""

from __future__ import annotations

import re
import typing
from typing import Any

from pydantic import BaseModel

from dataset_builder.core.config import BuildConfig, is_section

__all__ = ["config_reference"]


def _type_name(annotation: Any) -> str:
    """A type as the table shows it: ``str or null``, ``one of 'global', 'local', 'none'``."""
    text = str(annotation).replace("typing.", "").replace("NoneType", "None")
    text = re.sub(r"<class '([\w.]+)'>", lambda m: m.group(1).rsplit(".", 1)[-1], text)
    text = re.sub(r"^Optional\[(.*)\]$", r"\1 | None", re.sub(r"dataset_builder\.[\w.]+\.", "", text))
    text = re.sub(r"Literal\[([^\]]*)\]", r"one of \1", text)
    text = re.sub(r"^Union\[(.*)\]$", lambda m: m.group(1).replace(", one of", " or one of"), text)
    return text.replace(" | None", " or null").replace(" | ", " or ")


def config_reference(model: type[BaseModel] = BuildConfig, prefix: str = "") -> list[str]:
    """Markdown table rows ``| key | type | default | meaning |`` of every leaf key, from the schema."""
    rows = []
    for name, field in model.model_fields.items():
        sections = [a for a in (*typing.get_args(field.annotation), field.annotation) if is_section(a)]
        if sections:
            rows += config_reference(sections[0], f"{prefix}{name}.")
            continue
        default = field.get_default(call_default_factory=True)
        meaning = (field.description or "").replace("``", "`")
        rows.append(f"| `{prefix}{name}` | {_type_name(field.annotation)} | `{default!r}` | {meaning} |")
    return rows
