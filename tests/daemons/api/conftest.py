"""One real stack per test module: redis-server, mosquitto, shadow-sync, ota-planner and fleet-api
as processes (as systemd runs them), plus a token for each role and for each way a token fails."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from daemons.api.auth import TokenStore
from tests.support import (
    Cluster,
    Daemon,
    Probe,
    Server,
    default_backend,
    env_for,
    free_port,
    iter_unique,
    redis_client,
    wait_port,
)

_names = iter_unique("api")


@dataclass
class Stack:
    url: str
    p: str
    o: str
    redis: Any  # redis.Redis, or a cluster client
    broker: Server
    env: dict[str, str]
    tokens: dict[str, str] = field(default_factory=dict)
    daemons: dict[str, Daemon] = field(default_factory=dict)
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def client(self, who: str | None = "admin", **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)

    def simulate(self, devices: int, interval_s: float = 1.0) -> None:
        """daemons.sim's simulated fleet (sim-00000...): heartbeats, shadows, OTA installs, logs."""
        self.children.append(subprocess.Popen(
            [sys.executable, "-m", "daemons.sim", "--mqtt-url", self.broker.url, "--prefix", self.p,
             "--devices", str(devices), "--interval", str(interval_s), "--faults", "", "--named-shadows", "",
             "--hw", "esp32c3,esp32s3", "--stats-every", "3600"],
            env={**os.environ, **self.env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def probe(self, *topics: str) -> Probe:
        p = Probe(self.broker.url).connect()
        if topics:
            p.subscribe(*topics)
        return p


def start_stack(redis_target: Server | Cluster, broker: Server, work: Path, modules: tuple[str, ...],
                **extra: str) -> Stack:
    """The daemons `modules` and fleet-api on this Redis (emptied first; a Cluster: FLEET_REDIS_CLUSTER)."""
    # Retained messages (a simulator's status) outlive a stack: every stack gets its own prefixes.
    name = f"{next(_names)}{secrets.token_hex(2)}"
    p, o = f"fl{name}", f"ops{name}"
    r = redis_client(redis_target)
    r.flushall()
    port = free_port()
    env = env_for(redis_target, broker, p, o, FLEET_OTA_MASTER_KEY=secrets.token_hex(32),
                  FLEET_ARTIFACT_STORE=f"local:{work / 'artifacts'}",
                  FLEET_ARTIFACT_HTTP_PORT=str(free_port()),
                  FLEET_API_PORT=str(port), **extra)
    stack = Stack(f"http://127.0.0.1:{port}", p, o, r, broker, env)
    try:
        _start(stack, modules, name, port)
    except BaseException:
        stop_stack(stack)  # nothing started here outlives a failed start
        raise
    return stack


def _start(stack: Stack, modules: tuple[str, ...], name: str, port: int) -> None:
    env, r = stack.env, stack.redis
    # Side by side (the API does not need the daemons to start, only to answer later): each waits
    # for its READY=1 after all are launched.
    for module in modules:
        stack.daemons[module] = Daemon(module, {**env, "FLEET_MQTT_CLIENT_ID": f"{module}-{name}"}).launch()
    stack.daemons["daemons.api"] = Daemon("daemons.api", env).launch()
    for d in stack.daemons.values():
        d.wait_ready()
    wait_port(port)
    tokens = TokenStore(r)
    for role in ("viewer", "operator", "admin"):
        stack.tokens[role] = tokens.create(f"test-{role}", role)["token"]
    revoked = tokens.create("test-revoked", "admin")
    tokens.revoke(revoked["id"])
    stack.tokens["revoked"] = revoked["token"]
    stack.tokens["expired"] = tokens.create("test-expired", "admin", ttl_days=1,
                                            now=time.time() - 2 * 86400)["token"]
    stack.tokens["bogus"] = "fleet_" + secrets.token_urlsafe(32)


def stop_stack(stack: Stack) -> None:
    for child in stack.children:
        child.terminate()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
    for d in reversed(list(stack.daemons.values())):
        d.kill()
    stack.redis.close()


def stack_redis(request: pytest.FixtureRequest) -> Server | Cluster:
    """The Redis of a module's `stack`: redis-server, or the Redis Cluster in a module marked
    `pytestmark = on_both_stacks` (its every test then runs once on each)."""
    cluster = getattr(request, "param", default_backend()) == "cluster"
    return request.getfixturevalue("redis_cluster" if cluster else "redis_server")  # type: ignore[no-any-return]


# A whole module on one redis-server and then on a 3-master Redis Cluster (one stack each).
on_both_stacks = pytest.mark.parametrize("stack", ["single", "cluster"], indirect=True, scope="module")


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest, broker: Server,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_stack(stack_redis(request), broker, tmp_path_factory.mktemp("api"),
                    ("shadowsync", "otaplanner"))
    try:
        yield s
    finally:
        stop_stack(s)
