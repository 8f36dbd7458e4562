"""connect_redis: one rule for one Redis or a Redis Cluster; neither connects before its first command."""

from __future__ import annotations

from typing import Any

import pytest
import redis as redis_lib

from daemons.registry import is_cluster
from daemons.runtime.config import Settings
from daemons.runtime.redisclient import LazyCluster, connect_redis
from tests.support import Cluster, free_port


def test_a_cluster_away_at_start_is_a_connection_error_per_command() -> None:
    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    client = connect_redis(Settings(redis_url=url, redis_cluster=True))
    assert isinstance(client, LazyCluster) and is_cluster(client)
    script = client.register_script("return 1")  # no connection needed
    with pytest.raises(redis_lib.exceptions.ConnectionError) as away:
        client.get("k")
    assert "s3cret" not in str(away.value)
    with pytest.raises(redis_lib.exceptions.ConnectionError):
        script(keys=["k"])
    client.close()


def test_one_node_url_reaches_every_master(redis_cluster: Cluster) -> None:
    url = redis_cluster.nodes[2].url  # any node: the client learns the others
    client: Any = connect_redis(Settings(redis_url=url, redis_cluster=True))
    try:
        script = client.register_script("return redis.call('INCR', KEYS[1])")
        keys = [f"k{{{i}}}" for i in range(30)]
        assert [script(keys=[k]) for k in keys] == [1] * 30
        assert len({client.get_node_from_key(k).name for k in keys}) == 3
    finally:
        client.close()
    assert not is_cluster(connect_redis(Settings(redis_url=url)))
