"""A small HTTP server with ``Range`` support (206 answers), on 127.0.0.1 only, for URL-import tests.

``http.server`` ignores ``Range``; this handler answers ``HEAD`` with ``Content-Length`` and
``Accept-Ranges: bytes``, and ``GET`` with a ``bytes=a-b`` range by 206 and those bytes only. It serves the
files of one folder, counts the bytes it sent, and lives for one ``with`` block.
"""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")
#: Seconds a connection may stay idle before the server drops it (keeps a hung test bounded).
SOCKET_TIMEOUT_S: float = 10.0


class RangeServer:
    """Serve ``folder`` at ``http://127.0.0.1:<port>/``; ``sent`` counts body bytes sent."""

    def __init__(self, folder: Path, fail_after: int | None = None) -> None:
        self.folder = folder
        self.sent = 0
        self.gets = 0
        #: answer 503 to every GET after this many (a network failing mid-import)
        self.fail_after = fail_after
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = SOCKET_TIMEOUT_S

            def log_message(self, *args) -> None:  # quiet
                pass

            def _file(self) -> Path | None:
                path = (server.folder / self.path.lstrip("/")).resolve()
                return path if path.is_file() and server.folder.resolve() in path.parents else None

            def do_HEAD(self) -> None:
                path = self._file()
                if path is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(path.stat().st_size))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()

            def do_GET(self) -> None:
                path = self._file()
                with server._lock:
                    server.gets += 1
                    failing = server.fail_after is not None and server.gets > server.fail_after
                if path is None or failing:
                    self.send_error(503 if failing else 404)
                    return
                size = path.stat().st_size
                match = _RANGE.match(self.headers.get("Range", ""))
                first, last = (int(match[1]), int(match[2] or size - 1)) if match else (0, size - 1)
                last = min(last, size - 1)
                with path.open("rb") as handle:
                    handle.seek(first)
                    body = handle.read(last - first + 1)
                self.send_response(206 if match else 200)
                if match:
                    self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                self.wfile.write(body)
                with server._lock:
                    server.sent += len(body)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/{name}"

    def __enter__(self) -> RangeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=SOCKET_TIMEOUT_S)
