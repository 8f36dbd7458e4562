"""Real infrastructure for tests: redis-server, mosquitto, daemon processes, an MQTT probe."""

from __future__ import annotations

import contextlib
import fnmatch
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from daemons.codec import decode, encode

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {port}")


def need(binary: str) -> str:
    path = shutil.which(binary) or (f"/usr/sbin/{binary}" if os.path.exists(f"/usr/sbin/{binary}") else None)
    if path is None:
        raise RuntimeError(f"{binary} not installed: run `make setup`")
    return path


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    url: str
    workdir: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_redis(workdir: Path) -> Server:
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [need("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(workdir), "--daemonize", "no", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return Server(proc, port, f"redis://127.0.0.1:{port}/0", workdir)


MOSQUITTO_CONF = """\
listener {port} 127.0.0.1
allow_anonymous true
persistence false
max_inflight_messages 1000
max_queued_messages 200000
max_packet_size 1048576
"""


def start_mosquitto(workdir: Path) -> Server:
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "mosquitto.conf"
    conf.write_text(MOSQUITTO_CONF.format(port=port))
    proc = subprocess.Popen([need("mosquitto"), "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return Server(proc, port, f"mqtt://127.0.0.1:{port}", workdir)


AMQTT_CONF = """\
listeners:
  default:
    type: tcp
    bind: 127.0.0.1:{port}
plugins:
  amqtt.plugins.authentication.AnonymousAuthPlugin:
    allow_anonymous: true
"""


def start_amqtt(workdir: Path) -> Server:
    """amqtt 0.12, the embedded broker: MQTT 3.1.1 only, no shared subscriptions."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "amqtt.yaml"
    conf.write_text(AMQTT_CONF.format(port=port))
    amqtt = Path(sys.executable).parent / "amqtt"
    proc = subprocess.Popen([str(amqtt), "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_port(port, 20)
    return Server(proc, port, f"mqtt://127.0.0.1:{port}", workdir)


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
                 protocol: int = paho.MQTTv5) -> None:
        self.port = int(url.rsplit(":", 1)[1])
        self.client_id = client_id or f"probe-{os.getpid()}-{id(self)}"
        self.clean = clean
        self.protocol = protocol
        self.messages: queue.Queue[Received] = queue.Queue()
        self.seen: list[Received] = []
        self.will: tuple[str, bytes] | None = None
        self._subscribed = threading.Event()
        self.client = self._make()

    def _make(self) -> paho.Client:
        v5 = self.protocol == paho.MQTTv5
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=self.protocol,
                        clean_session=None if v5 else self.clean)
        c.max_inflight_messages_set(1000)
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
        self.client.connect("127.0.0.1", self.port, keepalive=30, properties=props, **kwargs)
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
    """A daemon run as its own process, exactly as systemd would run it."""

    module: str
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    lines: list[str] = field(default_factory=list)
    _started: threading.Event = field(default_factory=threading.Event)

    def start(self, timeout: float = 20.0) -> Daemon:
        self._started.clear()
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module], env={**os.environ, **self.env}, cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        threading.Thread(target=self._read, args=(self.process,), daemon=True).start()
        if not self._started.wait(timeout):
            self.kill()
            raise RuntimeError(f"{self.module} did not start: {self.lines[-5:]}")
        return self

    def _read(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stderr is not None
        for raw in process.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.lines.append(line)
            if '"event": "started"' in line or '"event":"started"' in line:
                self._started.set()

    def terminate(self, timeout: float = 20.0) -> int:
        assert self.process is not None
        self.process.terminate()
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def env_for(redis: Server, broker: Server, prefix: str, ops: str, **extra: str) -> dict[str, str]:
    env = {
        "FLEET_MQTT_URL": broker.url,
        "FLEET_REDIS_URL": redis.url,
        "FLEET_TOPIC_PREFIX": prefix,
        "FLEET_OPS_PREFIX": ops,
        "FLEET_METRICS_PORT": "0",
        "FLEET_LOG_LEVEL": "info",
    }
    env.update(extra)
    return env


def iter_unique(prefix: str) -> Iterator[str]:
    n = 0
    while True:
        n += 1
        yield f"{prefix}{os.getpid()}x{n}"
