"""The Redis client of every daemon, the API and fleetctl: one rule for one Redis or a Redis Cluster.

`FLEET_REDIS_CLUSTER` (Settings.redis_cluster) on: a Redis Cluster client, `FLEET_REDIS_URL` naming
any one node (the client learns the others); off: a plain client on that URL. The stores tell the
two apart with daemons.registry.is_cluster.
"""

from __future__ import annotations

import threading
from typing import Any

import redis
from redis.commands.core import Script

from daemons.runtime.config import Settings


def connect_redis(settings: Settings) -> Any:
    """A `redis.Redis` on `redis_url`, or a `LazyCluster` when `redis_cluster`; replies decoded as str.
    Neither connects before its first command."""
    if settings.redis_cluster:
        return LazyCluster(settings.redis_url)
    return redis.Redis.from_url(settings.redis_url, decode_responses=True)


class LazyCluster:
    """A `redis.RedisCluster` made at its first command, every attribute forwarded to it.

    redis-py's RedisCluster asks a node for the slot map in its constructor and raises when none
    answers, where redis.Redis connects at its first command. Made lazily, a daemon or the API starts
    while the cluster is away and behaves as with one Redis away: each command raises
    `redis.ConnectionError` (the API answers 503, a daemon keeps its batch and retries) until a node
    answers. Scripts registered before that are hashed from their bytes, which needs no connection.
    """

    is_cluster = True  # daemons.registry.is_cluster

    def __init__(self, url: str) -> None:
        self._url = url
        self._client: redis.RedisCluster[str] | None = None
        self._lock = threading.Lock()

    def client(self) -> redis.RedisCluster[str]:
        """The cluster client, made now if not yet. Raises redis.ConnectionError while no node answers."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    try:
                        self._client = redis.RedisCluster.from_url(self._url, decode_responses=True)
                    except (redis.exceptions.RedisClusterException, redis.exceptions.ConnectionError,
                            redis.exceptions.TimeoutError) as exc:
                        # Not the URL: it may carry a password.
                        raise redis.exceptions.ConnectionError(f"Redis Cluster: {exc}") from exc
        return self._client

    def register_script(self, script: str) -> Script:
        return Script(self, script.encode())  # a proxy: commands go through it

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # own state not set yet (copy, pickle): never the client's
            raise AttributeError(name)
        return getattr(self.client(), name)
