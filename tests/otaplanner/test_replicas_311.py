"""Two ota-planner replicas on amqtt (MQTT 3.1.1, no `$share`): each operator request answered once."""

from __future__ import annotations

import hashlib

import paho.mqtt.client as paho
import pytest

from tests.otaplanner.planner_env import MASTER_KEY
from tests.support import Daemon, Probe, env_for, free_port, start_amqtt


@pytest.fixture
def amqtt(tmp_path, prefixes):
    # The embedded broker's ACL follows its prefixes: one broker per test's prefixes.
    p, o = prefixes
    server = start_amqtt(tmp_path / "amqtt", env={"FLEET_TOPIC_PREFIX": p, "FLEET_OPS_PREFIX": o})
    yield server
    server.stop()


def test_each_request_answered_once_by_two_replicas(amqtt, redis, redis_target, prefixes, tmp_path):
    p, o = prefixes
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    planners = [Daemon("otaplanner", env_for(
        redis_target, amqtt, p, o, FLEET_MQTT_CLIENT_ID=f"planner-{n}-{p}", FLEET_OTA_MASTER_KEY=MASTER_KEY,
        FLEET_MQTT_USERNAME="otaplanner", FLEET_MQTT_PASSWORD=amqtt.accounts["otaplanner"],
        FLEET_ARTIFACT_STORE=f"local:{artifacts}", FLEET_ARTIFACT_HTTP_PORT=str(free_port())))
        for n in range(2)]
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
        create = {"action": "create", "version": "2.0.0", "stages": [100], "soak_s": 0, "success_pct": 95,
                  "max_failure_pct": 2, "min_devices_for_gate": 20, "timeout_s": 60}
        r = operator.request(f"{o}/ota/rollouts/r1/command", create)
        assert r.topic.endswith("/accepted"), r.body
        operator.request(f"{o}/ota/rollouts/r1/command", {"action": "pause"})  # 409 once completed
        extra = [(m.topic, m.body) for m in operator.drain(quiet=1.5)
                 if m.topic.endswith(("/accepted", "/rejected"))]
        assert extra == [], "a second replica answered too"
        assert len(list(redis.scan_iter(match="fleet:once:*"))) == 3, "each request claimed in Redis"
    finally:
        operator.close()
        for d in planners:
            d.kill()
