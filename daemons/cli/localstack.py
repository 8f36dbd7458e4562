"""Local infrastructure processes: redis-server, mosquitto and amqtt on free ports.

Used by `make run` (daemons.cli.up), the tests and the benchmarks, so all three run the same parts.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
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


def start_redis(workdir: Path, port: int = 0, appendonly: bool = False) -> Server:
    """redis-server on `port` (0: a free one). With `appendonly`, every write goes to an append-only
    file in `workdir` (fsync once a second, Redis's default; a shutdown fsyncs it) and the next start
    there loads it: what production runs (bench.chaos restarts it under load)."""
    port = free_port(port)
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [need("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "yes" if appendonly else "no", "--dir", str(workdir), "--daemonize", "no",
         "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, 60)  # loading a large append-only file takes a while
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


#: The shipped broker configuration (mosquitto.conf, acl.conf) at the top of the source tree.
SHIPPED_MOSQUITTO = Path(__file__).resolve().parents[2] / "mosquitto"


@dataclass
class ShippedMosquitto(Server):
    """mosquitto on the shipped config: `port` is the loopback password listener, `url` its URL."""

    mtls_port: int  # devices, client certificates
    tls_port: int  # daemons and operators, TLS + password
    pki: Path

    def reload(self) -> None:
        """SIGHUP: mosquitto re-reads the password file, the ACL and the CRL."""
        self.process.send_signal(signal.SIGHUP)


def render_shipped_conf(pki: Path, passwd: Path, data: Path, ports: tuple[int, int, int]) -> str:
    """The shipped mosquitto.conf with only its paths and ports replaced (listeners on 127.0.0.1).

    `ports` = (mTLS, TLS + password, loopback password listener). Raises RuntimeError when the shipped
    file no longer has the lines this substitutes, so a test never runs a config other than the shipped one.
    """
    text = (SHIPPED_MOSQUITTO / "mosquitto.conf").read_text()
    subs = [("/etc/mosquitto/certs/", f"{pki}/"), ("/etc/mosquitto/passwd", str(passwd)),
            ("/etc/mosquitto/acl.conf", str(SHIPPED_MOSQUITTO / "acl.conf")),
            ("/var/lib/mosquitto/", f"{data}/")]
    for old, new in subs:
        if old not in text:
            raise RuntimeError(f"shipped mosquitto.conf has no {old}")
        text = text.replace(old, new)
    for shipped, port in zip(("8883", "8884", "1883 127.0.0.1"), ports, strict=True):
        text, n = re.subn(rf"^listener {shipped}$", f"listener {port} 127.0.0.1", text, flags=re.M)
        if n != 1:
            raise RuntimeError(f"shipped mosquitto.conf has no `listener {shipped}`")
    if os.geteuid() == 0:
        # As root mosquitto drops to the `mosquitto` user, which cannot read a root-owned 0600 file.
        text += "\nuser root\n"
    return text


def start_mosquitto_shipped(workdir: Path, pki: Path, passwd: Path, port: int = 0) -> ShippedMosquitto:
    """mosquitto with the shipped mosquitto.conf and acl.conf: authentication and ACL on.

    `pki` is a `fleetctl pki init` directory, `passwd` a password file (daemons.protocol.passwd).
    """
    ports = (free_port(), free_port(), free_port(port))
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    conf = workdir / "mosquitto.conf"
    conf.write_text(render_shipped_conf(pki, passwd, data, ports))
    log = (workdir / "mosquitto.log").open("wb")
    proc = subprocess.Popen([need("mosquitto"), "-c", str(conf)], stdout=log, stderr=log)
    for p in ports:
        wait_port(p)
    return ShippedMosquitto(proc, ports[2], f"mqtt://127.0.0.1:{ports[2]}", workdir, ports[0], ports[1], pki)


def start_mosquitto(workdir: Path, port: int = 0, persistence: bool = False) -> Server:
    """mosquitto on `port` (0: a free one). With `persistence`, sessions, their queued messages and
    retained messages are saved in `workdir` on shutdown and restored by the next start there."""
    port = free_port(port)
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "mosquitto.conf"
    text = MOSQUITTO_CONF.format(port=port)
    if persistence:
        text = text.replace("persistence false", f"persistence true\npersistence_location {workdir}/")
        if os.geteuid() == 0:
            # As root mosquitto drops to the `mosquitto` user, which cannot write its database into a
            # root-owned (mkdtemp: 0700) workdir: the save at shutdown failed and a restart lost every
            # session, and with them the messages published before the subscribers were back.
            text += "user root\n"
    conf.write_text(text)
    proc = subprocess.Popen([need("mosquitto"), "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return Server(proc, port, f"mqtt://127.0.0.1:{port}", workdir)


@dataclass
class AmqttServer(Server):
    """The embedded broker with authentication: `secret` (hex) gives every device's password
    (keys.device_password), `accounts` the clear passwords of the accounts in its password file."""

    secret: str
    accounts: dict[str, str]


def start_amqtt(workdir: Path, port: int = 0, *, secret: str | None = None,
                accounts: dict[str, str] | None = None, env: dict[str, str] | None = None) -> AmqttServer:
    """The embedded broker (daemons.broker: amqtt 0.12 + the fleet plugin), MQTT 3.1.1, no shared
    subscriptions, authentication and the shipped ACL always on.

    Without `secret` one is made; without `accounts` every account of the ACL gets a random password.
    `env` adds FLEET_* settings (e.g. FLEET_TOPIC_PREFIX, FLEET_OPS_PREFIX: the ACL follows them).
    """
    from daemons.protocol.acl import load_acl
    from daemons.protocol.passwd import write_passwd

    port = free_port(port)
    workdir.mkdir(parents=True, exist_ok=True)
    secret = secret or secrets.token_hex(32)
    if accounts is None:
        accounts = {name: secrets.token_urlsafe(18) for name in load_acl().users}
    passwd = workdir / "accounts.passwd"
    write_passwd(passwd, accounts.items())
    child_env = {**os.environ, **(env or {}), "FLEET_SECRET": secret,
                 "FLEET_BROKER_PASSWD_FILE": str(passwd), "FLEET_MQTT_URL": f"mqtt://127.0.0.1:{port}"}
    if "FLEET_CONFIG" not in (env or {}):
        child_env.pop("FLEET_CONFIG", None)  # the caller's settings file is not this broker's
    log = (workdir / "broker.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "daemons.broker"], env=child_env, stdout=log,
                            stderr=log)
    try:
        wait_port(port, 20)
    except TimeoutError:
        proc.kill()
        raise RuntimeError(f"the embedded broker did not start; see {workdir / 'broker.log'}") from None
    return AmqttServer(proc, port, f"mqtt://127.0.0.1:{port}", workdir, secret, accounts)


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
    # Every node must see the whole cluster: a node that has not yet learned the others' slots
    # answers CLUSTERDOWN to the first command sent to it.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        states = [subprocess.run([need("redis-cli"), "-p", str(n.port), "cluster", "info"],
                                 capture_output=True, text=True, timeout=10).stdout for n in nodes]
        if all("cluster_state:ok" in out for out in states):
            break
        time.sleep(0.1)
    return Cluster(nodes, nodes[0].url)
