"""daemons.registry on one Redis and on a 3-master Redis Cluster: scripts pipelined per node,
multi-key commands and MULTI on one slot, selectors resolved from the `{idx}` indexes."""

from __future__ import annotations

from typing import Any

import pytest
import redis as redis_lib

from daemons.protocol.selector import parse_selector
from daemons.registry import DeviceInfo, Registry, device_key, is_cluster, run_scripts, slot_pipeline
from tests.support import on_both_backends, on_cluster

# Adds ARGV[1] to the device hash's `sum` and answers the new sum.
ADD = "return redis.call('HINCRBY', KEYS[1], 'sum', ARGV[1])"

DEVICES = [f"s{i}" for i in range(40)]  # spread over the slots of every node


@on_both_backends
def test_scripts_run_per_node_and_answer_in_call_order(redis: Any, backend: str) -> None:
    assert is_cluster(redis) == (backend == "cluster")
    script = redis.register_script(ADD)
    calls = [([device_key("fleet", d)], [i]) for i, d in enumerate(DEVICES)]
    queued: list[str] = []

    def extra(pipe: Any) -> None:
        queued.append("x")
        pipe.set("k", 1)

    assert run_scripts(redis, script, calls, extra) == list(range(len(DEVICES)))
    assert run_scripts(redis, script, calls) == [2 * i for i in range(len(DEVICES))]
    assert queued == ["x"] and redis.get("k") == "1"
    assert run_scripts(redis, script, []) == []
    if backend == "cluster":  # the devices did land on every master
        nodes = {redis.get_node_from_key(device_key("fleet", d)).name for d in DEVICES}
        assert len(nodes) == 3


@on_both_backends
def test_multi_key_commands_in_one_slot_pipeline(redis: Any) -> None:
    redis.sadd("fleet:{idx}:a", "1", "2")
    redis.sadd("fleet:{idx}:b", "2", "3")
    pipe = slot_pipeline(redis, "fleet:{idx}:u", transaction=True)
    pipe.sunionstore("fleet:{idx}:u", ["fleet:{idx}:a", "fleet:{idx}:b"])
    pipe.sdiffstore("fleet:{idx}:d", ["fleet:{idx}:a", "fleet:{idx}:b"])
    pipe.delete("fleet:{idx}:a", "fleet:{idx}:b")
    assert pipe.execute() == [3, 1, 2]
    assert redis.smembers("fleet:{idx}:u") == {"1", "2", "3"} and redis.smembers("fleet:{idx}:d") == {"1"}


@on_both_backends
def test_selectors_resolve_from_the_indexes(redis: Any) -> None:
    registry = Registry(redis)
    pipe = redis.pipeline(transaction=False)
    for i, d in enumerate(DEVICES):
        info = DeviceInfo(d)
        registry.observe(pipe, info, "c3" if i % 2 else "s3", f"1.{i % 3}.0")
        registry.set_tags(pipe, info, {"site": "lab" if i % 4 == 0 else "field"})
    pipe.execute()
    assert registry.select(parse_selector({"hw": "c3", "fw": "1.1.*"})) == sorted(
        d for i, d in enumerate(DEVICES) if i % 2 and i % 3 == 1)
    lab = parse_selector({"tags": {"site": "lab"}, "ids": ["s0", "s1", "s4"]})
    assert registry.select(lab) == ["s0", "s4"]
    assert len(registry.select(parse_selector({}))) == len(DEVICES)


@on_cluster
def test_a_moved_slot_refreshes_the_map_and_asks_for_a_retry(redis: Any) -> None:
    key = device_key("fleet", "moving")
    script = redis.register_script(ADD)
    assert run_scripts(redis, script, [([key], [1])]) == [1]
    redis.delete(key)  # an empty slot can change owner at once (no key to migrate)
    slot, old = redis.keyslot(key), redis.get_node_from_key(key)
    new = next(n for n in redis.get_primaries() if n.name != old.name)
    new_id = redis.get_redis_connection(new).execute_command("CLUSTER", "MYID")
    for node in [new, *(n for n in redis.get_primaries() if n.name != new.name)]:
        redis.get_redis_connection(node).execute_command("CLUSTER", "SETSLOT", slot, "NODE", new_id)
    with pytest.raises(redis_lib.exceptions.TryAgainError):  # sent by the old map: MOVED
        run_scripts(redis, script, [([key], [2])])
    assert redis.get_node_from_key(key).name == new.name  # the map is fresh: the retry lands
    assert run_scripts(redis, script, [([key], [2])]) == [2]
