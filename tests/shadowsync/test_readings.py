"""The Redis readings behind fleet_devices_online, fleet_shadow_delta_backlog and the sync lag."""

from __future__ import annotations

from daemons.registry import Registry
from shadowsync.store import ShadowStore
from tests.support import on_both_backends


@on_both_backends
def test_readings(redis) -> None:
    client = redis  # redis.Redis, or redis.RedisCluster on the cluster
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
