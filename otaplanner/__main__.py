"""`python -m otaplanner` / `fleet-otaplanner`."""

from __future__ import annotations

import socket
import sys
from contextlib import ExitStack
from typing import Any

from daemons.protocol.errors import ConfigError
from daemons.registry import Registry
from daemons.runtime.app import run_daemon
from daemons.runtime.config import Settings
from daemons.runtime.logs import get_logger
from daemons.runtime.metrics import DaemonMetrics
from otaplanner.artifact_http import serve_local_store
from otaplanner.artifacts import LocalStore, store_from_settings
from otaplanner.jobs import JobFactory
from otaplanner.planner import Planner
from otaplanner.rollout_store import RolloutStore
from otaplanner.signing import Signer


def build(settings: Settings, redis: Any, metrics: DaemonMetrics, resources: ExitStack) -> Planner:
    """The planner; the local artifact store's HTTP server (if any) is stopped by `resources`."""
    if not settings.ota_master_key and not settings.ota_ecdsa_key:
        raise ConfigError("FLEET_OTA_MASTER_KEY (ota_master_key) or FLEET_OTA_ECDSA_KEY (ota_ecdsa_key) "
                          "is required to sign jobs")
    artifacts = store_from_settings(settings)
    if isinstance(artifacts, LocalStore) and settings.artifact_http_port > 0:
        server, _thread = serve_local_store(artifacts, "0.0.0.0", settings.artifact_http_port)
        resources.callback(server.server_close)
        resources.callback(server.shutdown)
        get_logger("otaplanner").info("artifact_http", port=settings.artifact_http_port)
    owner = settings.mqtt_client_id or f"otaplanner-{socket.gethostname()}"
    jobs = JobFactory(Signer.from_settings(settings), artifacts)
    return Planner(RolloutStore(redis), Registry(redis), jobs, artifacts, settings.topic_prefix,
                   settings.ops_prefix, owner)


def main(argv: list[str] | None = None) -> int:
    return run_daemon("otaplanner", build, argv)


if __name__ == "__main__":
    sys.exit(main())
