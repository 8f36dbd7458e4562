"""shadow-sync on amqtt, the embedded broker: MQTT 3.1.1 only, no shared subscriptions."""

from __future__ import annotations

import paho.mqtt.client as paho
import pytest

from daemons.protocol.keys import device_password, parse_hex_key
from tests.support import Daemon, Probe, env_for, start_amqtt


@pytest.fixture
def amqtt(tmp_path, prefixes):
    # The embedded broker's ACL follows its prefixes: one broker per test's prefixes.
    p, o = prefixes
    server = start_amqtt(tmp_path / "amqtt", env={"FLEET_TOPIC_PREFIX": p, "FLEET_OPS_PREFIX": o})
    yield server
    server.stop()


def test_shadowsync_falls_back_to_311_on_amqtt(amqtt, redis, redis_server, prefixes):
    p, o = prefixes
    sync = Daemon("shadowsync", env_for(redis_server, amqtt, p, o, FLEET_MQTT_CLIENT_ID="ss-amqtt",
                                        FLEET_MQTT_USERNAME="shadowsync",
                                        FLEET_MQTT_PASSWORD=amqtt.accounts["shadowsync"])).start()
    try:
        started = sync.event("started")
        assert started["protocol"] == 4 and started["shared"] is False
        a1 = ("a1", device_password(parse_hex_key(amqtt.secret), "a1"))
        dev = Probe(amqtt.url, protocol=paho.MQTTv311, auth=a1).connect().subscribe(f"{p}/a1/shadow/#")
        r = dev.request(f"{p}/a1/shadow/update", {"state": {"desired": {"x": 1}}, "clientToken": "z"})
        assert r.body["version"] == 1 and r.body["clientToken"] == "z"
        assert dev.wait(f"{p}/a1/shadow/update/delta").body["state"] == {"x": 1}
        dev.close()
    finally:
        sync.kill()
