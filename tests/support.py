"""Real infrastructure for tests: redis-server, mosquitto, daemon processes, an MQTT probe."""

from __future__ import annotations

import fnmatch
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest

# Re-exported: tests and benchmarks start infrastructure from here.
from daemons.cli.localstack import (  # noqa: F401
    Cluster,
    Server,
    free_port,
    need,
    start_amqtt,
    start_mosquitto,
    start_redis,
    wait_port,
)
from daemons.protocol.codec import decode, encode
from daemons.runtime.mqtt import make_client
from daemons.runtime.notify import ReadinessListener

ROOT = Path(__file__).resolve().parent.parent


def http_get(url: str, range_: str | None = None) -> tuple[int, bytes, Any]:
    """GET a URL (optionally a byte range); the status, body and headers, errors included."""
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, headers={"Range": range_} if range_ else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read(), r.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool

    @property
    def body(self) -> dict[str, Any]:
        return decode(self.payload)[0] if self.payload else {}


class Probe:
    """A paho client standing in for a device or an operator, with waits on messages."""

    def __init__(self, url: str, client_id: str | None = None, clean: bool = True,
                 protocol: paho.MQTTProtocolVersion = paho.MQTTv5,
                 auth: tuple[str, str] | None = None) -> None:
        self.url = url
        self.port = int(url.rsplit(":", 1)[1])
        self.client_id = client_id or f"probe-{os.getpid()}-{id(self)}"
        self.clean = clean
        self.protocol = protocol
        self.messages: queue.Queue[Received] = queue.Queue()
        self.seen: list[Received] = []
        self.will: tuple[str, bytes] | None = None
        self._subscribed = threading.Event()
        self.auth = auth
        self.client = self._make()

    def _make(self) -> paho.Client:
        user, password = self.auth or (None, None)
        c, self.addr = make_client(self.url, self.client_id, protocol=self.protocol, clean_session=self.clean,
                                   max_inflight=1000, username=user, password=password)
        c.on_message = lambda _c, _u, m: self.messages.put(
            Received(m.topic, bytes(m.payload), bool(m.retain)))
        c.on_subscribe = lambda *a: self._subscribed.set()
        return c

    def connect(self, will: tuple[str, bytes] | None = None) -> Probe:
        if will:
            self.client.will_set(will[0], will[1], qos=1, retain=True)
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties
        props = None
        kwargs: dict[str, Any] = {}
        if self.protocol == paho.MQTTv5:
            kwargs["clean_start"] = self.clean
            if not self.clean:
                props = Properties(PacketTypes.CONNECT)
                props.SessionExpiryInterval = 3600
        self.client.connect(self.addr.host, self.addr.port, keepalive=30, properties=props, **kwargs)
        self.client.loop_start()
        deadline = time.monotonic() + 10
        while not self.client.is_connected():
            if time.monotonic() > deadline:
                raise TimeoutError("probe could not connect")
            time.sleep(0.01)
        return self

    def subscribe(self, *topics: str) -> Probe:
        for t in topics:
            self._subscribed.clear()
            self.client.subscribe(t, qos=1)
            if not self._subscribed.wait(5):
                raise TimeoutError(f"no SUBACK for {t}")
        return self

    def publish(self, topic: str, body: Any = None, encoding: str = "json", raw: bytes | None = None,
                retain: bool = False, qos: int = 1) -> None:
        payload = raw if raw is not None else (b"" if body is None else encode(body, encoding))  # type: ignore[arg-type]
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if qos:
            info.wait_for_publish(5)

    def wait(self, pattern: str, match: Callable[[Received], bool] | None = None,
             timeout: float = 10.0) -> Received:
        """The first message (seen before or arriving now) on a topic matching the glob."""
        for m in self.seen:
            if fnmatch.fnmatchcase(m.topic, pattern) and (match is None or match(m)):
                self.seen.remove(m)
                return m
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no message on {pattern}; seen {[m.topic for m in self.seen][-10:]}")
            try:
                m = self.messages.get(timeout=left)
            except queue.Empty:
                continue
            if fnmatch.fnmatchcase(m.topic, pattern) and (match is None or match(m)):
                return m
            self.seen.append(m)

    def drain(self, quiet: float = 0.3) -> list[Received]:
        out = list(self.seen)
        self.seen.clear()
        while True:
            try:
                out.append(self.messages.get(timeout=quiet))
            except queue.Empty:
                return out

    def request(self, topic: str, body: Any = None, encoding: str = "json", timeout: float = 10.0,
                raw: bytes | None = None) -> Received:
        """Publish on `topic` and wait for `topic/accepted` or `topic/rejected`."""
        self.publish(topic, body, encoding, raw=raw)
        return self.wait(f"{topic}/*ed", lambda m: m.topic in (f"{topic}/accepted", f"{topic}/rejected"),
                         timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class Daemon:
    """A daemon run as its own process, exactly as systemd would run it (Type=notify).

    `start` returns once the daemon has sent READY=1 on the notification socket made for it,
    i.e. once it is connected and its subscriptions are granted.
    """

    module: str
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    lines: list[str] = field(default_factory=list)
    watchdog_s: float | None = None
    notify: ReadinessListener | None = None

    def start(self, timeout: float = 20.0) -> Daemon:
        return self.launch().wait_ready(timeout)

    def launch(self) -> Daemon:
        """Start the process without waiting: several daemons then start side by side."""
        if self.notify is not None:
            self.notify.close()
        self.notify = ReadinessListener(self.watchdog_s)
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module], env={**os.environ, **self.env, **self.notify.env()},
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        threading.Thread(target=self._read, args=(self.process,), daemon=True).start()
        return self

    def wait_ready(self, timeout: float = 20.0) -> Daemon:
        """Until the launched daemon sent READY=1 (RuntimeError, the daemon killed, if it does not)."""
        process, notify = self.process, self.notify
        assert process is not None and notify is not None, "launch() first"
        if not notify.wait_ready(timeout, alive=lambda: process.poll() is None):
            self.kill()
            raise RuntimeError(f"{self.module} did not start: {self.lines[-5:]}")
        return self

    def _read(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stderr is not None
        for raw in process.stderr:
            self.lines.append(raw.decode(errors="replace").rstrip())

    def event(self, name: str, timeout: float = 5.0) -> dict[str, Any]:
        """The first JSON log line of event `name`, waiting for the reader to get there."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for line in self.lines[seen:]:
                seen += 1
                if f'"{name}"' in line:
                    entry = json.loads(line)
                    if entry.get("event") == name:
                        return dict(entry)
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {name} event in the log of {self.module}: {self.lines[-5:]}")
            time.sleep(0.02)

    def terminate(self, timeout: float = 20.0) -> int:
        assert self.process is not None
        self.process.terminate()
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.notify is not None:
            self.notify.close()
            self.notify = None


def env_for(redis: Server | Cluster, broker: Server, prefix: str, ops: str, **extra: str) -> dict[str, str]:
    """A daemon's FLEET_* environment; a Redis Cluster turns FLEET_REDIS_CLUSTER on."""
    env = {
        "FLEET_MQTT_URL": broker.url,
        "FLEET_REDIS_URL": redis.url,
        "FLEET_TOPIC_PREFIX": prefix,
        "FLEET_OPS_PREFIX": ops,
        "FLEET_METRICS_PORT": "0",
        "FLEET_LOG_LEVEL": "info",
    }
    if isinstance(redis, Cluster):
        env["FLEET_REDIS_CLUSTER"] = "1"
    env.update(extra)
    return env


def redis_client(redis: Server | Cluster) -> Any:
    """A client of this test Redis, made as the daemons make theirs (daemons.runtime.redisclient)."""
    from daemons.runtime.config import Settings
    from daemons.runtime.redisclient import connect_redis

    return connect_redis(Settings(redis_url=redis.url, redis_cluster=isinstance(redis, Cluster)))


def default_backend() -> str:
    """"single" (redis-server) or, with TEST_REDIS_BACKEND=cluster, "cluster" (a 3-master Redis Cluster)."""
    return "cluster" if os.environ.get("TEST_REDIS_BACKEND") == "cluster" else "single"


# Runs a test once on one redis-server and once on a 3-master Redis Cluster (tests/conftest.py's
# `backend` fixture): for a few representative end-to-end tests, not every test (make test's time).
on_both_backends = pytest.mark.parametrize("backend", ["single", "cluster"], indirect=True)
# Runs a test on the Redis Cluster only (its `redis` fixture emptied first, as on one redis-server).
on_cluster = pytest.mark.parametrize("backend", ["cluster"], indirect=True)


def iter_unique(prefix: str) -> Iterator[str]:
    n = 0
    while True:
        n += 1
        yield f"{prefix}{os.getpid()}x{n}"


def counted(metrics_port: int, daemon: str, kind: str, result: str | None = None) -> float:
    """`fleet_messages_total{daemon,kind,result}` as one daemon's /metrics shows it now (0 if absent);
    without `result`, the sum over every result of `kind`."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    needle = f'fleet_messages_total{{daemon="{daemon}",kind="{kind}",result="{result or ""}'
    if result is not None:
        needle += '"} '
    return sum(float(x.split()[-1]) for x in text.splitlines() if x.startswith(needle))
