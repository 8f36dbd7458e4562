"""Two healthwatch replicas: behind `$share`, heartbeats of one device dealt to both lose nothing;
numbered on amqtt (MQTT 3.1.1, every replica gets every heartbeat), each heartbeat is scored once."""

from __future__ import annotations

import json
import time

import paho.mqtt.client as paho
import pytest
import redis as redis_lib

from daemons.cli.localstack import free_port
from daemons.protocol.keys import device_password, parse_hex_key
from healthwatch.device import DeviceState
from healthwatch.store import DeviceWrite, HealthStore
from tests.support import Daemon, Probe, counted, env_for, start_amqtt

T0 = 1_700_000_000
# Fewer heartbeats per device than healthwatch's seq window (64): one further behind than that
# counts as a restarted device, which a burst of 150 in flight at once could fake.
DEVICES, BEATS = 8, 60


def beat(i: int) -> dict[str, object]:
    return {"ts": T0 + 60 * i, "seq": i, "uptime_s": 600 + 60 * i, "fw": "1.0.0", "slot": "ota_0",
            "hw": "esp32", "temp_c": 31.5, "rssi_dbm": -60, "heap_free": 150_000}


def all_scored(st: DeviceState | None, beats: int) -> bool:
    """Heartbeats 0..beats-1 all scored: each as the newest or, arriving after a newer one, in its
    bit of the seq window. A write lost to another replica leaves a hole (or the newest seq behind)."""
    full = (1 << beats) - 1
    return st is not None and st.seq == beats - 1 and st.win & full == full


def state(r: redis_lib.Redis, device_id: str) -> DeviceState | None:
    raw = r.hget(HealthStore(r).key(device_id), "st")
    return DeviceState.from_json(json.loads(raw)) if raw else None


def test_two_replicas_lose_no_heartbeat(daemon, probe, prefixes, redis):
    p, _ = prefixes
    replicas = [daemon("healthwatch", FLEET_METRICS_PORT=str(free_port()), FLEET_SHARED_SUBSCRIPTIONS="auto")
                for _ in range(2)]
    assert all(d.event("started")["shared"] for d in replicas)
    senders = [probe() for _ in range(DEVICES)]
    # All in flight at once, so both replicas hold heartbeats of the same devices at the same time.
    for i in range(BEATS):
        for n, sender in enumerate(senders):
            sender.client.publish(f"{p}/rep-{n}/heartbeat", json.dumps(beat(i)), qos=1)
    deadline = time.monotonic() + 60
    while not all(all_scored(state(redis, f"rep-{n}"), BEATS) for n in range(DEVICES)):
        assert time.monotonic() < deadline, [(s.seq, bin(s.win)) if s else None
                                             for s in (state(redis, f"rep-{n}") for n in range(DEVICES))]
        time.sleep(0.1)
    counts = {k: int(v) for k, v in redis.hgetall(HealthStore(redis).counts_key).items()}
    assert sum(v for k, v in counts.items() if k.startswith("status:")) == DEVICES, counts
    revs = [int(redis.hget(HealthStore(redis).key(f"rep-{n}"), "rev")) for n in range(DEVICES)]
    assert all(rev <= BEATS for rev in revs), revs  # one write per heartbeat at most


@pytest.fixture
def amqtt(tmp_path, prefixes):
    p, o = prefixes
    server = start_amqtt(tmp_path / "amqtt", env={"FLEET_TOPIC_PREFIX": p, "FLEET_OPS_PREFIX": o})
    yield server
    server.stop()


def test_two_numbered_replicas_on_311_score_each_heartbeat_once(amqtt, redis, redis_target, prefixes):
    p, o = prefixes
    devices, beats = 6, 8
    ports = [free_port(), free_port()]
    replicas = [Daemon("healthwatch", env_for(
        redis_target, amqtt, p, o, FLEET_MQTT_CLIENT_ID=f"hw-{n}-{p}", FLEET_MQTT_USERNAME="healthwatch",
        FLEET_MQTT_PASSWORD=amqtt.accounts["healthwatch"], FLEET_REPLICA_INDEX=str(n),
        FLEET_REPLICA_COUNT="2", FLEET_METRICS_PORT=str(ports[n]), FLEET_MQTT_PROTOCOL="3.1.1"))
        for n in range(2)]
    senders: list[Probe] = []
    try:
        for d in replicas:
            d.start()
        for n in range(devices):
            name = f"rp-{n}"
            auth = (name, device_password(parse_hex_key(amqtt.secret), name))
            senders.append(Probe(amqtt.url, protocol=paho.MQTTv311, auth=auth).connect())
        for i in range(beats):
            for n, sender in enumerate(senders):
                sender.publish(f"{p}/rp-{n}/heartbeat", beat(i))
        deadline = time.monotonic() + 30
        while not all(all_scored(state(redis, f"rp-{n}"), beats) for n in range(devices)):
            assert time.monotonic() < deadline, "heartbeats not all scored"
            time.sleep(0.1)
        ok = [counted(port, "healthwatch", "heartbeat", "ok") for port in ports]
        assert sum(ok) == devices * beats and min(ok) > 0, ok
        assert [counted(port, "healthwatch", "heartbeat", "duplicate") for port in ports] == [0, 0]
    finally:
        for s in senders:
            s.close()
        for d in replicas:
            d.kill()


def test_a_write_from_a_stale_read_is_refused(redis):
    store = HealthStore(redis)
    (st, rev), = store.read(["cas-1"]).values()
    assert st is None and rev == ""
    first = DeviceWrite("cas-1", DeviceState(n=1, wall=1.0), "c|1", None, {"status:ok": 1}, rev)
    stale = DeviceWrite("cas-1", DeviceState(n=1, wall=1.0), "c|1", None, {"status:ok": 1}, rev)
    assert store.write([first]) == set()
    assert store.write([stale]) == {"cas-1"}, "the second writer read before the first wrote"
    assert redis.hget(store.counts_key, "status:ok") == "1"
    (st, rev), = store.read(["cas-1"]).values()
    assert st is not None and st.n == 1 and rev == "1"


def test_a_lost_offline_claim_goes_back_on_the_timer(redis):
    """The offline timer claimed a device (ZREM) while a heartbeat was being written elsewhere."""
    store = HealthStore(redis)
    assert store.write([DeviceWrite("late-1", DeviceState(n=3, wall=50.0), "c|1", None, {}, "")]) == set()
    assert store.overdue(100.0) == ["late-1"]
    store.requeue(["late-1"])
    assert redis.zscore(store.seen_key, "late-1") == 50.0
