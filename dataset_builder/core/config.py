"""The build's settings: typed pydantic models loaded from YAML, with CLI overrides, checked before any work.

A config file mirrors :class:`BuildConfig` (see ``dataset_builder/configs/demo.yaml``)::

    out: sen2naip                 # the dataset folder (Hub dataset-repo layout)
    sources:
      naip: {folder: ${SEN2NAIP_SAMPLE_DIR:-../shared/sample}/naip}
    synthetic: {tile_size: 128, size: 48, n_clusters: 8}

String paths may use ``${VAR}`` and ``${VAR:-default}`` (environment variables, with a default when
unset or empty). Relative paths are relative to the working directory the build runs in. Overrides
from the command line use dotted keys (``{"synthetic.clip_model": "ViT-L-14"}``) and are checked like
file keys. Every model forbids unknown keys and is strict about types (a quoted number is not a
number); every mistake raises :class:`ConfigError` with one line naming the key, the value found and
what is allowed. :mod:`dataset_builder.core.config_reference` renders the schema as the README's config
reference.
"""

from __future__ import annotations

import os
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dataset_builder.core.errors import ConfigError
from dataset_builder.core.facts import (
    DEFAULT_CLIP_MODEL,
    DEFAULT_EMBED_BATCH_SIZE,
    SCL_MAX_FRACTION,
    SEN2NAIP_HR_RESOLUTION_M,
    SEN2NAIP_MAX_DAYS,
    SEN2NAIP_ROI_HR_PX,
    STAC_PRESETS,
)
from dataset_builder.core.splits import DEFAULT_FRACTIONS, DEFAULT_SALT, RoiSplitter, SplitError
from sen2naip_hub.constants import UNET_PRECISIONS

__all__ = [
    "SIMULATION_KINDS",
    "BuildConfig",
    "ConfigError",
    "CrossSensorStageConfig",
    "FolderSource",
    "SimulationConfig",
    "SourcesConfig",
    "SplitsConfig",
    "SyntheticStageConfig",
    "WriteConfig",
    "expand_env",
    "from_dict",
    "is_section",
    "load_config",
]

#: What :func:`dataset_builder.cross_sensor.simulate.simulate_candidates` can make.
SimulationKind = Literal["good", "qa1_fail", "qa2_fail"]
SIMULATION_KINDS: tuple[str, ...] = typing.get_args(SimulationKind)
#: ``auto`` takes CUDA when it is available, else the CPU; ``cuda:N`` picks a GPU.
DEVICE_PATTERN: str = r"auto|cpu|cuda(:\d+)?"
#: ``${NAME}`` or ``${NAME:-default}`` inside a string.
_ENV_PATTERN = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")


def expand_env(text: str) -> str:
    """Replace ``${NAME}`` and ``${NAME:-default}`` with the environment's values.

    >>> os.environ["S2N_DOCTEST"] = "/data"
    >>> expand_env("${S2N_DOCTEST}/naip"), expand_env("${S2N_UNSET_VAR:-../shared/sample}/naip")
    ('/data/naip', '../shared/sample/naip')
    """

    def replace(match: re.Match) -> str:
        value = os.environ.get(match["name"])
        if value:
            return value
        if match["default"] is not None:
            return match["default"]
        raise ConfigError(f"environment variable {match['name']} is not set (used in {text!r})")

    return _ENV_PATTERN.sub(replace, text)


class _Section(BaseModel):
    """Every config section: unknown keys are errors, types are strict, values are immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


#: The Sentinel-2 bands a STAC API source reads, in the project's order.
_S2_BANDS: tuple[str, ...] = ("B04", "B03", "B02", "B08")


class FolderSource(_Section):
    """One sensor's images: a folder of GeoTIFFs, a static STAC catalog on disk, or a STAC API."""

    folder: str | None = Field(None, description="Folder of 4-band GeoTIFFs (``${VAR}`` allowed).")
    pattern: str = Field("*.tif", description="Glob of the files to read inside ``folder``.")
    stac: str | None = Field(None, description="A static STAC catalog (``catalog.json``) instead.")
    asset_key: str | None = Field(None, description="The STAC asset holding the 4-band image.")
    stac_api: str | None = Field(None, description="URL of a STAC API searched with pystac-client.")
    collection: str | None = Field(None, description="The STAC API collection (e.g. naip, sentinel-2-l2a).")
    asset: str | None = Field(None, description="NAIP from a STAC API: the 4-band COG asset (image).")
    bands: dict[str, str] | None = Field(
        None, description="Sentinel-2 from a STAC API: band → asset key for B04, B03, B02, B08."
    )
    scl: str | None = Field(None, description="Sentinel-2 from a STAC API: the SCL asset key.")
    max_cloud_cover: float | None = Field(
        None, ge=0, le=100, description="Largest item-level eo:cloud_cover, percent (null: any)."
    )

    @model_validator(mode="after")
    def _one_kind(self) -> FolderSource:
        given = [k for k in ("folder", "stac", "stac_api") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give one of folder, stac or stac_api, not {' and '.join(given)}")
        if self.stac_api is not None and not self.collection:
            raise ValueError("stac_api needs a collection (or sources.preset)")
        if self.bands is not None and sorted(self.bands) != sorted(_S2_BANDS):
            raise ValueError(f"bands must map exactly {', '.join(_S2_BANDS)} to asset keys")
        return self


#: ``datetime``: ``YYYY-MM-DD`` or a ``start/end`` range of them (``..`` = open).
_DATETIME_PATTERN: str = r"^(\d{4}-\d{2}-\d{2}|\.\.)(/(\d{4}-\d{2}-\d{2}|\.\.))?$"


class SourcesConfig(_Section):
    """NAIP (HR) and Sentinel-2 (LR) inputs, and the pairing window."""

    naip: FolderSource = Field(default_factory=FolderSource, description="Where the NAIP images are.")
    s2: FolderSource = Field(default_factory=FolderSource, description="Where the Sentinel-2 images are.")
    max_days: int = Field(SEN2NAIP_MAX_DAYS, ge=0, description="Largest NAIP ↔ S2 gap, days.")
    bbox: list[float] | None = Field(
        None, min_length=4, max_length=4, description="STAC API area [west, south, east, north], WGS84."
    )
    datetime: str | None = Field(
        None, pattern=_DATETIME_PATTERN, description="STAC API dates, ``YYYY-MM-DD/YYYY-MM-DD``."
    )
    signing: Literal["none", "planetary_computer"] = Field(
        "none", description="Sign STAC asset hrefs (planetary_computer: the planetary-computer package)."
    )
    preset: Literal["planetary_computer", "earth_search"] | None = Field(
        None, description="Fill the STAC API sources' collection, asset, bands and scl keys."
    )
    hr_resampling: Literal["average", "bilinear", "cubic", "nearest"] = Field(
        "average", description="How STAC API NAIP is resampled to ``cross_sensor.hr_resolution_m``."
    )

    @model_validator(mode="before")
    @classmethod
    def _fill_preset(cls, data: Any) -> Any:
        if not isinstance(data, Mapping) or data.get("preset") not in STAC_PRESETS:
            return data
        data = dict(data)
        for sensor, keys in STAC_PRESETS[data["preset"]].items():
            source = data.get(sensor)
            if isinstance(source, Mapping) and source.get("stac_api") is not None:
                data[sensor] = {**keys, **{k: v for k, v in source.items() if v is not None}}
        return data

    @model_validator(mode="after")
    def _remote(self) -> SourcesConfig:
        if self.bbox is not None:
            west, south, east, north = self.bbox
            if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
                raise ValueError(f"bbox must be [west, south, east, north] in degrees, found {self.bbox}")
        if self.naip.stac_api is not None and not self.naip.asset:
            raise ValueError("sources.naip.stac_api needs asset (the 4-band COG key) or sources.preset")
        if self.s2.stac_api is not None and not self.s2.bands:
            raise ValueError("sources.s2.stac_api needs bands (band → asset key) or sources.preset")
        if (self.naip.stac_api or self.s2.stac_api) and self.bbox is None:
            raise ValueError("a stac_api source needs sources.bbox (the area whose windows are read)")
        return self


class SimulationConfig(_Section):
    """Simulated Sentinel-2 candidates made from the real NAIP (no co-located pair exists offline)."""

    kinds: list[SimulationKind] = Field(
        default_factory=lambda: ["good", "good", "qa1_fail", "qa2_fail"],
        min_length=1,
        description="One candidate per entry, from the first NAIP acquisitions; rows are `simulated`.",
    )


class CrossSensorStageConfig(_Section):
    """The cross-sensor stage: pair → align → QA1 → match → QA2."""

    enabled: bool = Field(True, description="Build the cross_sensor config.")
    roi_size: int = Field(SEN2NAIP_ROI_HR_PX, gt=0, description="ROI side, HR pixels.")
    stride: int | None = Field(None, gt=0, description="HR pixels between ROI origins (null: roi_size).")
    hr_resolution_m: float | None = Field(
        SEN2NAIP_HR_RESOLUTION_M, gt=0, description="HR pixel size the ROI grid expects (null: any)."
    )
    simulate: SimulationConfig | None = Field(
        None, description="Simulate the S2 candidates from the NAIP (leave sources.s2 empty)."
    )
    max_cloud_fraction: float = Field(
        SCL_MAX_FRACTION, ge=0, le=1, description="Largest share of an LR ROI in rejected SCL classes."
    )


class SyntheticStageConfig(_Section):
    """The synthetic stage: tile → blank filter → CLIP → k-means++ → degrade ``size`` tiles."""

    enabled: bool = Field(True, description="Build the synthetic config.")
    tile_size: int = Field(SEN2NAIP_ROI_HR_PX, gt=0, description="Tile side, HR pixels.")
    size: int = Field(1000, gt=0, description="Tiles to select.")
    n_clusters: int = Field(50, gt=0, description="k-means++ clusters (at most ``size``).")
    clip_model: str = Field(DEFAULT_CLIP_MODEL, description="open_clip architecture.")
    clip_pretrained: str | None = Field(
        None, description="open_clip tag or local checkpoint; null: random weights seeded by ``seed``."
    )
    embed_batch_size: int = Field(DEFAULT_EMBED_BATCH_SIZE, gt=0, description="Tiles per CLIP batch.")
    clip_precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="CLIP precision: auto = bf16 autocast on CUDA, fp32 elsewhere."
    )
    harmonization: Literal["global", "local", "none"] | None = Field(
        None, description="Harmonization of the degradation (null: the model's default)."
    )
    noise: bool = Field(True, description="Add the learned sensor noise.")


class SplitsConfig(_Section):
    """Split fractions (train, validation, test) and salt of the spatial ROI splitter."""

    fractions: list[float] = Field(
        default_factory=lambda: list(DEFAULT_FRACTIONS), min_length=1, max_length=3, description="Shares."
    )
    salt: str = Field(DEFAULT_SALT, description="Salt of the ROI hash.")

    @model_validator(mode="after")
    def _valid_splitter(self) -> SplitsConfig:
        try:
            self.splitter()
        except SplitError as err:
            raise ValueError(str(err)) from None
        return self

    def splitter(self) -> RoiSplitter:
        """The :class:`~dataset_builder.core.splits.RoiSplitter` these settings describe."""
        return RoiSplitter(tuple(self.fractions), salt=self.salt)


class WriteConfig(_Section):
    """Dataset card repo id and shard limits."""

    repo_id: str = Field("sen2naip", description="Repo id the card's loading examples name.")
    max_shard_rows: int = Field(100_000, gt=0, description="Rows per parquet shard, at most.")
    max_shard_bytes: int = Field(500 * 1024**2, gt=0, description="Array bytes per shard, at most.")


class BuildConfig(_Section):
    """Everything a build needs (see the module docstring)."""

    out: str = Field("sen2naip", description="Dataset folder written at the end.")
    work_dir: str | None = Field(None, description="Checkpoints (null: ``<out>/../build_cache/<out>``).")
    models: str = Field("models", description="Folder of converted models (converted when missing).")
    degradation_model: str | None = Field(None, description="A Degradation folder or Hub repo id.")
    convert_models: bool = Field(True, description="Convert the published weights when missing.")
    device: str = Field("auto", pattern=f"^({DEVICE_PATTERN})$", description="auto, cpu, cuda or cuda:N.")
    seed: int = Field(0, description="Seeds every random step.")
    batch_size: int = Field(16, gt=0, description="Tiles per degradation batch.")
    precision: Literal[UNET_PRECISIONS] = Field(
        "fp32", description="Degradation U-Net precision: fp32 (as published), bf16 or fp16."
    )
    compile: bool = Field(False, description="torch.compile the degradation (GPUs, large builds).")
    workers: int | Literal["auto"] = Field(
        "auto",
        description=(
            "Processes that read tiles, and as many that write shards (0: threads in the build "
            "process; auto: cores − 3, at most 16, on machines of ≥ 8 cores, else 0)."
        ),
    )
    sources: SourcesConfig = Field(default_factory=SourcesConfig, description="Inputs.")
    cross_sensor: CrossSensorStageConfig = Field(default_factory=CrossSensorStageConfig, description="")
    synthetic: SyntheticStageConfig = Field(default_factory=SyntheticStageConfig, description="")
    splits: SplitsConfig = Field(default_factory=SplitsConfig, description="")
    write: WriteConfig = Field(default_factory=WriteConfig, description="")

    @field_validator("workers", mode="before")
    @classmethod
    def _workers(cls, value: Any) -> Any:
        """One message for every wrong value (pydantic's would name one arm of the union)."""
        whole = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        if value != "auto" and not whole:
            raise ValueError("must be 'auto' or a whole number ≥ 0 (0: threads)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> BuildConfig:
        if self.synthetic.n_clusters > self.synthetic.size:
            raise ValueError(
                f"synthetic.n_clusters ({self.synthetic.n_clusters}) must not exceed synthetic.size "
                f"({self.synthetic.size}): every cluster gets at least one tile"
            )
        s2 = self.sources.s2
        if self.cross_sensor.simulate is not None and (s2.folder or s2.stac or s2.stac_api):
            raise ValueError(
                "cross_sensor.simulate is set: leave sources.s2 empty (candidates are simulated)"
            )
        naip = self.sources.naip
        if not naip.folder and not naip.stac and not naip.stac_api:
            raise ValueError("sources.naip: give a folder, a stac catalog or a stac_api of NAIP GeoTIFFs")
        return self

    @property
    def out_dir(self) -> Path:
        return Path(expand_env(self.out))

    @property
    def work_path(self) -> Path:
        if self.work_dir is not None:
            return Path(expand_env(self.work_dir))
        return self.out_dir.parent / "build_cache" / self.out_dir.name

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values, in field order."""
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        """The resolved config as YAML (what ``sen2naip build --print-config`` prints)."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def with_overrides(self, overrides: Mapping[str, Any]) -> BuildConfig:
        """A copy with dotted keys set (``None`` values are skipped: "not given on the command line")."""
        data = self.to_dict()
        for dotted, value in overrides.items():
            if value is None:
                continue
            target = data
            *parents, last = dotted.split(".")
            for part in parents:
                if not isinstance(target.get(part), dict):
                    target[part] = {}
                target = target[part]
            target[last] = value
        return from_dict(data)


# ---------------------------------------------------------------- loading
def _describe(error: Mapping[str, Any], model: type[BaseModel]) -> str:
    """One line for one pydantic error: the dotted key, the value found and what is allowed."""
    key = ".".join(str(part) for part in error["loc"] if not isinstance(part, int)) or "config"
    if error["type"] == "extra_forbidden":
        known = _known_keys(model, error["loc"][:-1])
        return f"unknown config key {key!r} (known keys here: {', '.join(known)})"
    message = error["msg"].removeprefix("Value error, ")
    if not error["loc"]:
        return f"config: {message}"
    return f"config key {key!r}: found {error.get('input')!r}; {message[:1].lower()}{message[1:]}"


def _known_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """The field names of the section at ``loc`` (a path of field names) inside ``model``."""
    for part in loc:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[str(part)].annotation
        sections = [a for a in (*typing.get_args(annotation), annotation) if is_section(a)]
        if not sections:
            break
        model = sections[0]
    return list(model.model_fields)


def is_section(value: Any) -> bool:
    """True for a section of the config (a pydantic model), False for a value's type."""
    return isinstance(value, type) and issubclass(value, BaseModel)


def from_dict(data: Any, cls: type[BaseModel] = BuildConfig) -> Any:
    """Build ``cls`` from a mapping; unknown keys, bad values and wrong types raise :class:`ConfigError`."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"config: expected a mapping of keys, found {type(data).__name__}")
    try:
        return cls.model_validate(dict(data))
    except ValidationError as err:
        raise ConfigError(_describe(err.errors()[0], cls)) from None


def load_config(path: str | os.PathLike | None, overrides: Mapping[str, Any] | None = None) -> BuildConfig:
    """Read a YAML config (``None``: the defaults), apply dotted ``overrides``, check everything.

    Raises:
        ConfigError: the file is missing or not YAML, a key is unknown, a value has the wrong type or
            is not among the allowed ones.
    """
    data: Any = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from err
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of keys at the top, found {type(data).__name__}")
    try:
        config = from_dict(data)
        return config.with_overrides(overrides or {})
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}" if path is not None else str(err)) from None
