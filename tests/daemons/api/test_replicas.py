"""Two fleet-api processes on one Redis and amqtt (MQTT 3.1.1: each gets every message): the MQTT
debug door answers each request once and each health alert is stored once."""

from __future__ import annotations

import json
import secrets
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import paho.mqtt.client as paho
import pytest

from daemons.api.audit import Audit
from daemons.api.auth import TokenStore
from daemons.api.routes_ops import ALERTS_KEY
from tests.support import Daemon, Probe, env_for, free_port, start_amqtt, wait_port


@pytest.fixture
def amqtt(tmp_path, prefixes):
    p, o = prefixes
    server = start_amqtt(tmp_path / "amqtt", env={"FLEET_TOPIC_PREFIX": p, "FLEET_OPS_PREFIX": o})
    yield server
    server.stop()


def test_two_apis_answer_the_door_and_store_alerts_once(amqtt, redis, redis_target, prefixes, tmp_path):
    p, o = prefixes
    env = env_for(redis_target, amqtt, p, o, FLEET_OTA_MASTER_KEY=secrets.token_hex(32),
                  FLEET_ARTIFACT_STORE=f"local:{tmp_path / 'artifacts'}")
    sync = Daemon("shadowsync", {**env, "FLEET_MQTT_CLIENT_ID": f"ss-{p}",
                                 "FLEET_MQTT_USERNAME": "shadowsync",
                                 "FLEET_MQTT_PASSWORD": amqtt.accounts["shadowsync"],
                                 "FLEET_MQTT_PROTOCOL": "3.1.1"})
    ports = [free_port(), free_port()]
    apis = [Daemon("daemons.api", {**env, "FLEET_API_PORT": str(port), "FLEET_MQTT_USERNAME": "api",
                                   "FLEET_MQTT_PASSWORD": amqtt.accounts["api"]}) for port in ports]
    operator = Probe(amqtt.url, protocol=paho.MQTTv311, auth=("operator", amqtt.accounts["operator"]))
    try:
        with ThreadPoolExecutor() as pool:  # started side by side: each waits for its READY=1
            list(pool.map(Daemon.start, (sync, *apis)))
        for port in ports:
            wait_port(port)
        operator.connect().subscribe(f"{o}/debug/open/+")
        for n in range(3):
            r = operator.request(f"{o}/debug/open", {"device_id": f"dbg-{n}", "ttl_s": 60, "operator": "me",
                                                      "clientToken": f"t{n}"})
            assert r.topic.endswith("/accepted") and r.body["clientToken"] == f"t{n}", r.body
        bad = operator.request(f"{o}/debug/open", {"device_id": "a/b", "ttl_s": 60, "operator": "me"})
        assert bad.topic.endswith("/rejected")
        alerts = [{"device_id": f"al-{n}", "status": "critical", "previous": "ok", "score": 10,
                   "reasons": [], "ts": 1_700_000_000 + n} for n in range(4)]
        for alert in alerts:
            operator.publish(f"{o}/health/alerts", alert)
        deadline = time.monotonic() + 10
        while redis.llen(ALERTS_KEY) < len(alerts):
            assert time.monotonic() < deadline, "alerts not stored"
            time.sleep(0.05)
        assert [m.topic for m in operator.drain(quiet=1.0)] == [], "a second API answered the door too"
        assert sorted(json.loads(a)["device_id"] for a in redis.lrange(ALERTS_KEY, 0, -1)) == [
            a["device_id"] for a in alerts], "each alert stored once"
        opened = [e for e in Audit(redis, None, o).page(0, 100)[0] if e["action"] == "debug.open"]
        assert sorted(e["target"] for e in opened) == ["dbg-0", "dbg-1", "dbg-2"]
        # Both serve the same sessions over HTTP (one Redis).
        token = TokenStore(redis).create("test-viewer", "viewer")["token"]
        for port in ports:
            got = httpx.get(f"http://127.0.0.1:{port}/api/v1/health/alerts",
                            headers={"Authorization": f"Bearer {token}"}, timeout=10).json()
            assert got["total"] == len(alerts), got
    finally:
        operator.close()
        for d in (*apis, sync):
            d.kill()
