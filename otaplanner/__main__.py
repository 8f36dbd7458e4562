"""`python -m otaplanner` / `fleet-otaplanner`."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

from daemons.protocol.errors import ConfigError
from daemons.registry import Registry
from daemons.runtime.app import run_daemon
from daemons.runtime.config import Settings
from daemons.runtime.logs import get_logger
from daemons.runtime.metrics import DaemonMetrics, RedisReadings, gauge
from otaplanner.artifact_http import serve_local_store
from otaplanner.artifacts import LocalStore, store_from_settings
from otaplanner.jobs import JobFactory
from otaplanner.planner import Planner
from otaplanner.rollout import ABORTED, COMPLETED, DEVICE_STATES, ROLLOUT_STATES
from otaplanner.rollout_store import RolloutStore
from otaplanner.signing import Signer


def readings(store: RolloutStore) -> Iterator[Any]:
    """Rollouts by state; devices by job state for each rollout not yet finished.

    The rollout id label stays bounded: completed and aborted rollouts (with no job still
    trailing) leave the series.
    """
    states = store.states()
    by_state: dict[tuple[str, ...], float] = {(s.value,): 0.0 for s in ROLLOUT_STATES}
    for state in states.values():
        if state in ROLLOUT_STATES:
            by_state[(state,)] += 1
    yield gauge("fleet_ota_rollouts", "Rollouts by state", ["state"], by_state)
    trailing = set(store.trailing())
    jobs: dict[tuple[str, ...], float] = {}
    for rid, state in states.items():
        if state in (COMPLETED, ABORTED) and rid not in trailing:
            continue
        counts, _ = store.counts(rid)
        for device_state in DEVICE_STATES:
            jobs[(rid, device_state.value)] = counts.get(device_state)
    yield gauge("fleet_ota_rollout_devices", "Devices of an unfinished rollout by job state",
                ["rollout", "state"], jobs)


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
    owner = settings.client_id_for("otaplanner")
    jobs = JobFactory(Signer.from_settings(settings), artifacts)
    store = RolloutStore(redis)
    RedisReadings(metrics, lambda: readings(store))
    return Planner(store, Registry(redis), jobs, artifacts, settings.topic_prefix, settings.ops_prefix, owner)


def main(argv: list[str] | None = None) -> int:
    # Operator requests: answered by one replica, also on brokers without shared subscriptions.
    return run_daemon("otaplanner", build, argv, once=lambda s: [
        f"{s.ops_prefix}/ota/releases/register", f"{s.ops_prefix}/ota/rollouts/+/command"])


if __name__ == "__main__":
    sys.exit(main())
