"""The build's settings: a dataclass tree loaded from YAML, with CLI overrides; unknown keys are errors.

A config file mirrors :class:`BuildConfig` (see ``dataset_builder/configs/demo.yaml``)::

    out: sen2naip                 # the dataset folder (Hub dataset-repo layout)
    sources:
      naip: {folder: ${SEN2NAIP_SAMPLE_DIR:-../shared/sample}/naip}
    synthetic: {tile_size: 128, size: 48, n_clusters: 8}

String paths may use ``${VAR}`` and ``${VAR:-default}`` (environment variables, with a default when
unset or empty). Relative paths are relative to the working directory the build runs in. Overrides
from the command line use dotted keys (``{"synthetic.clip_model": "ViT-L-14"}``) and are checked
like file keys. Every mistake raises :class:`ConfigError` naming the key, the value found and what
was expected.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from dataset_builder.splits import DEFAULT_FRACTIONS, DEFAULT_SALT
from sen2naip_hub.constants import UNET_PRECISIONS
from sen2naip_hub.errors import Sen2NaipError

__all__ = [
    "DEVICES",
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
    "load_config",
]

#: Devices a build accepts: ``auto`` takes CUDA when it is available, else the CPU.
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
#: What :func:`dataset_builder.simulate.simulate_candidates` can make.
SIMULATION_KINDS: tuple[str, ...] = ("good", "qa1_fail", "qa2_fail")
#: ``${NAME}`` or ``${NAME:-default}`` inside a string.
_ENV_PATTERN = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")


class ConfigError(Sen2NaipError, ValueError):
    """A build config is missing, unreadable, has an unknown key or a value of the wrong kind."""


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


@dataclass(frozen=True)
class FolderSource:
    """Where one sensor's images come from: a folder of GeoTIFFs (``pattern``) or a static STAC catalog."""

    folder: str | None = None
    pattern: str = "*.tif"
    stac: str | None = None
    asset_key: str | None = None

    def check(self, key: str) -> None:
        if self.folder is not None and self.stac is not None:
            raise ConfigError(f"{key}: give either folder or stac, not both")


@dataclass(frozen=True)
class SourcesConfig:
    """NAIP (HR) and Sentinel-2 (LR) inputs, and the pairing window in days."""

    naip: FolderSource = field(default_factory=FolderSource)
    s2: FolderSource = field(default_factory=FolderSource)
    max_days: int = 1


@dataclass(frozen=True)
class SimulationConfig:
    """Simulated Sentinel-2 candidates made from the real NAIP (no co-located pair exists offline).

    One candidate per entry of ``kinds``, from the first ``len(kinds)`` NAIP acquisitions; their rows
    are written with ``source="simulated"``.
    """

    kinds: tuple[str, ...] = ("good", "good", "qa1_fail", "qa2_fail")


@dataclass(frozen=True)
class CrossSensorStageConfig:
    """The cross-sensor stage. ``simulate`` set: Sentinel-2 candidates are simulated from the NAIP
    (and ``sources.s2`` must be empty); otherwise they come from ``sources.s2``.

    ``hr_resolution_m``: the HR pixel size the ROI grid expects (2.5 for real NAIP; ``null`` skips the
    check, as for the 5 m sample).
    """

    enabled: bool = True
    roi_size: int = 484
    stride: int | None = None
    hr_resolution_m: float | None = 2.5
    simulate: SimulationConfig | None = None


@dataclass(frozen=True)
class SyntheticStageConfig:
    """The synthetic stage: tile → blank filter → CLIP → k-means++ → degrade ``size`` tiles.

    ``clip_pretrained``: an open_clip pretrained tag (e.g. ``laion2b_s34b_b79k``) or a local checkpoint
    path for real runs; ``null`` builds the architecture with random weights seeded by ``seed`` (the
    offline demo and tests: the same code path, not a meaningful embedding).
    ``harmonization``: ``global``, ``local``, ``none`` or ``null`` (the model's default).
    """

    enabled: bool = True
    tile_size: int = 484
    size: int = 1000
    n_clusters: int = 50
    clip_model: str = "ViT-B-32"
    clip_pretrained: str | None = None
    embed_batch_size: int = 32
    harmonization: str | None = None
    noise: bool = True


@dataclass(frozen=True)
class SplitsConfig:
    """Split fractions (train, validation, test) and salt of :class:`~dataset_builder.splits.RoiSplitter`."""

    fractions: tuple[float, ...] = DEFAULT_FRACTIONS
    salt: str = DEFAULT_SALT


@dataclass(frozen=True)
class WriteConfig:
    """Dataset card repo id and shard limits (:class:`~dataset_builder.writer.ShardLimits`)."""

    repo_id: str = "sen2naip"
    max_shard_rows: int = 100_000
    max_shard_bytes: int = 500 * 1024**2


@dataclass(frozen=True)
class BuildConfig:
    """Everything a build needs.

    Attributes:
        out: the dataset folder written at the end (``README.md``, ``<config>/<split>-NNNNN.parquet``,
            ``manifest.jsonl``).
        work_dir: checkpoints; ``null`` means ``<out's parent>/build_cache/<out's name>``. Must be on the
            same file system as ``out`` (the finished dataset is moved into place by renaming).
        models: folder of converted models; ``<models>/sen2naip-degradation`` is used unless
            ``degradation_model`` is set; converted from the published weights when missing and
            ``convert_models`` is true.
        degradation_model: a Degradation folder or Hub repo id (overrides ``models``).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        seed: seeds the simulation, the CLIP random weights, k-means++ and the noise of every tile.
        batch_size: tiles per degradation batch.
        precision: the degradation U-Net's precision, ``fp32`` (as published) or ``bf16`` (faster on
            GPUs; moves the harmonized HR slightly, so it changes the data).
        compile: ``torch.compile`` the degradation (U-Net and histogram matching) before the first
            batch: worth it on GPUs for large builds; the first batch of each shape compiles.
    """

    out: str = "sen2naip"
    work_dir: str | None = None
    models: str = "models"
    degradation_model: str | None = None
    convert_models: bool = True
    device: str = "auto"
    seed: int = 0
    batch_size: int = 16
    precision: str = "fp32"
    compile: bool = False
    sources: SourcesConfig = field(default_factory=SourcesConfig)
    cross_sensor: CrossSensorStageConfig = field(default_factory=CrossSensorStageConfig)
    synthetic: SyntheticStageConfig = field(default_factory=SyntheticStageConfig)
    splits: SplitsConfig = field(default_factory=SplitsConfig)
    write: WriteConfig = field(default_factory=WriteConfig)

    def __post_init__(self) -> None:
        _check_config(self)

    @property
    def out_dir(self) -> Path:
        return Path(expand_env(self.out))

    @property
    def work_path(self) -> Path:
        if self.work_dir is not None:
            return Path(expand_env(self.work_dir))
        return self.out_dir.parent / "build_cache" / self.out_dir.name

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (tuples as lists), in field order."""
        return _plain(dataclasses.asdict(self))

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
                    target[part] = {} if target.get(part) is None else target[part]
                target = target[part]
            target[last] = value
        return from_dict(data)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _check_config(config: BuildConfig) -> None:
    positive = {
        "batch_size": config.batch_size,
        "cross_sensor.roi_size": config.cross_sensor.roi_size,
        "synthetic.tile_size": config.synthetic.tile_size,
        "synthetic.size": config.synthetic.size,
        "synthetic.n_clusters": config.synthetic.n_clusters,
        "synthetic.embed_batch_size": config.synthetic.embed_batch_size,
        "write.max_shard_rows": config.write.max_shard_rows,
        "write.max_shard_bytes": config.write.max_shard_bytes,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{key} must be positive, found {value}")
    if config.sources.max_days < 0:
        raise ConfigError(f"sources.max_days must be >= 0, found {config.sources.max_days}")
    if config.device not in DEVICES and not re.fullmatch(r"cuda:\d+", config.device):
        raise ConfigError(f"device must be one of {', '.join(DEVICES)} or cuda:N, found {config.device!r}")
    if config.precision not in UNET_PRECISIONS:
        raise ConfigError(
            f"precision must be one of {', '.join(UNET_PRECISIONS)}, found {config.precision!r}"
        )
    if config.synthetic.n_clusters > config.synthetic.size:
        raise ConfigError(
            f"synthetic.n_clusters ({config.synthetic.n_clusters}) must not exceed synthetic.size "
            f"({config.synthetic.size}): every cluster gets at least one tile"
        )
    simulate = config.cross_sensor.simulate
    if simulate is not None:
        bad = [k for k in simulate.kinds if k not in SIMULATION_KINDS]
        if bad or not simulate.kinds:
            raise ConfigError(
                f"cross_sensor.simulate.kinds must be a non-empty list of {SIMULATION_KINDS}, found {bad}"
            )
        if config.sources.s2.folder or config.sources.s2.stac:
            raise ConfigError(
                "cross_sensor.simulate is set: leave sources.s2 empty (candidates are simulated)"
            )
    config.sources.naip.check("sources.naip")
    config.sources.s2.check("sources.s2")
    if not config.sources.naip.folder and not config.sources.naip.stac:
        raise ConfigError("sources.naip: give a folder or a stac catalog of NAIP GeoTIFFs")


# ---------------------------------------------------------------- loading
def from_dict(data: Mapping[str, Any], cls: type = BuildConfig, prefix: str = "") -> Any:
    """Build ``cls`` from a mapping, recursively; unknown keys and wrong types raise :class:`ConfigError`."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping of keys, found {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = [key for key in data if key not in known]
    if unknown:
        raise ConfigError(
            f"unknown config key {prefix + str(unknown[0])!r} (known keys here: {', '.join(known)})"
        )
    hints = typing.get_type_hints(cls)
    values = {name: _coerce(value, hints[name], prefix + name) for name, value in data.items()}
    try:
        return cls(**values)
    except TypeError as err:  # pragma: no cover - every field has a default
        raise ConfigError(f"{prefix or 'config'}: {err}") from err


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """``value`` as the annotated type ``hint`` (dataclasses, tuples, optionals, scalars)."""
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _coerce(value, option, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0])
    if dataclasses.is_dataclass(hint):
        return from_dict({} if value is None else value, hint, key + ".")
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list, found {value!r}")
        return tuple(_coerce(v, args[0], key) for v in value)
    return _scalar(value, hint, key)


def _scalar(value: Any, hint: type, key: str) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
    raise ConfigError(f"{key} must be a {hint.__name__}, found {value!r}")


def load_config(path: str | os.PathLike | None, overrides: Mapping[str, Any] | None = None) -> BuildConfig:
    """Read a YAML config (``None``: the defaults), apply dotted ``overrides``, check everything.

    Raises:
        ConfigError: the file is missing or not YAML, a key is unknown, a value has the wrong type.
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
    config = from_dict(data)
    return config.with_overrides(overrides or {})
