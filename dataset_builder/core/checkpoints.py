"""The build's work folder: atomic, resumable checkpoints of every stage and chunk.

Every checkpoint is written to a temporary name in its folder and renamed into place
(``os.replace``), so a checkpoint that exists is complete; a build killed at any moment leaves only
complete checkpoints (and perhaps a stray temporary file, ignored and overwritten). The folder is
tied to a *fingerprint* of what decides the checkpoints' contents (the config, the input files, the
models and the code, per stage: :mod:`dataset_builder.core.fingerprint`): when any of it changes, that
stage's checkpoints are discarded rather than mixed with new ones.

Records are stored as ``.npz`` (``hr`` / ``lr`` stacked uint16 arrays plus a JSON ``meta`` array of
the other fields), read back with ``allow_pickle=False``. A checkpoint may hold only some of the arrays
(the synthetic stage stores ``lr`` only: its ``hr`` is a window of an input file, read again when the
shards are written); the fields not stored read back as None.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import io
import json
import os
import shutil
import signal
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from dataset_builder.core.records import PairRecord
from sen2naip_hub.files import atomic_file

__all__ = [
    "DONE_NAME",
    "FINGERPRINT_FILE",
    "KILL_ENV",
    "REJECTED_KEY",
    "Checkpoints",
    "atomic_write_bytes",
    "atomic_write_text",
    "encode_arrays",
    "encode_records",
    "encode_rejection",
]

#: Test hook: a glob of checkpoint names; the build SIGKILLs itself right after committing a match
#: (e.g. ``synthetic/degrade-00001.npz`` or ``write/moved-old``). Used by the kill-and-resume tests.
KILL_ENV: str = "SEN2NAIP_BUILD_KILL_AT"
FINGERPRINT_FILE: str = "fingerprint.json"
#: The marker of a finished build: the output folder's file stats when it was written.
DONE_NAME: str = "done.json"
_ARRAY_FIELDS: tuple[str, ...] = ("hr", "lr")
_DATE_FIELDS: tuple[str, ...] = ("hr_date", "lr_date")
#: The meta key of a task that failed: its item is rejected with this reason (see backends.plan).
REJECTED_KEY: str = "rejected"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (:func:`sen2naip_hub.files.atomic_file`)."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)


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


def _record_from(meta: dict[str, Any], hr: np.ndarray | None, lr: np.ndarray | None) -> PairRecord:
    values = dict(meta)
    for key in _DATE_FIELDS:
        values[key] = None if values[key] is None else dt.date.fromisoformat(values[key])
    values["hr_transform"], values["lr_transform"] = (
        tuple(values["hr_transform"]),
        tuple(values["lr_transform"]),
    )
    return PairRecord(hr=hr, lr=lr, **values)


def encode_arrays(meta: Any, **arrays: np.ndarray) -> bytes:
    """``arrays`` plus a JSON ``meta`` as the bytes of one ``.npz`` checkpoint."""
    buffer = io.BytesIO()
    payload = np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    np.savez(buffer, meta=payload, **arrays)
    return buffer.getvalue()


def encode_records(
    records: Sequence[PairRecord], extra: Any = None, arrays: Sequence[str] = _ARRAY_FIELDS
) -> bytes:
    """Records (and any JSON-able ``extra``) as the bytes of one ``.npz`` checkpoint; only the array
    fields named in ``arrays`` (``hr``, ``lr``) are stored."""
    stored = {}
    if records:
        stored = {key: np.stack([getattr(r, key) for r in records]) for key in arrays}
    return encode_arrays({"records": [_record_meta(r) for r in records], "extra": extra}, **stored)


def encode_rejection(reason: str) -> bytes:
    """The checkpoint of a task whose item was rejected: only the reason."""
    return encode_arrays({REJECTED_KEY: reason})


class Checkpoints:
    """Named checkpoints under ``root`` (names may contain ``/``), valid for one fingerprint."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def open(
        cls, root: Path, prints: dict[str, dict[str, str]], echo: Callable[[str], None] = print
    ) -> Checkpoints:
        """The checkpoints valid for ``prints`` (``{stage: {part: digest}}``, in build order).

        A stage whose digests differ from those its checkpoints were made under loses its folder
        ``<root>/<stage>/`` (and the ``done`` marker); one line says which parts changed and which
        stages restart. Checkpoints of an unknown layout are discarded whole.
        """
        store = cls(root)
        marker = root / FINGERPRINT_FILE
        old = json.loads(marker.read_text()).get("stages") if marker.is_file() else None
        if marker.is_file() and not isinstance(old, dict):
            echo(f"{root}: checkpoints of an older build layout: starting over")
            shutil.rmtree(root)
        elif isinstance(old, dict):
            store._restart_changed(old, prints, echo)
        if not marker.is_file() or old != prints:
            atomic_write_text(marker, json.dumps({"stages": prints}, indent=1, sort_keys=True))
        return store

    def _restart_changed(
        self, old: dict[str, dict[str, str]], prints: dict[str, dict[str, str]], echo: Callable[[str], None]
    ) -> None:
        changed = {
            stage: [part for part, digest in parts.items() if old.get(stage, {}).get(part) != digest]
            for stage, parts in prints.items()
        }
        stages = [stage for stage, parts in changed.items() if parts]
        if not stages:
            return
        what = sorted({part for stage in stages for part in changed[stage]})
        echo(
            f"{' and '.join(what)} changed since the checkpoints in {self.root} were made: "
            f"restarting {', '.join(stages)}"
        )
        for stage in stages:
            shutil.rmtree(self.root / stage, ignore_errors=True)
        self.remove(DONE_NAME)

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

    def save_bytes(self, name: str, data: bytes) -> None:
        """A checkpoint encoded elsewhere (:func:`encode_arrays`, :func:`encode_records`), atomically."""
        atomic_write_bytes(self.path(name), data)
        commit_point(name)

    def save_arrays(self, name: str, meta: Any, **arrays: np.ndarray) -> None:
        """``arrays`` plus a JSON ``meta`` in one ``.npz``, atomically."""
        self.save_bytes(name, encode_arrays(meta, **arrays))

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
        self.save_bytes(name, encode_records(records, extra))

    def rejection(self, name: str) -> str | None:
        """The reason a task's item was rejected (its checkpoint holds no result), or None."""
        meta = self.load_meta(name)
        return meta.get(REJECTED_KEY) if isinstance(meta, dict) else None

    def load_records(self, name: str) -> tuple[list[PairRecord], Any]:
        meta, arrays = self.load_arrays(name)
        hr, lr = arrays.get("hr"), arrays.get("lr")
        records = [
            _record_from(m, None if hr is None else hr[i], None if lr is None else lr[i])
            for i, m in enumerate(meta["records"])
        ]
        return records, meta["extra"]
