"""A device written with the official AWS IoT Device SDK v2 for Python (`awsiotsdk`), unchanged.

The SDK's service clients (IotShadowClient, IotJobsClient) run over an awscrt MQTT connection;
here it is a plain TCP one to the test broker (no TLS, no credentials), either the MQTT 3.1.1
`mqtt.Connection` or the MQTT 5 `mqtt5.Client`, both as the SDK's samples build them.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from awscrt import io, mqtt, mqtt5

CLIENT_KINDS = ["mqtt311", "mqtt5"]
QOS1 = mqtt.QoS.AT_LEAST_ONCE  # the SDK takes awscrt's enum, not an int


class SdkConnection:
    """One awscrt connection to `mqtt://127.0.0.1:port`; `.connection` is what a service client takes."""

    def __init__(self, url: str, client_id: str, kind: str = "mqtt311") -> None:
        port = int(url.rsplit(":", 1)[1])
        bootstrap = io.ClientBootstrap.get_or_create_static_default()
        self.kind = kind
        self._client5: mqtt5.Client | None = None
        if kind == "mqtt311":
            self._conn = mqtt.Connection(mqtt.Client(bootstrap, None), "127.0.0.1", port, client_id,
                                         clean_session=True, keep_alive_secs=30)
            self._conn.connect().result(10)
            self.connection: Any = self._conn
        else:
            connected = threading.Event()
            stopped = threading.Event()
            options = mqtt5.ClientOptions(
                "127.0.0.1", port, bootstrap=bootstrap,
                connect_options=mqtt5.ConnectPacket(client_id=client_id, keep_alive_interval_sec=30),
                session_behavior=mqtt5.ClientSessionBehaviorType.CLEAN,
                on_lifecycle_event_connection_success_fn=lambda _d: connected.set(),
                on_lifecycle_event_stopped_fn=lambda _d: stopped.set())
            self._client5 = mqtt5.Client(options)
            self._stopped = stopped
            self._client5.start()
            if not connected.wait(10):
                raise TimeoutError(f"the SDK's MQTT 5 client did not connect to {url}")
            self.connection = self._client5

    def close(self) -> None:
        if self._client5 is not None:
            self._client5.stop()
            self._stopped.wait(10)
        else:
            self._conn.disconnect().result(10)


class Events:
    """Callbacks for the SDK's subscribe_* calls; the parsed responses queue up by name."""

    def __init__(self) -> None:
        self._queues: dict[str, queue.Queue[Any]] = {}
        self._lock = threading.Lock()

    def _queue(self, name: str) -> queue.Queue[Any]:
        with self._lock:
            return self._queues.setdefault(name, queue.Queue())

    def on(self, name: str) -> Callable[[Any], None]:
        return lambda response: self._queue(name).put(response)

    def next(self, name: str, timeout: float = 10.0) -> Any:
        try:
            return self._queue(name).get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no {name} within {timeout} s") from None

    def empty(self, name: str) -> bool:
        return self._queue(name).empty()


def subscribed(pair: tuple[Future[Any], str]) -> str:
    """Wait for a subscribe_* call's SUBACK; its topic."""
    future, topic = pair
    future.result(10)
    return topic
