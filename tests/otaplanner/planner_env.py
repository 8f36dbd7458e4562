"""The planner under test as a process, with an operator probe, releases and fake fleets."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.otaplanner.fleet import FakeFleet, Rule, succeed
from tests.support import Daemon, Probe, Server, free_port

MASTER_KEY = "8d1f6a0e4b2c79d35f60a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6"


@dataclass
class Env:
    prefix: str
    ops: str
    broker: Server
    redis: Any
    daemon: Callable[..., Daemon]
    probe: Callable[..., Probe]
    artifacts: Path
    fleets: list[FakeFleet] = field(default_factory=list)
    history: list[Any] = field(default_factory=list)
    planners: list[Daemon] = field(default_factory=list)
    _operator: Probe | None = None

    @property
    def operator(self) -> Probe:
        if self._operator is None:
            self._operator = self.probe(f"{self.ops}/ota/#")
        return self._operator

    def planner(self, **env: str) -> Daemon:
        self.operator  # noqa: B018 - subscribe before the planner publishes anything
        env.setdefault("FLEET_OTA_MASTER_KEY", MASTER_KEY)
        env.setdefault("FLEET_ARTIFACT_STORE", f"local:{self.artifacts}")
        env.setdefault("FLEET_ARTIFACT_HTTP_PORT", str(free_port()))
        d = self.daemon("otaplanner", **env)
        self.planners.append(d)
        self.wait_subscribed()
        return d

    def wait_subscribed(self, timeout: float = 20.0) -> None:
        """"started" comes before the SUBACKs: ask until the planner answers."""
        topic = f"{self.ops}/ota/rollouts/readiness-check/command"
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.operator.request(topic, {"action": "pause"}, timeout=0.3)
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise

    def release(self, version: str = "2.0.0", secure_version: int = 1,
                hw: tuple[str, ...] = ("c3",)) -> dict[str, Any]:
        data = f"firmware {version}".encode() * 100
        (self.artifacts / f"fw-{version}.bin").write_bytes(data)
        r = self.operator.request(f"{self.ops}/ota/releases/register", {
            "version": version, "hw": list(hw), "object": f"fw-{version}.bin",
            "sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "secure_version": secure_version})
        assert r.topic.endswith("/accepted"), r.body
        return r.body

    def fleet(self, ids: list[str], rule: Rule = succeed, announce: bool = True, **kw: Any) -> FakeFleet:
        f = FakeFleet(self.broker.url, self.prefix, ids, rule, **kw)
        self.fleets.append(f)
        if announce:
            f.announce()
        return f

    def wait_known(self, n: int, timeout: float = 20.0) -> None:
        """Until the planner has seen `n` devices (it feeds the registry from heartbeats)."""
        deadline = time.monotonic() + timeout
        while self.redis.scard("fleet:{idx}:all") < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"planner knows {self.redis.scard('fleet:{idx}:all')} devices, not {n}")
            time.sleep(0.05)

    def command(self, rid: str, body: dict[str, Any]) -> Any:
        return self.operator.request(f"{self.ops}/ota/rollouts/{rid}/command", body)

    def create(self, rid: str, **cfg: Any) -> dict[str, Any]:
        body = {"action": "create", "version": "2.0.0", "stages": [100], "soak_s": 0, "success_pct": 95,
                "max_failure_pct": 2, "min_devices_for_gate": 20, "timeout_s": 60, **cfg}
        r = self.command(rid, body)
        assert r.topic.endswith("/accepted"), r.body
        return r.body

    def wait_status(self, rid: str, check: Callable[[dict[str, Any]], bool],
                    timeout: float = 30.0) -> dict[str, Any]:
        m = self.operator.wait(f"{self.ops}/ota/rollouts/{rid}/status", lambda m: check(m.body), timeout)
        return m.body

    def wait_state(self, rid: str, state: str, timeout: float = 30.0) -> dict[str, Any]:
        return self.wait_status(rid, lambda b: b["state"] == state, timeout)

    def events(self, rid: str) -> list[dict[str, Any]]:
        """Every event published so far (the other messages stay available to waits)."""
        topic = f"{self.ops}/ota/rollouts/{rid}/events"
        for m in self.operator.drain(0.2):
            (self.history if m.topic.endswith("/events") else self.operator.seen).append(m)
        seen: dict[int, dict[str, Any]] = {}  # at least once: a duplicate has the same seq
        for m in self.history:
            if m.topic == topic:
                seen.setdefault(m.body["seq"], m.body)
        return [seen[s] for s in sorted(seen)]


@pytest.fixture
def ota(daemon: Callable[..., Daemon], probe: Callable[..., Probe], prefixes: tuple[str, str], broker: Server,
        redis: Any, tmp_path: Path) -> Iterator[Env]:
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    env = Env(prefixes[0], prefixes[1], broker, redis, daemon, probe, artifacts)
    yield env
    for d in env.planners:  # shown by pytest when the test failed
        print(f"--- planner log ({len(d.lines)} lines)", *d.lines[-40:], sep="\n")
    for f in env.fleets:
        f.close()


def ids(n: int, start: int = 0) -> list[str]:
    return [f"d{i:04d}" for i in range(start, start + n)]
