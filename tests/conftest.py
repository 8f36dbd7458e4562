"""Shared fixtures: real redis-server and mosquitto on free ports, daemons as processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from daemons.cli.localstack import Cluster, start_redis_cluster
from tests.support import (
    Daemon,
    Probe,
    Server,
    default_backend,
    env_for,
    iter_unique,
    redis_client,
    start_mosquitto,
    start_redis,
)

_names = iter_unique("t")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_mosquitto(tmp_path_factory.mktemp("mosquitto"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A real Redis Cluster of 3 masters (no replicas) on free ports, started once when first used."""
    cluster = start_redis_cluster(tmp_path_factory.mktemp("cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """The Redis of this test's `redis` and `daemon` fixtures: "single" (redis-server) unless the
    test is marked `tests.support.on_both_backends`, which runs it on "cluster" too.
    TEST_REDIS_BACKEND=cluster makes "cluster" the default, for a run of whole directories on it."""
    return str(getattr(request, "param", default_backend()))


@pytest.fixture
def redis_target(backend: str, request: pytest.FixtureRequest) -> Server | Cluster:
    """The redis-server or the Redis Cluster behind this test (see `backend`)."""
    return request.getfixturevalue("redis_cluster" if backend == "cluster" else "redis_server")  # type: ignore[no-any-return]


@pytest.fixture
def redis(redis_target: Server | Cluster) -> Iterator[Any]:
    """A client of the test's Redis (redis.Redis, or a cluster client on "cluster"), emptied first."""
    client = redis_client(redis_target)
    client.flushall()  # on a cluster: on every master (redis-py sends FLUSHALL to all primaries)
    yield client
    client.close()


@pytest.fixture
def prefixes() -> tuple[str, str]:
    """Topic prefixes unique to one test, so retained messages never leak between tests."""
    name = next(_names)
    return f"fl{name}", f"ops{name}"


@pytest.fixture
def probe(broker: Server) -> Iterator[Callable[..., Probe]]:
    made: list[Probe] = []

    def make(*topics: str, **kwargs: object) -> Probe:
        p = Probe(broker.url, **kwargs).connect()  # type: ignore[arg-type]
        if topics:
            p.subscribe(*topics)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


@pytest.fixture
def daemon(redis: Any, redis_target: Server | Cluster, broker: Server, prefixes: tuple[str, str],
           tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """Start a daemon module (e.g. "shadowsync") against this test's broker, Redis and prefixes."""
    started: list[Daemon] = []

    def make(module: str, **env: str) -> Daemon:
        env.setdefault("FLEET_MQTT_CLIENT_ID", f"{module}-{prefixes[0]}-{len(started)}")
        d = Daemon(module, env_for(redis_target, broker, *prefixes, **env)).start()
        started.append(d)
        return d

    yield make
    for d in started:
        d.kill()
