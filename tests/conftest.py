"""Shared fixtures: real redis-server and mosquitto on free ports, daemons as processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis as redis_lib

from tests.support import Daemon, Probe, Server, env_for, iter_unique, start_mosquitto, start_redis

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


@pytest.fixture
def redis(redis_server: Server) -> Iterator[redis_lib.Redis]:
    client = redis_lib.Redis.from_url(redis_server.url, decode_responses=True)
    client.flushall()
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
def daemon(redis: redis_lib.Redis, redis_server: Server, broker: Server, prefixes: tuple[str, str],
           tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """Start a daemon module (e.g. "shadowsync") against this test's broker, Redis and prefixes."""
    started: list[Daemon] = []

    def make(module: str, **env: str) -> Daemon:
        env.setdefault("FLEET_MQTT_CLIENT_ID", f"{module}-{prefixes[0]}-{len(started)}")
        d = Daemon(module, env_for(redis_server, broker, *prefixes, **env)).start()
        started.append(d)
        return d

    yield make
    for d in started:
        d.kill()
