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

import pytest

from daemons.protocol.errors import ConfigError
from daemons.runtime.config import load_settings
from daemons.runtime.mqtt import subscription_filter
from daemons.runtime.prefixes import probe_prefix
from tests.support import ROOT, Probe, Server, env_for, free_port, iter_unique, start_amqtt

_names = iter_unique("d")
MODULES = ["shadowsync", "otaplanner", "healthwatch", "daemons.api"]
LINK_KEY = "a5" * 32


@pytest.fixture
def prefixes() -> tuple[str, str]:
    """Both prefixes begin with `$`; unique per test so retained messages never leak."""
    name = next(_names)
    return f"$fl{name}/things", f"$ops{name}"


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
                   {"FLEET_SHARED_SUBSCRIPTIONS": "auto"}]


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


# -- amqtt (the embedded broker: authentication and an ACL that follows the prefixes) ---------------

ACCOUNTS = {"shadowsync": "shadowsync", "otaplanner": "otaplanner", "healthwatch": "healthwatch",
            "daemons.api": "api"}


def _amqtt_for(tmp_path, p: str, o: str):
    """One broker whose ACL grants its accounts these prefixes: what is refused is the `$`, not the ACL."""
    return start_amqtt(tmp_path / "amqtt", env={"FLEET_TOPIC_PREFIX": p, "FLEET_OPS_PREFIX": o})


@pytest.fixture(scope="module")
def dollar_amqtt(tmp_path_factory):
    """One broker for the start refusals, its ACL granting both `$` prefixes. A daemon checks only the
    prefix that begins with `$` before it connects; on amqtt only the client that published goes mute."""
    name = next(_names)
    server = _amqtt_for(tmp_path_factory.mktemp("dollar"), f"$fl{name}", f"$ops{name}")
    yield server, name
    server.stop()


@pytest.mark.parametrize("dollar", ["FLEET_TOPIC_PREFIX", "FLEET_OPS_PREFIX"])
def test_amqtt_refuses_dollar_prefixes_at_start(dollar, dollar_amqtt, redis_server: Server, tmp_path):
    """Every daemon refuses to start, naming the variable. They run side by side: each waits out its
    probe's 5 s for a message amqtt never delivers."""
    amqtt, name = dollar_amqtt
    p = f"$fl{name}" if dollar == "FLEET_TOPIC_PREFIX" else f"fl{name}"
    o = f"$ops{name}" if dollar == "FLEET_OPS_PREFIX" else f"ops{name}"
    runs = {}
    started = time.monotonic()
    for module in MODULES:
        env = env_for(redis_server, amqtt, p, o, FLEET_OTA_MASTER_KEY="11" * 32,
                      FLEET_ARTIFACT_STORE=f"local:{tmp_path}", FLEET_ARTIFACT_HTTP_PORT="0",
                      FLEET_API_PORT=str(free_port()), FLEET_DEBUG_LINK_KEY=LINK_KEY,
                      FLEET_MQTT_USERNAME=ACCOUNTS[module],
                      FLEET_MQTT_PASSWORD=amqtt.accounts[ACCOUNTS[module]],
                      FLEET_MQTT_CLIENT_ID=f"{module}-{dollar}")
        runs[module] = subprocess.Popen([sys.executable, "-m", module], env={**os.environ, **env}, cwd=ROOT,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for module, proc in runs.items():
            _, stderr = proc.communicate(timeout=60)
            assert proc.returncode != 0, (module, stderr)
            assert dollar in stderr, (module, stderr)
            assert "does not carry topics that begin with '$'" in stderr, (module, stderr)
        assert time.monotonic() - started < 30
    finally:
        for proc in runs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_amqtt_probe_the_simulator_runs_refuses_a_dollar_prefix(tmp_path):
    """`probe_prefix`, which the simulator runs on its --prefix (here with the operator's account, whose
    ACL grants the `$` ops prefix: the broker itself drops the message)."""
    o = f"$ops{next(_names)}"
    amqtt = _amqtt_for(tmp_path, f"fl{next(_names)}", o)
    try:
        with pytest.raises(ConfigError, match=r"--prefix .*does not carry topics that begin with '\$'"):
            # A short wait is enough: the answer looked for is that nothing comes.
            probe_prefix(amqtt.url, o, "--prefix", "operator", amqtt.accounts["operator"], timeout=1.0)
    finally:
        amqtt.stop()


def test_the_probe_leaves_bad_credentials_to_the_session_and_names_an_acl_refusal(tmp_path):
    o = f"$ops{next(_names)}"
    amqtt = _amqtt_for(tmp_path, f"fl{next(_names)}", o)
    try:
        probe_prefix(amqtt.url, o, "--prefix", "operator", "wrong")  # CONNACK refused: the session's to say
        with pytest.raises(ConfigError, match=r"FLEET_TOPIC_PREFIX .*refused a subscription"):
            probe_prefix(amqtt.url, "$elsewhere", "FLEET_TOPIC_PREFIX", "operator",
                         amqtt.accounts["operator"])
    finally:
        amqtt.stop()
