"""Two numbered ota-planner replicas on amqtt (MQTT 3.1.1, no `$share`): each operator request
answered once; a rollout completes with exact counts, one job per device, each report counted once."""

from __future__ import annotations

import hashlib
import time

import paho.mqtt.client as paho
import pytest

from daemons.runtime.replicas import owner_of
from tests.otaplanner.fleet import SUCCESS, FakeFleet
from tests.otaplanner.planner_env import MASTER_KEY, ids
from tests.support import Daemon, Probe, counted, env_for, free_port, start_amqtt


@pytest.fixture
def amqtt(tmp_path, prefixes):
    # The embedded broker's ACL follows its prefixes: one broker per test's prefixes.
    p, o = prefixes
    server = start_amqtt(tmp_path / "amqtt", env={"FLEET_TOPIC_PREFIX": p, "FLEET_OPS_PREFIX": o})
    yield server
    server.stop()


def test_two_numbered_replicas_answer_once_and_roll_out_once(amqtt, redis, redis_target, prefixes, tmp_path):
    p, o = prefixes
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    ports = [free_port(), free_port()]
    planners = [Daemon("otaplanner", env_for(
        redis_target, amqtt, p, o, FLEET_MQTT_CLIENT_ID=f"planner-{n}-{p}", FLEET_OTA_MASTER_KEY=MASTER_KEY,
        FLEET_MQTT_USERNAME="otaplanner", FLEET_MQTT_PASSWORD=amqtt.accounts["otaplanner"],
        FLEET_ARTIFACT_STORE=f"local:{artifacts}", FLEET_ARTIFACT_HTTP_PORT=str(free_port()),
        FLEET_MQTT_PROTOCOL="3.1.1", FLEET_REPLICA_INDEX=str(n), FLEET_REPLICA_COUNT="2",
        FLEET_METRICS_PORT=str(ports[n])))
        for n in range(2)]
    devices = ids(16)
    assert {owner_of(d, 2) for d in devices} == {0, 1}
    fleet: FakeFleet | None = None
    operator = Probe(amqtt.url, protocol=paho.MQTTv311, auth=("operator", amqtt.accounts["operator"]))
    try:
        for d in planners:
            d.start()
            assert d.event("started")["shared"] is False
        operator.connect().subscribe(f"{o}/ota/#")
        data = b"firmware 2.0.0" * 100
        (artifacts / "fw.bin").write_bytes(data)
        # An operator waits for each answer before the next request (replicas do not keep order).
        r = operator.request(f"{o}/ota/releases/register", {
            "version": "2.0.0", "hw": ["c3"], "object": "fw.bin", "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data), "secure_version": 1})
        assert r.topic.endswith("/accepted"), r.body
        fleet = FakeFleet(amqtt.url, p, devices, protocol=paho.MQTTv311,
                          auth=("otaplanner", amqtt.accounts["otaplanner"]))
        fleet.announce()
        deadline = time.monotonic() + 20
        while redis.scard("fleet:{idx}:all") < len(devices):
            assert time.monotonic() < deadline, "the planners did not see every device"
            time.sleep(0.05)
        create = {"action": "create", "version": "2.0.0", "stages": [100], "soak_s": 0, "success_pct": 95,
                  "max_failure_pct": 2, "min_devices_for_gate": 20, "timeout_s": 60}
        r = operator.request(f"{o}/ota/rollouts/r1/command", create)
        assert r.topic.endswith("/accepted"), r.body
        done = operator.wait(f"{o}/ota/rollouts/r1/status", lambda m: m.body["state"] == "completed"
                             and m.body["counts"]["succeeded"] == len(devices), timeout=30)
        assert done.body["counts"]["failed"] == 0, done.body
        operator.request(f"{o}/ota/rollouts/r1/command", {"action": "pause"})  # 409 once completed
        extra = [(m.topic, m.body) for m in operator.drain(quiet=1.5)
                 if m.topic.endswith(("/accepted", "/rejected"))]
        assert extra == [], "a second replica answered too"
        assert len(list(redis.scan_iter(match="fleet:once:*"))) == 3, "each request claimed in Redis"
        assert all(len(fleet.jobs[d]) == 1 for d in devices), "each device got one job document"
        reports = [counted(port, "otaplanner", "ota_status") for port in ports]
        assert sum(reports) == len(SUCCESS) * len(devices) and min(reports) > 0, reports
    finally:
        operator.close()
        if fleet is not None:
            fleet.close()
        for d in planners:
            d.kill()
