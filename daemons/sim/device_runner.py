"""One `DeviceModel` on its own MQTT connection, for tests, benchmarks and demos.

Presence on `{p}/{id}/status` (Last Will offline), heartbeats, jobs from `{p}/{id}/ota/job`,
progress on `{p}/{id}/ota/status`. One paho client per device: fine for tens of devices in one
process. A heartbeat counts as acknowledged when its PUBACK arrives.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from typing import Any

from daemons.protocol.codec import CodecError, decode
from daemons.runtime.mqtt import make_client
from daemons.sim.device_model import DeviceModel, Status


class DeviceRunner:
    """One DeviceModel on its own MQTT connection. `start()`, then `stop()`."""

    def __init__(self, model: DeviceModel, mqtt_url: str, prefix: str, heartbeat_s: float = 60.0,
                 username: str | None = None, password: str | None = None) -> None:
        self.model = model
        self.prefix = prefix
        self.heartbeat_s = heartbeat_s
        self.base = f"{prefix}/{model.device_id}"
        self.status_ts = 0  # ts of the last status published
        self.statuses: list[Status] = []  # everything published on ota/status, in order
        self.seq = 0
        self.started_at = time.monotonic()
        self._jobs: queue.Queue[bytes | None] = queue.Queue()
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._run, name=f"device-{model.device_id}", daemon=True)
        self.client, addr = make_client(mqtt_url, f"{prefix}-{model.device_id}", protocol="3.1.1",
                                        username=username, password=password, clean_session=True)
        self._addr = (addr.host, addr.port)
        self.client.will_set(f"{self.base}/status", json.dumps({"online": False}), qos=1, retain=True)
        self.client.on_message = lambda _c, _u, m: self._jobs.put(bytes(m.payload))
        self.client.on_connect = self._on_connect
        self._connected = threading.Event()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        client.subscribe(f"{self.base}/ota/job", qos=1)
        self._presence()  # on every connection, reconnects included (PROTOCOL §4)
        self._connected.set()

    def start(self, timeout: float = 10.0) -> DeviceRunner:
        self.client.connect(*self._addr, keepalive=30)
        self.client.loop_start()
        if not self._connected.wait(timeout):
            raise TimeoutError(f"{self.model.device_id}: no CONNACK")
        self.heartbeat()
        self._worker.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._jobs.put(None)
        if self._worker.is_alive():
            self._worker.join(5)
        self.client.disconnect()  # a clean disconnect: the will is not sent
        self.client.loop_stop()

    def _publish(self, suffix: str, body: dict[str, Any], retain: bool = False) -> Any:
        return self.client.publish(f"{self.base}/{suffix}", json.dumps(body), qos=1, retain=retain)

    def _presence(self) -> None:
        # A fresh ts per connection, even two within one second: shadow-sync tells a new
        # connection from a redelivered retained status by it.
        self.status_ts = max(int(self.model.clock()), self.status_ts + 1)
        self._publish("status", {"online": True, "fw": self.model.version, "ts": self.status_ts}, retain=True)

    def publish_status(self, status: Status) -> None:
        self.statuses.append(status)
        self._publish("ota/status", status)

    def heartbeat(self, wait_s: float = 10.0) -> bool:
        """Publish a heartbeat; True once the broker acknowledged it."""
        self.seq += 1
        uptime = int(time.monotonic() - self.started_at)
        info = self._publish("heartbeat", self.model.heartbeat(self.seq, uptime))
        try:
            info.wait_for_publish(wait_s)
        except (RuntimeError, ValueError):
            return False
        return bool(info.is_published())

    def _run(self) -> None:
        next_beat = time.monotonic() + self.heartbeat_s
        while not self._stop.is_set():
            try:
                payload = self._jobs.get(timeout=max(0.0, next_beat - time.monotonic()))
            except queue.Empty:
                payload = b""
            if self._stop.is_set():
                return
            if payload:
                self._job(payload)
            if time.monotonic() >= next_beat:
                self.heartbeat()
                next_beat = time.monotonic() + self.heartbeat_s

    def _job(self, payload: bytes) -> None:
        try:
            job: Any = decode(payload)[0]
        except CodecError:
            job = {}
        self.model.handle_job(job, emit=self.publish_status)
        if self.model.trial is None:
            return
        # Booted the new image on trial: reconnect (presence), then a heartbeat that must be acked.
        self._presence()
        for status in self.model.heartbeat_acked() if self.heartbeat() else self.model.trial_failed():
            if status["state"] != "succeeded":
                self._presence()
            self.publish_status(status)
