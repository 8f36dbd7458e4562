"""A fleet of simulated devices on one MQTT connection, for the planner's integration tests.

Each device announces itself with a heartbeat, takes its job from `{p}/{id}/ota/job` (retained)
and answers on `{p}/{id}/ota/status` by a rule: the states it reports for that job. Far simpler
than the device model (no download, no slots): here what matters is what the planner decides.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import paho.mqtt.client as paho

from daemons.runtime.mqtt import make_client

SUCCESS = ["downloading", "verifying", "rebooting", "succeeded"]
Rule = Callable[[str, dict[str, Any]], list[str]]


def succeed(device_id: str, manifest: dict[str, Any]) -> list[str]:
    return SUCCESS


def share(device_id: str, salt: str = "") -> float:
    """A stable number in [0, 1) per device, to pick which ones fail."""
    return int(hashlib.sha256((salt + device_id).encode()).hexdigest()[:8], 16) / 2**32


class FakeFleet:
    def __init__(self, url: str, prefix: str, ids: Iterable[str], rule: Rule = succeed,
                 hw: str = "c3", fw: str = "1.0.0", on_success: Callable[[str], None] | None = None,
                 protocol: paho.MQTTProtocolVersion = paho.MQTTv5,
                 auth: tuple[str, str] | None = None) -> None:
        """`auth`: an account allowed every device's topics (on amqtt, whose ACL is always on)."""
        self.prefix = prefix
        self.ids = list(ids)
        self.rule = rule
        self.hw = hw
        self.fw = dict.fromkeys(self.ids, fw)
        self.on_success = on_success
        self.jobs: dict[str, list[bytes]] = {d: [] for d in self.ids}  # every job payload received
        self.cleared: set[str] = set()  # devices whose job topic was emptied
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        user, password = auth or (None, None)
        self.client, addr = make_client(url, f"fleet-{prefix}-{id(self)}", protocol=protocol,
                                        max_inflight=1000, username=user, password=password)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect(addr.host, addr.port, keepalive=30)
        self.client.loop_start()
        if self.ids:
            self.client.subscribe([(f"{prefix}/{d}/ota/job", 1) for d in self.ids])
            if not subscribed.wait(10):
                raise TimeoutError("fleet: no SUBACK")

    def announce(self) -> None:
        for i, device_id in enumerate(self.ids):
            body = {"ts": int(time.time()), "seq": i, "uptime_s": 10, "fw": self.fw[device_id], "slot": 0,
                    "hw": self.hw}
            self.client.publish(f"{self.prefix}/{device_id}/heartbeat", json.dumps(body), qos=1)

    def report(self, device_id: str, job_id: str, state: str, fw: str) -> None:
        body = {"job_id": job_id, "state": state, "fw": fw, "ts": int(time.time())}
        self.client.publish(f"{self.prefix}/{device_id}/ota/status", json.dumps(body), qos=1)

    def _on_message(self, client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        device_id = msg.topic.split("/")[-3]
        with self.lock:
            if not msg.payload:
                self.cleared.add(device_id)
                self.changed.notify_all()
                return
            seen_before = bytes(msg.payload) in self.jobs[device_id]
            self.jobs[device_id].append(bytes(msg.payload))
            self.changed.notify_all()
        if seen_before:
            return  # the same job again (retained, or republished): a device ignores it
        job = json.loads(msg.payload)
        manifest = json.loads(base64.b64decode(job["manifest"]))
        old = self.fw[device_id]
        for state in self.rule(device_id, manifest):
            fw = manifest["version"] if state == "succeeded" else old
            self.report(device_id, job["job_id"], state, fw)
            if state == "succeeded":
                self.fw[device_id] = fw
                if self.on_success is not None:
                    self.on_success(device_id)

    def distinct_jobs(self, device_id: str) -> int:
        with self.lock:
            return len(set(self.jobs[device_id]))

    def with_job(self) -> set[str]:
        with self.lock:
            return {d for d, jobs in self.jobs.items() if jobs}

    def wait_for(self, check: Callable[[], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not check():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("fleet: condition not reached")
                self.changed.wait(min(left, 0.2))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
