"""fleet_mqtt_connected follows the broker connection: 0 when the broker goes, 1 when it is back."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from daemons.cli.localstack import start_mosquitto
from daemons.runtime.app import open_session
from daemons.runtime.config import Settings
from daemons.runtime.metrics import DaemonMetrics


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.05)


def test_connected_gauge_follows_the_connection(tmp_path: Path) -> None:
    broker = start_mosquitto(tmp_path / "m1")
    metrics = DaemonMetrics("gauge")

    def gauge() -> float | None:
        return metrics.registry.get_sample_value("fleet_mqtt_connected", {"daemon": "gauge"})

    settings = dataclasses.replace(Settings(), mqtt_url=broker.url, mqtt_client_id=f"gauge-{time.time_ns()}")
    try:
        with ExitStack() as resources:
            open_session(settings, "gauge", ["gauge/#"], metrics, resources)
            assert gauge() == 1
            port = broker.port
            broker.stop()
            wait_until(lambda: gauge() == 0)
            broker = start_mosquitto(tmp_path / "m2", port)
            wait_until(lambda: gauge() == 1)
        assert gauge() == 0  # the session is closed with the daemon
    finally:
        broker.stop()
