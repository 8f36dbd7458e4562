"""HTTP server of the local artifact store: signed, expiring GET URLs with Range support.

403 for a URL that is expired, tampered or unsigned (the check is `LocalStore.check`); 404 for a
signed name with no file. Range requests are Starlette's `FileResponse` (RFC 9110: 206 with
Content-Range for a satisfiable range, so devices resume an interrupted download; 416 with
`Content-Range: bytes */size` otherwise), served by uvicorn in a thread of the planner.
"""

from __future__ import annotations

import socket
import threading

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Route

from otaplanner.artifacts import LocalStore


def artifact_app(store: LocalStore) -> Starlette:
    """The ASGI app: `GET|HEAD /<object name>?expires=&sig=`."""

    async def get(request: Request) -> Response:
        name = request.path_params["name"]
        if not store.check(name, request.query_params.get("expires"), request.query_params.get("sig")):
            return PlainTextResponse("forbidden: URL expired, tampered or unsigned\n", status_code=403)
        path = store.path(name)
        if not path.is_file():
            return PlainTextResponse("no such object\n", status_code=404)
        return FileResponse(path, media_type="application/octet-stream")

    return Starlette(routes=[Route("/{name:path}", get, methods=["GET", "HEAD"])])


class ArtifactServer:
    """uvicorn serving `artifact_app` in a daemon thread; `shutdown()` stops it."""

    def __init__(self, store: LocalStore, host: str, port: int) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind((host, port))  # bound here, so port 0 is known before serving
        self.server_address = self.socket.getsockname()[:2]
        config = uvicorn.Config(artifact_app(store), log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]},
                                       name="artifact-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> ArtifactServer:
        self.thread.start()
        while not self.server.started and self.thread.is_alive():
            threading.Event().wait(0.01)
        return self

    def shutdown(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)

    def server_close(self) -> None:
        self.socket.close()


def serve_local_store(store: LocalStore, host: str, port: int) -> tuple[ArtifactServer, threading.Thread]:
    """Start serving in a daemon thread; `server.shutdown()` stops it. Port 0 picks a free one."""
    server = ArtifactServer(store, host, port).start()
    return server, server.thread
