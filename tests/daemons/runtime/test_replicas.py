"""Replicas without shared subscriptions: device topics partitioned, commands claimed, indexes leased."""

from __future__ import annotations

import dataclasses
import threading
import time
from contextlib import ExitStack

import pytest
import redis as redis_lib
from redis.backoff import NoBackoff
from redis.retry import Retry

from daemons.protocol.errors import ConfigError, FleetError
from daemons.protocol.messages import Inbound
from daemons.runtime.app import hold_replica_index
from daemons.runtime.config import load_settings
from daemons.runtime.once import ClaimOnce
from daemons.runtime.replicas import Partition, ReplicaLease, Replicas, owner_of
from daemons.runtime.runloop import StopFlag
from tests.support import free_port, start_redis

IDS = [f"dev-{i}" for i in range(200)]


def msg(topic: str, payload: bytes = b"{}") -> Inbound:
    return Inbound(topic, payload, 1, False, None)


def test_each_device_has_exactly_one_owner_and_the_load_splits():
    for count in (2, 3):
        parts = [Partition(i, count, "fl", "ops") for i in range(count)]
        for d in IDS:
            topics = [f"fl/{d}/shadow/update", f"fl/{d}/shadow/name/cfg/get", f"fl/{d}/heartbeat",
                      f"ops/devices/{d}/tags"]
            owners = {i for i, part in enumerate(parts) for t in topics if part.owns(t)}
            assert owners == {owner_of(d, count)}, d
        sizes = [sum(part.owns(f"fl/{d}/status") for d in IDS) for part in parts]
        assert min(sizes) > len(IDS) / count / 2, sizes
    assert owner_of("dev-1", 2) == owner_of("dev-1", 2)  # crc32: the same in every process


def test_topics_about_no_device_are_every_replicas():
    part = Partition(1, 2, "fl", "ops")
    assert part.device_of("ops/shadow/bulk") is None and part.owns("ops/shadow/bulk")
    assert part.device_of("ops/devices/d1/tags") == "d1"


def test_keep_partitions_devices_and_claims_commands(redis):
    filters = ["ops/shadow/bulk"]
    a = Replicas(ClaimOnce(redis, "a", filters), Partition(0, 2, "fl", "ops"))
    b = Replicas(ClaimOnce(redis, "b", filters), Partition(1, 2, "fl", "ops"))
    batch = [msg(f"fl/{d}/shadow/update") for d in IDS[:20]] + [msg("ops/shadow/bulk", b'{"x":1}')]
    kept_a, kept_b = a.keep(batch), b.keep(batch)
    devices_a = {m.topic for m in kept_a if m.topic.startswith("fl/")}
    devices_b = {m.topic for m in kept_b if m.topic.startswith("fl/")}
    assert devices_a.isdisjoint(devices_b) and len(devices_a | devices_b) == 20
    assert [m.topic for m in kept_a + kept_b].count("ops/shadow/bulk") == 1


def test_for_broker_applies_nothing_behind_share(redis):
    settings = load_settings("shadowsync", environ={"FLEET_REPLICA_INDEX": "1", "FLEET_REPLICA_COUNT": "2"})
    assert Replicas.for_broker(settings, redis, "x", ["ops/shadow/bulk"], shared=True) is None
    rules = Replicas.for_broker(settings, redis, "x", [], shared=False)
    assert rules is not None and rules.claim is None
    assert rules.partition == Partition(1, 2, "fleet", "fleetops")
    single = load_settings("shadowsync", environ={})
    assert Replicas.for_broker(single, redis, "x", [], shared=False) is None


def test_behind_share_only_dollar_topics_are_partitioned_and_claimed(redis):
    """mosquitto never deals `$` topics: replicas on a `$` ops prefix each get its commands."""
    settings = load_settings("otaplanner", environ={"FLEET_REPLICA_INDEX": "0", "FLEET_REPLICA_COUNT": "2",
                                                    "FLEET_OPS_PREFIX": "$ops"})
    filters = ["$ops/ota/rollouts/+/command"]
    a = Replicas.for_broker(settings, redis, "a", filters, shared=True)
    b = Replicas.for_broker(dataclasses.replace(settings, replica_index=1), redis, "b", filters, shared=True)
    assert a is not None and b is not None
    theirs = next(d for d in IDS if owner_of(d, 2) == 1)
    dealt_msg = msg(f"fleet/{theirs}/ota/status")  # dealt by the broker: handled by whoever got it
    tags = msg(f"$ops/devices/{theirs}/tags")  # plain: the owner's
    command = msg("$ops/ota/rollouts/r1/command", b'{"action":"pause"}')
    assert a.keep([dealt_msg, tags, command]) == [dealt_msg, command]
    assert b.keep([dealt_msg, tags, command]) == [dealt_msg, tags], "the command went to a's claim"


def test_settings_refuse_an_index_outside_the_count():
    with pytest.raises(ConfigError, match="FLEET_REPLICA_INDEX"):
        load_settings("healthwatch", environ={"FLEET_REPLICA_INDEX": "2", "FLEET_REPLICA_COUNT": "2"})
    with pytest.raises(ConfigError, match="FLEET_REPLICA_COUNT"):
        load_settings("healthwatch", environ={"FLEET_REPLICA_COUNT": "0"})
    numbered = load_settings("healthwatch", environ={"FLEET_REPLICA_INDEX": "1", "FLEET_REPLICA_COUNT": "2"})
    assert numbered.client_id_for("healthwatch").endswith("-1"), "two numbered replicas on one host differ"


def test_lease_refuses_a_second_holder_and_another_count(redis):
    first = ReplicaLease(redis, "shadowsync", "ss-a", 0, 2)
    first.take()
    first.take()  # the refresh
    with pytest.raises(ConfigError, match="index 0 is held by ss-a"):
        ReplicaLease(redis, "shadowsync", "ss-b", 0, 2).take()
    with pytest.raises(ConfigError, match="count 2"):
        ReplicaLease(redis, "shadowsync", "ss-c", 1, 3).take()
    ReplicaLease(redis, "shadowsync", "ss-c", 1, 2).take()
    ReplicaLease(redis, "shadowsync", "ss-a", 0, 2).take()  # restarted with its client id: its index back
    ReplicaLease(redis, "otaplanner", "ota-a", 0, 3).take()  # another daemon: its own leases
    first.release()
    ReplicaLease(redis, "shadowsync", "ss-b", 0, 2).take()


def test_a_lapsed_lease_is_free(redis):
    ReplicaLease(redis, "healthwatch", "hw-a", 0, 2, ttl_s=0.05).take()
    time.sleep(0.1)  # the lease's own expiry, not a synchronisation
    ReplicaLease(redis, "healthwatch", "hw-b", 0, 3).take()


def test_a_second_replica_on_a_taken_index_refuses_to_start(daemon, redis, prefixes):
    first = daemon("healthwatch", FLEET_REPLICA_INDEX="0", FLEET_REPLICA_COUNT="2")
    key = f"fleet:replicas:{{healthwatch}}:{prefixes[0]}"
    assert redis.hget(key, "0").startswith("healthwatch-")
    with pytest.raises(RuntimeError, match="index 0 is held by healthwatch-"):
        daemon("healthwatch", FLEET_REPLICA_INDEX="0", FLEET_REPLICA_COUNT="2")
    first.terminate()
    assert redis.hgetall(key) == {}, "a clean stop gives the index up"
    daemon("healthwatch", FLEET_REPLICA_INDEX="0", FLEET_REPLICA_COUNT="2")


@pytest.mark.parametrize("module", ["shadowsync", "healthwatch"])
def test_a_second_unnumbered_replica_on_plain_subscriptions_refuses_to_start(daemon, module):
    """Plain subscriptions (the default) give each replica every message: a second unnumbered one
    would apply each device message again. Behind `$share` two unnumbered replicas are fine."""
    first = daemon(module)
    assert first.event("started")["shared"] is False
    with pytest.raises(RuntimeError, match="number them"):
        daemon(module)
    shared = [daemon(module, FLEET_SHARED_SUBSCRIPTIONS="auto", FLEET_METRICS_PORT="0") for _ in range(2)]
    assert all(d.event("started")["shared"] for d in shared)


def test_a_replica_whose_index_was_taken_stops(redis):
    """Its hold lapsed (Redis away from it) and another replica took the index: it must not go on."""
    settings = load_settings("shadowsync", environ={"FLEET_REPLICA_INDEX": "1", "FLEET_REPLICA_COUNT": "2",
                                                   "FLEET_MQTT_CLIENT_ID": "ss-old"})
    stop = StopFlag()
    with ExitStack() as resources:
        lost = hold_replica_index(settings, "shadowsync", redis, stop, resources, ttl_s=0.3)
        key = "fleet:replicas:{shadowsync}:fleet"
        owner, count, expires = redis.hget(key, "1").split("|")
        assert (owner, count) == ("ss-old", "2")
        redis.hset(key, "1", f"ss-new|2|{int(expires) + 60_000}")
        assert lost.wait(5) and stop.requested
    assert redis.hget(key, "1").startswith("ss-new|"), "not released: not ours"


def test_a_numbered_replica_waits_for_redis_to_take_its_index(tmp_path):
    """Redis away at start: no index, no start; once Redis answers, the index is taken."""
    port = free_port()
    # No retries inside redis-py (its default backs off for ~4 s per command): ours are the test.
    once = {"socket_connect_timeout": 0.2, "retry": Retry(NoBackoff(), 0)}
    client = redis_lib.Redis(port=port, decode_responses=True, **once)
    settings = load_settings("healthwatch", environ={"FLEET_REPLICA_INDEX": "0", "FLEET_REPLICA_COUNT": "2",
                                                    "FLEET_MQTT_CLIENT_ID": "hw-wait"})
    stop = StopFlag()
    outcome: list[object] = []

    def hold() -> None:
        with ExitStack() as resources:
            try:
                outcome.append(hold_replica_index(settings, "healthwatch", client, stop, resources))
            except FleetError as exc:
                outcome.append(exc)

    waiting = threading.Thread(target=hold)
    waiting.start()
    server = start_redis(tmp_path / "redis", port)
    try:
        waiting.join(15)
        assert outcome and isinstance(outcome[0], threading.Event), outcome
        stop.request()
        stopped = StopFlag()
        stopped.request()
        away = redis_lib.Redis(port=free_port(), **once)
        with ExitStack() as resources, pytest.raises(FleetError, match="stopped while waiting"):
            hold_replica_index(settings, "healthwatch", away, stopped, resources)
    finally:
        client.close()
        server.stop()
