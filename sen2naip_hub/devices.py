"""Which torch device a command runs on: one rule for every command and for the dataset build."""

from __future__ import annotations

from sen2naip_hub.errors import DeviceUnavailableError

__all__ = ["resolve_device"]


def resolve_device(name: str, option: str = "--device") -> str:
    """``auto`` → ``cuda`` when CUDA is available, else ``cpu``; a ``cuda`` device on a machine without
    CUDA raises :class:`DeviceUnavailableError` naming ``option`` (the flag or config key that asked
    for it); any other name is returned as given.

    >>> resolve_device("cpu")
    'cpu'
    """
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceUnavailableError(
            f"{option} {name}: CUDA is not available on this machine (use --device cpu)"
        )
    return name
