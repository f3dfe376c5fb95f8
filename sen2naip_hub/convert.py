"""Turn the SEN2NAIP authors' published weights into this project's Hub repos.

Source: PyPI ``opensr-degradation==1.0.1`` (MIT). This is the only module that touches TorchScript or
pickles; it reads them with ``weights_only`` where torch allows, and everything it writes is
safetensors + ``config.json`` + a model card:

- ``sen2naip-blur``: σ = 3.0, 2.9, 2.9, 3.4, Gaussian, 13 taps, bilinear ×4 (``naipd/blur.py``);
- ``sen2naip-harmonization``: the TorchScript U-Net ``naipd/models/model_unet.pt`` as an smp Unet;
- ``sen2naip-noise``: the 101×101 table ``naipd/models/model_noise.pt``;
- ``sen2naip-degradation``: the three together.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch

from sen2naip_hub.constants import REFERENCE_PACKAGE, REFERENCE_VERSION
from sen2naip_hub.errors import ModelNotFoundError
from sen2naip_hub.models import BlurModel, Degradation, HarmonizationModel, NoiseModel
from sen2naip_hub.models.noise import published_noise_axes

REPO_NAMES: dict[str, str] = {
    "blur": "sen2naip-blur",
    "harmonization": "sen2naip-harmonization",
    "noise": "sen2naip-noise",
    "degradation": "sen2naip-degradation",
}
SOURCE_NOTE = (
    f"Converted by `sen2naip convert-reference` from the SEN2NAIP authors' published weights: PyPI "
    f"`{REFERENCE_PACKAGE}=={REFERENCE_VERSION}` (MIT license, Cesar Aybar et al.), reproduced within 1e-5."
)
_UNET_FILE = "naipd/models/model_unet.pt"
_NOISE_FILE = "naipd/models/model_noise.pt"


def reference_package_dir() -> Path:
    """Where ``opensr_degradation`` is installed, found without importing it (it needs pkg_resources);
    ``$SEN2NAIP_REFERENCE_DIR`` may name a copy of its folder instead (holding ``naipd/models/``), for
    machines where the package cannot be installed."""
    override = os.environ.get("SEN2NAIP_REFERENCE_DIR")
    if override:
        return Path(override)
    spec = importlib.util.find_spec("opensr_degradation")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"the published weights come from PyPI: pip install '{REFERENCE_PACKAGE}=={REFERENCE_VERSION}'"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def load_reference_parts(package_dir: Path | None = None) -> dict[str, torch.nn.Module]:
    """The published blur, harmonization and noise as this project's models (in memory)."""
    package_dir = package_dir or reference_package_dir()
    unet_file, noise_file = package_dir / _UNET_FILE, package_dir / _NOISE_FILE
    for path in (unet_file, noise_file):
        if not path.is_file():
            raise ModelNotFoundError(f"{path}: missing from the {REFERENCE_PACKAGE} install")
    with warnings.catch_warnings():  # torch.jit.load is deprecated; this is its one, last use here
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.load(str(unet_file), map_location="cpu")
    harmonization = HarmonizationModel()
    harmonization.unet.load_state_dict(scripted.state_dict(), strict=True)
    table = torch.load(str(noise_file), map_location="cpu", weights_only=True).detach()
    edges, values = published_noise_axes()
    parts = {
        "blur": BlurModel(),
        "harmonization": harmonization,
        "noise": NoiseModel.from_table(table, edges, values),
    }
    for part in parts.values():
        part.card_source = SOURCE_NOTE
    return parts


def convert_reference(out_dir: str | Path, package_dir: Path | None = None) -> dict[str, Path]:
    """Write the four repos under ``out_dir``; each appears only once complete. Returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = load_reference_parts(package_dir)
    composite = Degradation(**parts)
    composite.card_source = SOURCE_NOTE
    models = {**parts, "degradation": composite}
    written = {}
    for key, model in models.items():
        target = out_dir / REPO_NAMES[key]
        with tempfile.TemporaryDirectory(dir=out_dir, prefix=f".{target.name}.") as tmp:
            staging = Path(tmp) / "repo"
            model.save_pretrained(staging)
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
        written[key] = target
    return written


def reference_is_converted(out_dir: str | Path) -> bool:
    """True when every repo of :func:`convert_reference` is present under ``out_dir``."""
    out_dir = Path(out_dir)
    return all((out_dir / name / "config.json").is_file() for name in REPO_NAMES.values())
