"""Test servers for the STAC API tests: a real STAC API (``rustac serve``) in a subprocess on a free port."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: Seconds to wait for ``rustac serve`` to answer before the test fails.
STARTUP_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rustac_executable() -> str | None:
    """``rustac`` beside the running Python (the venv), else on PATH."""
    beside = Path(sys.executable).with_name("rustac")
    return str(beside) if beside.is_file() else shutil.which("rustac")


@contextmanager
def rustac_serve(items: Path, log: Path) -> Iterator[str]:
    """``rustac serve items`` (in-memory backend) on a free port; yields its URL, stops it after."""
    executable = rustac_executable()
    if executable is None:
        raise RuntimeError("rustac is not installed (pip install rustac==0.9.18)")
    addr = f"127.0.0.1:{free_port()}"
    with log.open("w") as out:
        process = subprocess.Popen(
            [executable, "serve", "--addr", addr, "--create-collections", str(items)], stdout=out, stderr=out
        )
    try:
        url = f"http://{addr}"
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"rustac serve did not start at {url}: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
