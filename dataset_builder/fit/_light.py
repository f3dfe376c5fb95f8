"""Import the library's torch-only modules on machines without its heavy dependencies.

``import sen2naip_hub.models.blur`` runs ``sen2naip_hub/__init__.py`` and
``sen2naip_hub/models/__init__.py``, which import the harmonization model and therefore
``segmentation_models_pytorch``. The GPU machine has torch and numpy but not smp, timm or rasterio.
:func:`import_light` first tries the normal import; if a dependency is missing it registers the two
packages as bare namespace modules (no ``__init__`` code run) and imports the wanted submodule alone.
The blur search and the noise fitting only need ``blur.py`` / ``noise.py``, ``constants``, ``errors``,
``sensors`` and ``hub`` (torch, numpy, safetensors, huggingface_hub).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path
from types import ModuleType

#: The packages whose ``__init__`` pulls in the heavy dependencies.
_HEAVY_PACKAGES: tuple[str, ...] = ("sen2naip_hub", "sen2naip_hub.models")


def import_light(name: str) -> ModuleType:
    """Import ``name`` (a ``sen2naip_hub`` submodule), bypassing package ``__init__`` files if needed."""
    try:
        return importlib.import_module(name)
    except ImportError as err:
        if not name.startswith("sen2naip_hub."):
            raise
        missing = err
    spec = importlib.util.find_spec("sen2naip_hub")  # a top-level spec: runs no __init__
    if spec is None or not spec.submodule_search_locations:
        raise missing
    root = Path(next(iter(spec.submodule_search_locations)))
    for package in _HEAVY_PACKAGES:
        module = sys.modules.get(package)
        if module is None or not hasattr(module, "__path__"):
            stub = types.ModuleType(package)
            stub.__path__ = [str(root.joinpath(*package.split(".")[1:]))]
            stub.__doc__ = f"namespace stub: {package}/__init__ needs a missing dependency ({missing})"
            sys.modules[package] = stub
    return importlib.import_module(name)
