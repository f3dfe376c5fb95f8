"""The build's work folder: atomic, resumable checkpoints of every stage and chunk.

Every checkpoint is written to a temporary name in its folder and renamed into place
(``os.replace``), so a checkpoint that exists is complete; a build killed at any moment leaves only
complete checkpoints (and perhaps a stray temporary file, ignored and overwritten). The folder is
tied to a *fingerprint* of what decides the checkpoints' contents (the config, the input files, the
models and the code: :func:`dataset_builder.build.fingerprint`): when any of it changes, the old
checkpoints are discarded rather than mixed with new ones.

Records are stored as ``.npz`` (``hr`` / ``lr`` stacked uint16 arrays plus a JSON ``meta`` array of
the other fields), read back with ``allow_pickle=False``.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import io
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from dataset_builder.records import PairRecord

__all__ = ["FINGERPRINT_FILE", "KILL_ENV", "Checkpoints", "atomic_write_bytes", "atomic_write_text"]

#: Test hook: a glob of checkpoint names; the build SIGKILLs itself right after committing a match
#: (e.g. ``synthetic/degrade-00001.npz`` or ``write/moved-old``). Used by the kill-and-resume tests.
KILL_ENV: str = "SEN2NAIP_BUILD_KILL_AT"
FINGERPRINT_FILE: str = "fingerprint.json"
_ARRAY_FIELDS: tuple[str, ...] = ("hr", "lr")
_DATE_FIELDS: tuple[str, ...] = ("hr_date", "lr_date")
_FILE_MODE: int = 0o644


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def commit_point(name: str) -> None:
    """Called after each checkpoint is committed; SIGKILLs the process when :data:`KILL_ENV` matches."""
    target = os.environ.get(KILL_ENV)
    if target and fnmatch.fnmatchcase(name, target):
        os.kill(os.getpid(), signal.SIGKILL)


def _record_meta(record: PairRecord) -> dict[str, Any]:
    meta = {k: v for k, v in asdict(record).items() if k not in _ARRAY_FIELDS}
    for key in _DATE_FIELDS:
        meta[key] = None if meta[key] is None else meta[key].isoformat()
    meta["hr_transform"], meta["lr_transform"] = list(record.hr_transform), list(record.lr_transform)
    return meta


def _record_from(meta: dict[str, Any], hr: np.ndarray, lr: np.ndarray) -> PairRecord:
    values = dict(meta)
    for key in _DATE_FIELDS:
        values[key] = None if values[key] is None else dt.date.fromisoformat(values[key])
    values["hr_transform"], values["lr_transform"] = (
        tuple(values["hr_transform"]),
        tuple(values["lr_transform"]),
    )
    return PairRecord(hr=hr, lr=lr, **values)


class Checkpoints:
    """Named checkpoints under ``root`` (names may contain ``/``), valid for one fingerprint."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def open(cls, root: Path, fingerprint: str, echo: Callable[[str], None] = print) -> Checkpoints:
        """The checkpoints of ``fingerprint``; earlier ones of another fingerprint are discarded."""
        store = cls(root)
        marker = root / FINGERPRINT_FILE
        if marker.is_file() and json.loads(marker.read_text()).get("fingerprint") != fingerprint:
            echo(f"config or inputs changed since the checkpoints in {root} were made: starting over")
            shutil.rmtree(root)
        if not marker.is_file():
            atomic_write_text(marker, json.dumps({"fingerprint": fingerprint}))
        return store

    def path(self, name: str) -> Path:
        return self.root / name

    def has(self, name: str) -> bool:
        return self.path(name).is_file()

    def remove(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)

    def save_json(self, name: str, value: Any) -> None:
        atomic_write_text(self.path(name), json.dumps(value, indent=1, sort_keys=True))
        commit_point(name)

    def load_json(self, name: str) -> Any:
        return json.loads(self.path(name).read_text(encoding="utf-8"))

    def save_arrays(self, name: str, meta: Any, **arrays: np.ndarray) -> None:
        """``arrays`` plus a JSON ``meta`` in one ``.npz``, atomically."""
        buffer = io.BytesIO()
        payload = np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), dtype=np.uint8)
        np.savez(buffer, meta=payload, **arrays)
        atomic_write_bytes(self.path(name), buffer.getvalue())
        commit_point(name)

    def load_arrays(self, name: str) -> tuple[Any, dict[str, np.ndarray]]:
        with np.load(self.path(name), allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files if key != "meta"}
            meta = json.loads(data["meta"].tobytes().decode("utf-8"))
        return meta, arrays

    def load_meta(self, name: str) -> Any:
        """Only the JSON ``meta`` of an ``.npz`` checkpoint (the arrays are not read)."""
        with np.load(self.path(name), allow_pickle=False) as data:
            return json.loads(data["meta"].tobytes().decode("utf-8"))

    def save_records(self, name: str, records: Sequence[PairRecord], extra: Any = None) -> None:
        """Records (and any JSON-able ``extra``, e.g. manifest entries) in one ``.npz``."""
        arrays = {}
        if records:
            arrays = {key: np.stack([getattr(r, key) for r in records]) for key in _ARRAY_FIELDS}
        self.save_arrays(name, {"records": [_record_meta(r) for r in records], "extra": extra}, **arrays)

    def load_records(self, name: str) -> tuple[list[PairRecord], Any]:
        meta, arrays = self.load_arrays(name)
        records = [_record_from(m, arrays["hr"][i], arrays["lr"][i]) for i, m in enumerate(meta["records"])]
        return records, meta["extra"]
