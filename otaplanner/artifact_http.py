"""HTTP server of the local artifact store: signed, expiring GET URLs with Range support.

403 for a URL that is expired, tampered or unsigned; 404 for a signed name with no file;
206 for a satisfiable `Range: bytes=...` (so devices resume an interrupted download), 416 otherwise.
"""

from __future__ import annotations

import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from otaplanner.artifacts import LocalStore

RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
CHUNK = 1 << 16


def parse_range(header: str | None, size: int) -> tuple[int, int] | bool | None:
    """(first, last) inclusive for one satisfiable range; None when absent or ignorable
    (multi-range, syntax we do not serve: answered whole, as RFC 9110 allows); False if unsatisfiable."""
    if not header:
        return None
    m = RANGE_RE.fullmatch(header.strip())
    if m is None:
        return None
    first, last = m.group(1), m.group(2)
    if not first and not last:
        return None
    if not first:  # suffix: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            return False
        return max(0, size - n), size - 1
    start = int(first)
    if start >= size:
        return False
    end = min(int(last), size - 1) if last else size - 1
    if end < start:
        return None
    return start, end


class _Handler(BaseHTTPRequestHandler):
    store: LocalStore
    protocol_version = "HTTP/1.1"
    server_version = "fleet-artifacts"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request on stderr is noise; the planner logs what matters

    def _plain(self, status: HTTPStatus, text: str, extra: dict[str, str] | None = None) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        name = unquote(url.path.lstrip("/"))
        query = parse_qs(url.query)
        expires = query.get("expires", [""])[0]
        sig = query.get("sig", [""])[0]
        if not self.store.check(name, expires, sig):
            self._plain(HTTPStatus.FORBIDDEN, "forbidden: URL expired, tampered or unsigned\n")
            return
        try:
            f = open(self.store.path(name), "rb")  # noqa: SIM115 - closed below, after streaming
        except (OSError, ValueError):
            self._plain(HTTPStatus.NOT_FOUND, "no such object\n")
            return
        with f:
            size = f.seek(0, 2)
            rng = parse_range(self.headers.get("Range"), size)
            if rng is False:
                self._plain(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, "range not satisfiable\n",
                            {"Content-Range": f"bytes */{size}"})
                return
            start, end = rng if isinstance(rng, tuple) else (0, size - 1)
            self.send_response(HTTPStatus.PARTIAL_CONTENT if isinstance(rng, tuple) else HTTPStatus.OK)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(end - start + 1 if size else 0))
            if isinstance(rng, tuple):
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if self.command == "HEAD":
                return
            f.seek(start)
            left = end - start + 1 if size else 0
            try:
                while left > 0:
                    chunk = f.read(min(CHUNK, left))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    left -= len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the device went away; it resumes with Range


def serve_local_store(store: LocalStore, host: str,
                      port: int) -> tuple[ThreadingHTTPServer, threading.Thread]:
    """Start serving in a daemon thread; `server.shutdown()` stops it. Port 0 picks a free one."""
    handler = type("ArtifactHandler", (_Handler,), {"store": store})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    # A short poll keeps shutdown() quick; the loop itself is idle between requests.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              name="artifact-http", daemon=True)
    thread.start()
    return server, thread
