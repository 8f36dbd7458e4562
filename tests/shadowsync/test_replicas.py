"""Two shadow-sync replicas: behind `$share` on mosquitto, and numbered on amqtt (MQTT 3.1.1).

Either way the load splits between both, and every update is applied once: each accepted version
appears once, versions are contiguous per device, and the stored document is the replay of them.
On amqtt, the updates of a stopped replica's devices wait for it in its session: none is lost.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from typing import Any

import paho.mqtt.client as paho
import pytest
import redis as redis_lib

from daemons.registry import device_key
from daemons.runtime.replicas import owner_of
from tests.support import Daemon, Probe, Received, counted, env_for, free_port, start_amqtt

DEVICES, UPDATES = 12, 15


def collect(probe: Probe, n: int, timeout: float = 30.0) -> list[Received]:
    """The next `n` messages, then whatever else comes within a quiet 0.5 s (a double answer)."""
    got: list[Received] = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        assert time.monotonic() < deadline, f"{len(got)} of {n} messages"
        got.extend(probe.drain(quiet=0.2))
    return got + probe.drain(quiet=0.5)


def send_updates(senders: list[Probe], prefix: str, devices: list[str]) -> None:
    """UPDATES reported keys per device, every sender in its own thread, devices interleaved."""
    def run(k: int) -> None:
        for i in range(UPDATES):
            for d in devices[k::len(senders)]:
                senders[k].publish(f"{prefix}/{d}/shadow/update",
                                   {"state": {"reported": {f"k{i}": i}}, "clientToken": f"{d}.{i}"})

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(senders))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def assert_applied_once(answers: list[Received], redis: redis_lib.Redis, prefix: str,
                        devices: list[str]) -> None:
    accepted = [m for m in answers if m.topic.endswith("/update/accepted")]
    assert not [m.body for m in answers if m.topic.endswith("/rejected")]
    tokens = Counter(m.body["clientToken"] for m in accepted)
    assert len(tokens) == DEVICES * UPDATES and set(tokens.values()) == {1}, "each update answered once"
    for d in devices:
        versions = sorted(m.body["version"] for m in accepted if m.topic.startswith(f"{prefix}/{d}/"))
        assert versions == list(range(1, UPDATES + 1)), (d, versions)
        doc = json.loads(redis.hget(device_key("fleet", d), "sh:"))
        assert doc["version"] == UPDATES and doc["state"]["reported"] == {f"k{i}": i for i in range(UPDATES)}


def test_two_replicas_behind_share_split_the_load(daemon, probe, prefixes, redis):
    p, _ = prefixes
    ports = [free_port(), free_port()]
    replicas = [daemon("shadowsync", FLEET_METRICS_PORT=str(port), FLEET_SHARED_SUBSCRIPTIONS="auto")
                for port in ports]
    assert all(d.event("started")["shared"] for d in replicas)
    devices = [f"sh-{n}" for n in range(DEVICES)]
    observer = probe(f"{p}/+/shadow/update/accepted", f"{p}/+/shadow/update/rejected")
    send_updates([probe() for _ in range(4)], p, devices)
    assert_applied_once(collect(observer, DEVICES * UPDATES), redis, p, devices)
    per_replica = [counted(port, "shadowsync", "update", "accepted") for port in ports]
    assert sum(per_replica) == DEVICES * UPDATES and min(per_replica) > 0, per_replica


@pytest.fixture
def amqtt(tmp_path, prefixes):
    p, o = prefixes
    server = start_amqtt(tmp_path / "amqtt", env={"FLEET_TOPIC_PREFIX": p, "FLEET_OPS_PREFIX": o})
    yield server
    server.stop()


def numbered(amqtt: Any, redis_target: Any, prefixes: tuple[str, str], index: int, port: int) -> Daemon:
    return Daemon("shadowsync", env_for(
        redis_target, amqtt, *prefixes, FLEET_MQTT_CLIENT_ID=f"ss-{index}-{prefixes[0]}",
        FLEET_MQTT_USERNAME="shadowsync", FLEET_MQTT_PASSWORD=amqtt.accounts["shadowsync"],
        FLEET_REPLICA_INDEX=str(index), FLEET_REPLICA_COUNT="2", FLEET_METRICS_PORT=str(port),
        FLEET_MQTT_PROTOCOL="3.1.1"))  # no MQTT 5 attempt first: amqtt never answers one


def test_two_numbered_replicas_on_311_apply_and_answer_once(amqtt, redis, redis_target, prefixes):
    p, o = prefixes
    ports = [free_port(), free_port()]
    replicas = [numbered(amqtt, redis_target, prefixes, n, ports[n]) for n in range(2)]
    auth = ("operator", amqtt.accounts["operator"])
    try:
        for d in replicas:
            d.start()
            started = d.event("started")
            assert started["shared"] is False and started["partition"] in ("0/2", "1/2")
        devices = [f"am-{n}" for n in range(DEVICES)]
        assert {owner_of(d, 2) for d in devices} == {0, 1}
        observer = Probe(amqtt.url, protocol=paho.MQTTv311, auth=auth).connect().subscribe(
            f"{p}/+/shadow/+/accepted", f"{p}/+/shadow/+/rejected", f"{p}/+/shadow/update/delta",
            f"{o}/shadow/bulk/+")
        senders = [Probe(amqtt.url, protocol=paho.MQTTv311, auth=auth).connect() for _ in range(2)]
        send_updates(senders, p, devices)
        answers = collect(observer, DEVICES * UPDATES)
        assert_applied_once(answers, redis, p, devices)
        per_replica = [counted(port, "shadowsync", "update", "accepted") for port in ports]
        assert sum(per_replica) == DEVICES * UPDATES and min(per_replica) > 0, per_replica
        assert counted(ports[0], "shadowsync", "message", "other_replica") > 0

        # Tags (a device's topic: its owner applies them), then a bulk update by tag selector.
        north = devices[:5]
        for d in north:
            senders[0].publish(f"{o}/devices/{d}/tags", {"site": "north"}, retain=True)
        deadline = time.monotonic() + 10
        while sum(redis.hget(device_key("fleet", d), "tags") is not None for d in north) < len(north):
            assert time.monotonic() < deadline, "tags not stored"
            time.sleep(0.05)
        senders[0].publish(f"{o}/shadow/bulk", {"selector": {"tags": {"site": "north"}},
                                                "state": {"desired": {"led": "on"}}, "clientToken": "b1"})
        got = collect(observer, 1 + len(north))
        bulk = [m for m in got if m.topic.startswith(f"{o}/shadow/bulk/")]
        assert [(m.topic.rsplit("/", 1)[1], m.body["matched"]) for m in bulk] == [("accepted", len(north))]
        assert sorted(m.topic.split("/")[1] for m in got if m.topic.endswith("/delta")) == sorted(north)

        # A get is answered once, by the device's owner.
        senders[1].publish(f"{p}/{devices[0]}/shadow/get", {"clientToken": "g1"})
        got = collect(observer, 1)
        assert [(m.topic, m.body["version"]) for m in got] == [
            (f"{p}/{devices[0]}/shadow/get/accepted", UPDATES + 1)]

        # A replica down: its devices' updates wait in its persistent session, then are applied once.
        replicas[1].kill()
        for d in devices:
            senders[0].publish(f"{p}/{d}/shadow/update", {"state": {"reported": {"late": 1}},
                                                         "clientToken": f"{d}.late"})
        ours = {n: sorted(f"{d}.late" for d in devices if owner_of(d, 2) == n) for n in (0, 1)}
        assert sorted(m.body["clientToken"] for m in collect(observer, len(ours[0]))) == ours[0]
        replicas[1].start()
        assert sorted(m.body["clientToken"] for m in collect(observer, len(ours[1]))) == ours[1]
        for d in devices:
            assert json.loads(redis.hget(device_key("fleet", d), "sh:"))["state"]["reported"]["late"] == 1
        for s in (observer, *senders):
            s.close()
    finally:
        for d in replicas:
            d.kill()


def test_numbered_replicas_on_a_dollar_prefix_behind_share(daemon, probe, prefixes, redis):
    """mosquitto never deals `$` topics (runtime.mqtt.dealt): each replica gets them all, and the
    device partition and the command claims apply as on a 3.1.1 broker."""
    p, o = f"${prefixes[0]}/things", f"${prefixes[1]}"
    env = {"FLEET_TOPIC_PREFIX": p, "FLEET_OPS_PREFIX": o, "FLEET_REPLICA_COUNT": "2",
           "FLEET_SHARED_SUBSCRIPTIONS": "auto"}
    replicas = [daemon("shadowsync", FLEET_REPLICA_INDEX=str(n), **env) for n in range(2)]
    assert all(d.event("started")["shared"] for d in replicas)
    devices = [f"dl-{n}" for n in range(DEVICES)]
    observer = probe(f"{p}/+/shadow/update/accepted", f"{p}/+/shadow/update/rejected", f"{o}/shadow/bulk/+")
    send_updates([probe() for _ in range(2)], p, devices)
    assert_applied_once(collect(observer, DEVICES * UPDATES), redis, p, devices)
    observer.publish(f"{o}/shadow/bulk", {"selector": {"ids": devices[:3]}, "state": {"desired": {"x": 1}}})
    assert [m.topic.rsplit("/", 1)[1] for m in collect(observer, 1)] == ["accepted"]
