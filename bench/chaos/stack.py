"""The system under test of `make chaos`, and the faults done to it.

Redis with appendonly (fsync once a second, Redis's default), mosquitto with persistence, every
daemon (shadow-sync, ota-planner, healthwatch, fleet-api) as its own process started as systemd
starts a Type=notify unit (tests.support.Daemon: ready on READY=1), the local artifact store served
by a process of its own (in production the store is S3, not the planner: a planner crash must not cut
the devices' downloads), and `python -m daemons.sim` driving the fleet.

A supervisor thread plays systemd's `Restart=always`: a daemon that exits when nobody killed it on
purpose is counted (`unexpected`) and started again. The shipped units wait `RestartSec=2` before
that; here the restart is immediate, so the recovery times below do not include those 2 s.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemons.cli.localstack import Server, free_port, start_mosquitto, start_redis, wait_port
from daemons.cli.up import raise_nofile
from tests.support import ROOT, Daemon, env_for

DAEMONS = ("shadowsync", "otaplanner", "healthwatch", "daemons.api")
ARTIFACT_SERVER = """
import sys, time
from pathlib import Path
from otaplanner.artifact_http import serve_local_store
from otaplanner.artifacts import LocalStore, local_key
root = Path(sys.argv[1]).resolve()
serve_local_store(LocalStore(root, sys.argv[3], local_key(root, sys.argv[4])), "127.0.0.1", int(sys.argv[2]))
while True:
    time.sleep(3600)
"""


@dataclass
class Fault:
    """One fault's clock (time.monotonic()): when it was done, and when the part was back."""

    name: str
    at: float
    back: float = 0.0  # the process restarted (READY=1) or the server listening again
    wall: float = field(default_factory=time.time)  # epoch s of the fault


@dataclass
class Stack:
    work: Path
    devices: int
    interval: float
    names: tuple[str, ...] = DAEMONS  # the daemons to run (all of them but in the harness's own test)
    env_extra: dict[str, str] = field(default_factory=dict)  # FLEET_* settings of this system
    redis: Server | None = None
    broker: Server | None = None
    daemons: dict[str, Daemon] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    sim: subprocess.Popen[str] | None = None
    artifacts: subprocess.Popen[bytes] | None = None
    api_url: str = ""
    api_token: str = ""
    config: Path = Path()
    unexpected: list[str] = field(default_factory=list)  # daemons that died without being killed
    sim_stats: dict[int, dict[str, Any]] = field(default_factory=dict)  # simulator worker -> its last stats
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)

    # -- start and stop ---------------------------------------------------------------------------

    def start(self) -> Stack:
        raise_nofile()
        self.redis = start_redis(self.work / "redis", appendonly=True)
        self.broker = start_mosquitto(self.work / "mqtt", persistence=True)
        key = secrets.token_hex(32)
        store = self.work / "artifacts"
        store.mkdir(parents=True, exist_ok=True)
        http, api = free_port(), free_port()
        public = f"http://127.0.0.1:{http}"
        self.artifacts = subprocess.Popen(
            [sys.executable, "-c", ARTIFACT_SERVER, str(store), str(http), public, key],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(http, 30)
        # One file for the daemons and `fleetctl release publish` (daemons.cli.publish), as fleet up does.
        self.config = self.work / "fleet.toml"
        self.config.write_text(
            f'mqtt_url = "{self.broker.url}"\nredis_url = "{self.redis.url}"\n'
            f'ota_master_key = "{key}"\nartifact_store = "local:{store}"\nartifact_public_url = "{public}"\n'
            f"heartbeat_interval_s = {max(1, round(self.interval))}\n")
        self.env = env_for(self.redis, self.broker, "fleet", "fleetops", FLEET_CONFIG=str(self.config),
                           FLEET_ARTIFACT_HTTP_PORT="0", FLEET_API_PORT=str(api), FLEET_LOG_LEVEL="warning",
                           FLEET_OTA_MASTER_KEY=key, **self.env_extra)
        for name in self.names:
            self.daemons[name] = Daemon(name, {**self.env, "FLEET_MQTT_CLIENT_ID": f"chaos-{name}"}).start(60)
        if "daemons.api" in self.names:
            self.api_url = f"http://127.0.0.1:{api}/api/v1"
            self.api_token = self._token()
        threading.Thread(target=self._supervise, daemon=True).start()
        return self

    def _token(self) -> str:
        import redis as redis_lib

        from daemons.api.auth import TokenStore

        assert self.redis is not None
        client = redis_lib.Redis.from_url(self.redis.url, decode_responses=True)
        try:
            return str(TokenStore(client).create("chaos", "operator", ttl_days=1)["token"])
        finally:
            client.close()

    def start_sim(self) -> None:
        """The simulated fleet: every device its own MQTT connection and persistent session."""
        assert self.broker is not None
        self.sim = subprocess.Popen(
            [sys.executable, "-m", "daemons.sim", "--mqtt-url", self.broker.url, "--devices",
             str(self.devices), "--interval", str(self.interval), "--workers", "2", "--connect-rate", "1000",
             "--faults", "", "--stats-every", "1"],
            cwd=ROOT, env={**os.environ, **self.env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True)
        threading.Thread(target=self._read_sim, args=(self.sim,), daemon=True).start()

    def _read_sim(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith("{"):
                ev = json.loads(line)
                if ev.get("event") == "stats":
                    self.sim_stats[ev["worker"]] = ev

    def stop_sim(self) -> None:
        if self.sim is not None and self.sim.poll() is None:
            self.sim.send_signal(signal.SIGTERM)
            try:
                self.sim.wait(60)
            except subprocess.TimeoutExpired:
                self.sim.kill()
                self.sim.wait()
            time.sleep(0.5)  # the reader takes the last counters

    def stop(self) -> None:
        self._stop.set()
        self.stop_sim()
        with self._lock:
            for d in self.daemons.values():
                d.kill()
        if self.artifacts is not None and self.artifacts.poll() is None:
            self.artifacts.kill()
            self.artifacts.wait()
        for server in (self.broker, self.redis):
            if server is not None:
                server.stop()

    # -- systemd's Restart=always -----------------------------------------------------------------

    def _supervise(self) -> None:
        while not self._stop.wait(0.2):
            with self._lock:
                for name, d in self.daemons.items():
                    if d.process is not None and d.process.poll() is not None and not self._stop.is_set():
                        self.unexpected.append(f"{name} exited {d.process.returncode}: {d.lines[-3:]}")
                        self._restart(d)

    @staticmethod
    def _restart(d: Daemon) -> None:
        for _ in range(30):  # systemd keeps trying; a daemon that cannot start yet exits again
            try:
                d.start(60)
                return
            except RuntimeError:
                time.sleep(0.5)
        raise RuntimeError(f"{d.module} did not come back: {d.lines[-5:]}")

    # -- faults -----------------------------------------------------------------------------------

    def kill9(self, name: str) -> Fault:
        """SIGKILL the daemon, then start it again at once (as systemd would); `back` at its READY=1."""
        with self._lock:
            d = self.daemons[name]
            assert d.process is not None
            fault = Fault(f"kill -9 {name}", time.monotonic())
            d.process.send_signal(signal.SIGKILL)
            d.process.wait()
            self._restart(d)
            fault.back = time.monotonic()
        return fault

    def restart_redis(self) -> Fault:
        """Stop redis-server (SIGTERM: it fsyncs the append-only file) and start it again on the same
        port and directory: it loads the file back."""
        assert self.redis is not None
        port, fault = self.redis.port, Fault("restart redis-server", time.monotonic())
        self.redis.stop()
        self.redis = start_redis(self.work / "redis", port, appendonly=True)
        fault.back = time.monotonic()
        return fault

    def restart_mosquitto(self) -> Fault:
        """Stop mosquitto (it saves sessions, queued and retained messages) and start it again."""
        assert self.broker is not None
        port, fault = self.broker.port, Fault("restart mosquitto", time.monotonic())
        self.broker.stop()
        self.broker = start_mosquitto(self.work / "mqtt", port, persistence=True)
        fault.back = time.monotonic()
        return fault

    def sent(self, kind: str) -> int:
        """Messages of one kind the simulator published so far (its own counters)."""
        return sum(s["sent"].get(kind, 0) for s in self.sim_stats.values())
