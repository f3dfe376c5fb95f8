"""A small HTTP file server for tests: honours ``Range`` (206), logs every request, and injects faults.

Files are served from ``root``. The first path segment may name a fault, applied to the file after it:

* ``/503once/<file>``: the first request for the file answers 503, later ones succeed;
* ``/slow/<file>``: every request waits ``slow_s`` before answering (a client timeout);
* ``/cut/<file>``: the body is cut after half of it, with the full Content-Length announced;
* ``/length/<file>``: the announced Content-Length is larger than the body sent.

``log`` holds ``(method, path, status, bytes sent)`` per request, to tell window reads (206) from whole
files (200).
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

FAULTS = ("503once", "slow", "cut", "length")
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


class RangeServer:
    """``with RangeServer(root) as server: server.url("a.tif")``: a server on a free port of 127.0.0.1."""

    def __init__(self, root: Path, slow_s: float = 3.0) -> None:
        self.root, self.slow_s = Path(root), slow_s
        self.log: list[tuple[str, str, int, int]] = []
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def url(self, name: str, fault: str | None = None) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/{fault + '/' if fault else ''}{name}"

    def bytes_served(self, name: str) -> int:
        return sum(size for _, path, _, size in self.log if path.endswith("/" + name))

    def gets(self, name: str) -> list[int]:
        """The status of every GET of ``name`` (206: a range, 200: the whole file)."""
        return [
            status for method, path, status, _ in self.log if method == "GET" and path.endswith("/" + name)
        ]

    def __enter__(self) -> RangeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)

    def _record(self, method: str, path: str, status: int, size: int) -> None:
        with self._lock:
            self.log.append((method, path, status, size))

    def _first(self, path: str) -> bool:
        with self._lock:
            first = path not in self._seen
            self._seen.add(path)
            return first

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet: the log list is the record
                pass

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def do_GET(self) -> None:
                self._serve(body=True)

            def _serve(self, body: bool) -> None:
                parts = self.path.lstrip("/").split("/", 1)
                fault = parts[0] if len(parts) == 2 and parts[0] in FAULTS else None
                name = parts[1] if fault else self.path.lstrip("/")
                path = server.root / name
                if fault == "503once" and server._first(self.path):
                    return self._send(503, b"busy", body)
                if fault == "slow":
                    time.sleep(server.slow_s)
                if not path.is_file():
                    return self._send(404, b"not found", body)
                data = path.read_bytes()
                match = _RANGE.fullmatch(self.headers.get("Range", ""))
                if match is None:
                    return self._send(200, data, body, fault=fault)
                start = int(match[1])
                end = min(int(match[2]) if match[2] else len(data) - 1, len(data) - 1)
                if start >= len(data):
                    return self._send(416, b"", body)
                extra = {"Content-Range": f"bytes {start}-{end}/{len(data)}"}
                self._send(206, data[start : end + 1], body, extra, fault)

            def _send(self, status, data, body, extra=None, fault=None) -> None:
                announced = len(data) + (4096 if fault == "length" else 0)
                sent = data[: len(data) // 2] if fault == "cut" else data
                self.send_response(status)
                self.send_header("Content-Length", str(announced))
                self.send_header("Accept-Ranges", "bytes")
                for key, value in (extra or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                if body:
                    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                        self.wfile.write(sent)
                server._record(self.command, self.path, status, len(sent) if body else 0)
                if fault in ("cut", "length"):
                    self.close_connection = True

        return Handler
