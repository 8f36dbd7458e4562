"""ota-planner: jobs issued per second when a 10,000-device stage opens, and the blast radius of a
release that fails everywhere (stages 1/5/20/100).

Real redis-server, mosquitto and the planner as its own process; the fleet is written into the
registry directly (what shadow-sync or the planner itself would learn from heartbeats), and one
MQTT client stands in for every device: it receives the jobs and, for the failing release, answers
each one with `failed`.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import redis as redis_lib

from daemons.registry import DeviceInfo, Registry
from daemons.runtime.mqtt import make_client
from tests.support import Daemon, Probe, env_for, free_port, start_mosquitto, start_redis

FLEET = 10_000
P, OPS = "bench", "benchops"
MASTER_KEY = "5a" * 32


class Devices:
    """One MQTT connection receiving every device's job; optionally failing each one."""

    def __init__(self, url: str, fail_prefix: str | None = None) -> None:
        self.fail_prefix = fail_prefix
        self.got: dict[str, float] = {}
        self.lock = threading.Lock()
        self.client, addr = make_client(url, f"bench-devices-{time.time_ns()}", max_inflight=1000)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect(addr.host, addr.port)
        self.client.loop_start()
        self.client.subscribe(f"{P}/+/ota/job", qos=1)
        subscribed.wait(10)

    def _on_message(self, client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        if not msg.payload:
            return
        device_id = msg.topic.split("/")[1]
        with self.lock:
            self.got.setdefault(device_id, time.perf_counter())
        if self.fail_prefix and device_id.startswith(self.fail_prefix):
            job = json.loads(msg.payload)
            body = {"job_id": job["job_id"], "state": "failed", "fw": "1.0.0", "error": "boot loop",
                    "ts": int(time.time())}
            client.publish(f"{P}/{device_id}/ota/status", json.dumps(body), qos=1)

    def count(self, prefix: str) -> int:
        with self.lock:
            return sum(1 for d in self.got if d.startswith(prefix))

    def wait(self, prefix: str, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.count(prefix) < n and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _fleet(r: Any, prefix: str, hw: str) -> list[str]:
    registry = Registry(r)
    ids = [f"{prefix}{i:05d}" for i in range(FLEET)]
    pipe = r.pipeline(transaction=False)
    for device_id in ids:
        registry.observe(pipe, DeviceInfo(device_id), hw, "1.0.0")
    pipe.execute()
    return ids


def _wait_state(op: Probe, rid: str, state: str, timeout: float) -> dict[str, Any]:
    return op.wait(f"{OPS}/ota/rollouts/{rid}/status", lambda m: m.body.get("state") == state, timeout).body


def main() -> str:
    work = Path(tempfile.mkdtemp(prefix="bench-ota-"))
    redis, broker = start_redis(work / "redis"), start_mosquitto(work / "mqtt")
    artifacts = work / "artifacts"
    artifacts.mkdir()
    data = b"\xe9" * 200_000
    (artifacts / "fw-2.bin").write_bytes(data)
    r = redis_lib.Redis.from_url(redis.url, decode_responses=True)
    planner = None
    devices = None
    try:
        _fleet(r, "a", "h1")
        _fleet(r, "f", "h2")
        planner = Daemon("otaplanner", env_for(
            redis, broker, P, OPS, FLEET_MQTT_CLIENT_ID="bench-otaplanner", FLEET_OTA_MASTER_KEY=MASTER_KEY,
            FLEET_ARTIFACT_STORE=f"local:{artifacts}", FLEET_ARTIFACT_HTTP_PORT=str(free_port()))).start()
        op = Probe(broker.url).connect().subscribe(f"{OPS}/ota/#")
        devices = Devices(broker.url, fail_prefix="f")
        release = {"version": "2.0.0", "hw": ["h1", "h2"], "object": "fw-2.bin",
                   "sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "secure_version": 1}
        for _ in range(50):  # the planner's subscriptions may still be on their way
            try:
                answer = op.request(f"{OPS}/ota/releases/register", release, timeout=0.5)
                assert answer.topic.endswith("accepted"), answer.body
                break
            except TimeoutError:
                continue

        # 1. One stage of 10,000 devices opens at once.
        t0 = time.perf_counter()
        op.request(f"{OPS}/ota/rollouts/wide/command", {
            "action": "create", "version": "2.0.0", "selector": {"hw": "h1"}, "stages": [100],
            "soak_s": 3600, "timeout_s": 3600})
        # The status that counts every job issued comes out after the jobs themselves.
        op.wait(f"{OPS}/ota/rollouts/wide/status", lambda m: m.body["counts"]["issued"] == FLEET, 120)
        handed = time.perf_counter() - t0
        devices.wait("a", FLEET, 120)
        received = devices.count("a")
        with devices.lock:
            last = max(t for d, t in devices.got.items() if d.startswith("a"))
            first = min(t for d, t in devices.got.items() if d.startswith("a"))
        rate = received / (last - t0)

        # 2. Blast radius: a release that fails on every device, stages 1/5/20/100.
        t1 = time.perf_counter()
        op.request(f"{OPS}/ota/rollouts/bad/command", {
            "action": "create", "version": "2.0.0", "selector": {"hw": "h2"}, "stages": [1, 5, 20, 100],
            "soak_s": 60, "success_pct": 95, "max_failure_pct": 2, "min_devices_for_gate": 20,
            "timeout_s": 1800})
        halted = _wait_state(op, "bad", "halted", 120)
        halted_at = time.perf_counter()
        devices.wait("f", FLEET, 2)  # anything still on its way
        reached = devices.count("f")
    finally:
        if devices is not None:
            devices.close()
        if planner is not None:
            planner.kill()
        r.close()
        broker.stop()
        redis.stop()
    blast = 100.0 * reached / FLEET
    lines = [
        "| measure | result | target |",
        "|---|---:|---:|",
        f"| jobs issued when a {FLEET:,}-device stage opens (create → all signed, stored and handed "
        f"to the broker) | {FLEET / handed:,.0f} jobs/s ({FLEET:,} in {handed:.2f} s) | >= 5,000/s |",
        f"| same, end to end (create → last job received by the devices' connection) | "
        f"{rate:,.0f} jobs/s ({received:,} in {last - t0:.2f} s) | |",
        f"| same, first job received → last job received | "
        f"{received / max(last - first, 1e-9):,.0f} jobs/s | |",
        f"| blast radius, release failing everywhere, stages 1/5/20/100 | {blast:.2f} % of the fleet "
        f"({reached} of {FLEET:,} devices got the job) | <= 1.5 % |",
        "",
        f"Blast radius run: halted in stage {halted['stage']} ({halted['reason']}); the job reached "
        f"{reached} devices. Jobs are HMAC-signed per device (HKDF key), stored in Redis, then published "
        f"retained at QoS 1; one planner process; the registry holds {2 * FLEET:,} devices, each run "
        f"selects {FLEET:,} of them by hw. The halt came {halted_at - t1:.1f} s after `create`.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(main())
