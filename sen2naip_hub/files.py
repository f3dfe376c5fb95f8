"""Atomic file output: nothing this project writes is ever left half-written.

Standard library only, so every part of the project (the GPU-side fitting code too) can use it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sen2naip_hub.errors import InvalidOutputError

__all__ = [
    "atomic_dir",
    "atomic_file",
    "check_distinct_outputs",
    "check_output_path",
    "current_umask",
    "save_figure",
    "write_json",
]


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path``, renamed onto it only if the block succeeds (removed if not).

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
    >>> with atomic_file(target) as tmp:
    ...     _ = tmp.write_text("done")
    >>> target.read_text()
    'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temporary(path)
    try:
        yield Path(tmp)
        if tmp.exists():  # a writer may have replaced the file (safetensors does, as 0o600): set its mode
            os.chmod(tmp, NEW_FILE_MODE & ~current_umask())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


#: Mode a new file is created with before the umask applies (as ``open(path, "w")`` does), so what
#: this project writes gets ``0o666 & ~umask`` like any other program's output, never a temporary
#: file's 0o600.
NEW_FILE_MODE: int = 0o666


def current_umask() -> int:
    """The process's umask, read from ``/proc/self/status`` (Linux) without changing it; elsewhere
    by setting and restoring it.

    >>> 0 <= current_umask() <= 0o777
    True
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _new_temporary(path: Path) -> Path:
    """Create an empty, uniquely named file beside ``path`` with :data:`NEW_FILE_MODE` (the kernel
    applies the umask). ``tempfile.mkstemp`` would make it 0o600, and the rename would keep that."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, NEW_FILE_MODE)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"{path.parent}: no free temporary name beside {path.name}")


def check_output_path(path: str | os.PathLike, inputs: Sequence[str | os.PathLike] = ()) -> Path:
    """Raise :class:`InvalidOutputError` unless :func:`atomic_file` can write ``path``: it must not be
    a folder nor one of ``inputs`` (compared as files: another spelling or a symlink is the same file),
    and its nearest existing ancestor must be a writable folder (missing folders are created on write).

    >>> check_output_path("/")
    Traceback (most recent call last):
    ...
    sen2naip_hub.errors.InvalidOutputError: /: is a directory, expected a file path
    """
    path = Path(path)
    if path.is_dir():
        raise InvalidOutputError(f"{path}: is a directory, expected a file path")
    for source in inputs:
        if _same_file(path, Path(source)):
            raise InvalidOutputError(f"{path}: would overwrite the input {source}; choose another output")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        if ancestor.is_symlink():  # a dangling link: mkdir cannot create through it
            break
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InvalidOutputError(f"{path}: cannot create it, {ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InvalidOutputError(f"{path}: cannot create it, {ancestor} is not writable")
    return path


def check_distinct_outputs(*paths: str | os.PathLike | None) -> None:
    """Raise :class:`InvalidOutputError` when two of ``paths`` (None ignored) name the same file."""
    given = [Path(p) for p in paths if p is not None]
    for i, first in enumerate(given):
        for second in given[i + 1 :]:
            if _same_file(first, second):
                raise InvalidOutputError(f"{first} and {second}: two outputs would go to the same file")


def _same_file(first: Path, second: Path) -> bool:
    """Whether two paths name one file: :func:`os.path.samefile` when both exist, else the resolved
    paths (symlinks followed, ``.`` and ``..`` removed)."""
    if first.exists() and second.exists():
        return os.path.samefile(first, second)
    return first.resolve() == second.resolve()


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
    return path


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary folder beside ``path``; on success it replaces ``path`` (an existing one is removed).
    The folder gets 0o777 & ~umask, like one made by ``mkdir``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    tmp.chmod(0o777 & ~current_umask())  # mkdtemp makes it 0o700; a folder we publish follows the umask
    try:
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, old / "x")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return Path(path)
