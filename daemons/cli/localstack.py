"""Local infrastructure processes: redis-server, mosquitto and amqtt on free ports.

Used by `make run` (daemons.cli.up), the tests and the benchmarks, so all three run the same parts.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


def free_port(preferred: int = 0) -> int:
    """`preferred` if it is free, else any free port."""
    if preferred:
        with socket.socket() as s:
            # As the servers do: a port whose old connections linger in TIME_WAIT is free.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", preferred))
                return preferred
            except OSError:
                pass
    return _any_port()


def _any_port() -> int:
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


def start_redis(workdir: Path, port: int = 0) -> Server:
    port = free_port(port)
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [need("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(workdir), "--daemonize", "no", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return Server(proc, port, f"redis://127.0.0.1:{port}/0", workdir)


# max_connections -1: no limit but the open-files limit (fleet up raises it to the hard limit). The
# listen backlog is not configurable in mosquitto 2.0 (a fixed 100, capped by net.core.somaxconn): a
# connection storm is paced by the clients (fleet sim --connect-rate).
MOSQUITTO_CONF = """\
listener {port} 127.0.0.1
max_connections -1
allow_anonymous true
persistence false
max_inflight_messages 1000
max_queued_messages 200000
max_packet_size 1048576
"""


def start_mosquitto(workdir: Path, port: int = 0, persistence: bool = False) -> Server:
    """mosquitto on `port` (0: a free one). With `persistence`, sessions, their queued messages and
    retained messages are saved in `workdir` on shutdown and restored by the next start there."""
    port = free_port(port)
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "mosquitto.conf"
    text = MOSQUITTO_CONF.format(port=port)
    if persistence:
        text = text.replace("persistence false", f"persistence true\npersistence_location {workdir}/")
    conf.write_text(text)
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


def start_amqtt(workdir: Path, port: int = 0) -> Server:
    """amqtt 0.12, the embedded broker: MQTT 3.1.1 only, no shared subscriptions."""
    port = free_port(port)
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "amqtt.yaml"
    conf.write_text(AMQTT_CONF.format(port=port))
    amqtt = Path(sys.executable).parent / "amqtt"
    proc = subprocess.Popen([str(amqtt), "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_port(port, 20)
    return Server(proc, port, f"mqtt://127.0.0.1:{port}", workdir)




@dataclass
class Cluster:
    nodes: list[Server]
    url: str

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def start_redis_cluster(workdir: Path, size: int = 3) -> Cluster:
    """A real Redis Cluster of `size` masters, for the Redis Cluster code paths."""
    nodes = []
    for i in range(size):
        port = free_port()
        node_dir = workdir / f"node{i}"
        node_dir.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(
            [need("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
             "--cluster-port", str(free_port()),  # the default, port + 10000, may not exist
             "--cluster-config-file", "nodes.conf", "--save", "", "--appendonly", "no",
             "--dir", str(node_dir), "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port)
        nodes.append(Server(proc, port, f"redis://127.0.0.1:{port}/0", node_dir))
    subprocess.run(
        [need("redis-cli"), "--cluster", "create", *[f"127.0.0.1:{n.port}" for n in nodes],
         "--cluster-replicas", "0", "--cluster-yes"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        timeout=60)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        out = subprocess.run([need("redis-cli"), "-p", str(nodes[0].port), "cluster", "info"],
                             capture_output=True, text=True, timeout=10).stdout
        if "cluster_state:ok" in out:
            break
        time.sleep(0.1)
    return Cluster(nodes, nodes[0].url)
