"""`$` topic prefixes (AWS IoT's `$aws/things`) under every broker setting (issue 14, part 1).

mosquitto 2.0.11 carries `$` topics to plain subscriptions only; amqtt 0.12 drops them (and
everything the client publishes after). Every daemon and the simulator either work (default configuration,
mosquitto) or refuse to start naming the variable (amqtt, or shared subscriptions forced on).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import paho.mqtt.client as paho
import pytest

from daemons.protocol.errors import ConfigError
from daemons.runtime.config import load_settings
from daemons.runtime.mqtt import subscription_filter
from tests.support import ROOT, Probe, Server, env_for, free_port, iter_unique, start_amqtt

_names = iter_unique("d")
MODULES = ["shadowsync", "otaplanner", "healthwatch", "daemons.api"]
LINK_KEY = "a5" * 32


@pytest.fixture
def prefixes() -> tuple[str, str]:
    """Both prefixes begin with `$`; unique per test so retained messages never leak."""
    name = next(_names)
    return f"$fl{name}/things", f"$ops{name}"


@pytest.fixture(scope="module")
def amqtt(tmp_path_factory: pytest.TempPathFactory):
    server = start_amqtt(tmp_path_factory.mktemp("amqtt"))
    yield server
    server.stop()


def test_subscription_filter_never_shares_a_dollar_topic():
    assert subscription_filter("fleet/+/status", "shadowsync", True) == "$share/shadowsync/fleet/+/status"
    assert subscription_filter("$aws/things/+/shadow/get", "shadowsync", True) == "$aws/things/+/shadow/get"
    assert subscription_filter("fleet/+/status", "shadowsync", False) == "fleet/+/status"


@pytest.mark.parametrize("name", ["FLEET_TOPIC_PREFIX", "FLEET_OPS_PREFIX"])
def test_shared_subscriptions_forced_on_refuse_a_dollar_prefix(name):
    env = {"FLEET_SHARED_SUBSCRIPTIONS": "on", name: "$aws/things"}
    with pytest.raises(ConfigError, match=rf"FLEET_SHARED_SUBSCRIPTIONS.*{name}"):
        load_settings("shadowsync", None, environ=env)
    assert load_settings("shadowsync", None, environ={**env, "FLEET_SHARED_SUBSCRIPTIONS": "auto"})


def test_mosquitto_shares_no_dollar_topic(broker, prefixes):
    """The broker fact the rule rests on: `$share/g/$x/...` is granted and silent on mosquitto 2.0."""
    p, _ = prefixes
    sub = Probe(broker.url).connect().subscribe(f"$share/g/{p}/+/x", f"{p}/+/y", "$share/g/plain/+/x")
    pub = Probe(broker.url).connect()
    try:
        pub.publish(f"{p}/d1/x", {"n": 1})
        pub.publish("plain/d1/x", {"n": 2})
        pub.publish(f"{p}/d1/y", {"n": 3})  # plain subscription, after the shared one in order
        assert sub.wait("plain/d1/x").body == {"n": 2}
        assert sub.wait(f"{p}/d1/y").body == {"n": 3}
        assert [m.topic for m in sub.drain(0.2)] == [], "a $ topic came through $share"
    finally:
        sub.close()
        pub.close()


# -- every daemon, default configuration, mosquitto --------------------------------------------------


BROKER_SETTINGS = [{}, {"FLEET_MQTT_PROTOCOL": "5"}, {"FLEET_MQTT_PROTOCOL": "3.1.1"},
                   {"FLEET_SHARED_SUBSCRIPTIONS": "off"}]


@pytest.mark.parametrize("setting", BROKER_SETTINGS)
def test_shadowsync_on_dollar_prefixes(daemon, probe, prefixes, setting):
    """Every broker setting but shared `on` (refused above): MQTT 5 or 3.1.1, shared auto or off."""
    p, _ = prefixes
    daemon("shadowsync", **setting)
    dev = probe(f"{p}/dd-1/shadow/#")
    assert dev.request(f"{p}/dd-1/shadow/get", {}).body["code"] == 404
    r = dev.request(f"{p}/dd-1/shadow/update", {"state": {"desired": {"led": 1}}, "clientToken": "t1"})
    assert r.topic.endswith("/accepted") and r.body["version"] == 1 and r.body["clientToken"] == "t1"
    assert dev.wait(f"{p}/dd-1/shadow/update/delta").body["state"] == {"led": 1}


def test_healthwatch_on_dollar_prefixes(daemon, probe, prefixes):
    p, _ = prefixes
    daemon("healthwatch")
    dev = probe(f"{p}/+/health")
    dev.publish(f"{p}/hw-1/heartbeat", {"ts": 1_700_000_000, "seq": 1, "uptime_s": 50, "fw": "1.0.0"})
    assert dev.wait(f"{p}/hw-1/health").body["status"] == "ok"


def test_otaplanner_on_dollar_prefixes(daemon, probe, prefixes, tmp_path):
    _, o = prefixes
    daemon("otaplanner", FLEET_OTA_MASTER_KEY="11" * 32, FLEET_ARTIFACT_STORE=f"local:{tmp_path}",
           FLEET_ARTIFACT_HTTP_PORT="0")
    ops = probe(f"{o}/ota/releases/register/+")
    r = ops.request(f"{o}/ota/releases/register", {"version": "1.2.3", "clientToken": "r1"})
    assert r.topic.endswith("/rejected") and r.body["code"] == 400 and r.body["clientToken"] == "r1"


def test_api_debug_door_on_dollar_prefixes(daemon, probe, prefixes):
    _, o = prefixes
    daemon("shadowsync")  # fleet-api opens a session with a shadow update and waits for its answer
    daemon("daemons.api", FLEET_API_PORT=str(free_port()), FLEET_DEBUG_LINK_KEY=LINK_KEY)
    ops = probe(f"{o}/debug/open/+")
    r = ops.request(f"{o}/debug/open", {"device_id": "dbg-1", "ttl_s": 60, "operator": "alice"})
    assert r.topic == f"{o}/debug/open/accepted", r.body


def test_simulator_on_a_dollar_prefix(broker, probe, prefixes):
    p, _ = prefixes
    watch = probe(f"{p}/+/heartbeat")
    sim = subprocess.Popen([sys.executable, "-m", "daemons.sim", "--mqtt-url", broker.url,
                            "--prefix", p, "--devices", "2", "--interval", "0.5"], cwd=ROOT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert watch.wait(f"{p}/sim-00000/heartbeat", timeout=20).body["fw"] == "1.0.0"
    finally:
        sim.terminate()
        sim.wait(10)


# -- amqtt: refused at start, naming the variable --------------------------------------------------


def _refused(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    started = time.monotonic()
    done = subprocess.run(argv, env={**os.environ, **env}, cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert time.monotonic() - started < 30
    return done.returncode, done.stderr


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("dollar", ["FLEET_TOPIC_PREFIX", "FLEET_OPS_PREFIX"])
def test_amqtt_refuses_dollar_prefixes_at_start(module, dollar, amqtt: Server, redis_server: Server,
                                                tmp_path):
    name = next(_names)
    p = f"$fl{name}" if dollar == "FLEET_TOPIC_PREFIX" else f"fl{name}"
    o = f"$ops{name}" if dollar == "FLEET_OPS_PREFIX" else f"ops{name}"
    env = env_for(redis_server, amqtt, p, o, FLEET_OTA_MASTER_KEY="11" * 32,
                  FLEET_ARTIFACT_STORE=f"local:{tmp_path}", FLEET_ARTIFACT_HTTP_PORT="0",
                  FLEET_API_PORT=str(free_port()), FLEET_DEBUG_LINK_KEY=LINK_KEY)
    code, err = _refused([sys.executable, "-m", module], env)
    assert code != 0 and dollar in err and "does not carry topics that begin with '$'" in err, err


def test_amqtt_refuses_the_simulator_on_a_dollar_prefix(amqtt: Server):
    code, err = _refused([sys.executable, "-m", "daemons.sim", "--mqtt-url", amqtt.url,
                          "--prefix", "$aws/things", "--devices", "1"], {})
    assert code == 2 and "--prefix" in err and "does not carry" in err, err


def test_amqtt_still_serves_plain_prefixes(amqtt: Server):
    """The probe runs only for `$` prefixes: a plain one on amqtt is not probed, and works."""
    operator = ("operator", amqtt.accounts["operator"])  # the embedded broker always authenticates
    dev = Probe(amqtt.url, protocol=paho.MQTTv311, auth=operator).connect().subscribe("fleetops/plain/+/x")
    try:
        dev.publish("fleetops/plain/d/x", {"ok": True})
        assert dev.wait("fleetops/plain/d/x").body == {"ok": True}
    finally:
        dev.close()
