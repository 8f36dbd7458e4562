"""`python -m otaplanner`'s build: the local store's HTTP server is owned by the daemon's resources."""

from __future__ import annotations

import dataclasses
import socket
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from daemons.runtime.config import Settings
from daemons.runtime.metrics import DaemonMetrics
from otaplanner.__main__ import build
from tests.support import free_port, http_get


def test_the_artifact_server_stops_with_the_daemon(redis: Any, tmp_path: Path) -> None:
    port = free_port()
    settings = dataclasses.replace(Settings(), ota_master_key="11" * 32, artifact_http_port=port,
                                   artifact_store=f"local:{tmp_path}")
    with ExitStack() as resources:
        build(settings, redis, DaemonMetrics("otaplanner"), resources)
        status, _, _ = http_get(f"http://127.0.0.1:{port}/nothing")
        assert status in (403, 404)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
