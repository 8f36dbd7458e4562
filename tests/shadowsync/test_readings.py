"""The Redis readings behind fleet_devices_online, fleet_shadow_delta_backlog and the sync lag."""

from __future__ import annotations

import pytest
import redis as redis_lib

from daemons.cli.localstack import start_redis_cluster
from daemons.registry import Registry
from shadowsync.store import ShadowStore


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = start_redis_cluster(tmp_path_factory.mktemp("cluster"))
    yield c
    c.stop()


def check_readings(client) -> None:
    store, registry = ShadowStore(client), Registry(client)
    pipe = client.pipeline(transaction=False)
    for n in range(6):
        pipe.sadd("fleet:{idx}:all", f"d{n}")
    for n in range(4):
        registry.set_connected(pipe, f"d{n}", "1")
    registry.set_connected(pipe, "d3", "0")
    store.mark_delta(pipe, "d0", True, 100.0)
    store.mark_delta(pipe, "d0", True, 200.0)  # still pending: the first time stays
    store.mark_delta(pipe, "d1", True, 150.0)
    store.mark_delta(pipe, "d4", True, 50.0)   # offline: waits for its next connection
    store.mark_delta(pipe, "d2", True, 10.0)
    store.mark_delta(pipe, "d2", False, 300.0)  # reported: off the backlog
    pipe.execute()
    assert registry.counts() == (6, 3)
    assert store.backlog(registry.online_index) == (3, 2, 100.0)


def test_readings(redis):
    check_readings(redis)


def test_readings_on_redis_cluster(cluster):
    client = redis_lib.RedisCluster.from_url(cluster.url, decode_responses=True)
    try:
        check_readings(client)
    finally:
        client.close()
