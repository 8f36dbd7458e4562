"""The whole system under a simulated fleet: mosquitto, Redis, every daemon and `fleet sim`.

1. Connection storm: N devices (each its own MQTT connection) connect; the time until every device
   said online on its status topic, had its shadow read (`shadow/get/accepted`) and had its health
   published, all seen by an operator-side subscriber. Baseline: the same simulator against a bare
   mosquitto (no daemons) in the same run, time until every status was seen.
2. Steady state at a 60 s heartbeat (the real rate) and at 6 s (ten times it): CPU of each process
   as a share of one core, over a window; heartbeats sent (the simulator's own count) against
   heartbeats healthwatch handled (its Prometheus counter): messages lost.
3. Broker restart with N connected: mosquitto (persistence on, as in production: sessions and their
   queued messages survive) is stopped and started again on the same port; a fleet-wide desired
   change is made as soon as shadow-sync is back; the time until every device is online again and
   has reported the change, and the heartbeats lost across the restart.

`FLEET_BENCH_DEVICES` (default 10,000), `FLEET_BENCH_WINDOW_S` (CPU window, default 60),
`FLEET_BENCH_SIM_WORKERS` (default 2). Needs `ulimit -n` above 2 × devices + 1,000 (the broker and
the simulator each hold a socket per device); `fleet up`'s raise_nofile takes the hard limit.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from daemons.cli.localstack import Server
from daemons.cli.observe import Observer
from daemons.cli.up import raise_nofile
from tests.support import ROOT, Daemon, env_for, free_port, start_mosquitto, start_redis

DEVICES = int(os.environ.get("FLEET_BENCH_DEVICES", "10000"))
WINDOW_S = float(os.environ.get("FLEET_BENCH_WINDOW_S", "60"))
WORKERS = int(os.environ.get("FLEET_BENCH_SIM_WORKERS", "2"))
CONNECT_RATE = float(os.environ.get("FLEET_BENCH_CONNECT_RATE", "1000"))
DAEMONS = ("shadowsync", "healthwatch", "otaplanner", "daemons.api")
NEVER = threading.Event()


class Sim:
    """`python -m daemons.sim` as a child, its stats lines collected (summed over its workers)."""

    def __init__(self, url: str, interval: float, env: dict[str, str]) -> None:
        self.sent: dict[int, dict[str, int]] = {}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daemons.sim", "--mqtt-url", url, "--devices", str(DEVICES),
             "--interval", str(interval), "--workers", str(WORKERS), "--connect-rate", str(CONNECT_RATE),
             "--faults", "", "--stats-every", "2"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if line.startswith("{"):
                ev = json.loads(line)
                if ev.get("event") == "stats":
                    self.sent[ev["worker"]] = ev["sent"]

    def heartbeats(self) -> int:
        return sum(s.get("heartbeat", 0) for s in self.sent.values())

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        time.sleep(0.5)  # the reader takes the last stats line


def _cpu(pids: dict[str, int]) -> dict[str, float]:
    out = {}
    for name, pid in pids.items():
        try:
            p = psutil.Process(pid)
            total = sum(p.cpu_times()[:2])
            for c in p.children(recursive=True):
                total += sum(c.cpu_times()[:2])
            out[name] = total
        except psutil.NoSuchProcess:
            out[name] = 0.0
    return out


def _cpu_share(pids: dict[str, int], window: float) -> dict[str, float]:
    a = _cpu(pids)
    time.sleep(window)
    b = _cpu(pids)
    return {name: 100.0 * (b[name] - a[name]) / window for name in pids}


def _handled(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith('fleet_messages_total{daemon="healthwatch",kind="heartbeat"'))


def _storm(url: str, env: dict[str, str], since: float, full: bool) -> tuple[Sim, dict[str, float]]:
    obs = Observer(url, "fleet", "fleetops", since)
    sim = Sim(url, 60.0, env)
    t0 = time.monotonic()
    s = obs.seen
    times: dict[str, float] = {}
    checks = {"online": lambda: len(s.online) >= DEVICES}
    if full:
        # A simulated device loses a heartbeat now and then (heartbeats.py, 0.2 %): the last few healths
        # wait for the next heartbeat, so 99 % is timed as well.
        checks.update(shadows_read=lambda: len(s.shadow_read) >= DEVICES,
                      health_99=lambda: len(s.health) >= 0.99 * DEVICES,
                      health=lambda: len(s.health) >= DEVICES)
    for name, pred in checks.items():
        if not obs.wait(pred, 600, NEVER):
            raise TimeoutError(f"storm: {name} not reached in 600 s (online {len(s.online)}, "
                               f"read {len(s.shadow_read)}, health {len(s.health)})")
        times[name] = time.monotonic() - t0
        print(f"storm ({'full' if full else 'bare'}): {name} after {times[name]:.1f} s", file=sys.stderr,
              flush=True)
    times["all"] = max(times.values())
    obs.close()
    return sim, times


def main() -> str:
    raise_nofile()
    work = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    key = secrets.token_hex(32)
    sim_env = {**os.environ, "FLEET_OTA_MASTER_KEY": key}
    # The baseline: the same fleet against a bare broker.
    bare = start_mosquitto(work / "bare")
    sim, bare_t = _storm(bare.url, sim_env, time.time(), full=False)
    sim.stop()
    bare.stop()

    redis, broker = start_redis(work / "redis"), start_mosquitto(work / "mqtt", persistence=True)
    metrics = free_port()
    extra = {"FLEET_OTA_MASTER_KEY": key, "FLEET_ARTIFACT_STORE": f"local:{work / 'artifacts'}",
             "FLEET_ARTIFACT_HTTP_PORT": str(free_port()), "FLEET_API_PORT": str(free_port()),
             "FLEET_HEARTBEAT_INTERVAL_S": "60"}
    daemons: dict[str, Daemon] = {}
    rows: list[str] = []
    try:
        for name in DAEMONS:
            port = str(metrics) if name == "healthwatch" else "0"
            daemons[name] = Daemon(name, env_for(redis, broker, "fleet", "fleetops", FLEET_METRICS_PORT=port,
                                                 FLEET_MQTT_CLIENT_ID=f"bench-{name}", **extra)).start()
        sim, full_t = _storm(broker.url, sim_env, time.time(), full=True)
        cpu: dict[float, dict[str, float]] = {}
        sent = 0
        for interval in (60.0, 6.0):
            if interval != 60.0:  # the same fleet again (same ids and sessions), ten times as chatty
                sim = Sim(broker.url, interval, sim_env)
                _online(broker.url)
            time.sleep(min(10.0, interval))  # past the storm
            pids = {"mosquitto": broker.process.pid, "redis": redis.process.pid,
                    **{n: d.process.pid for n, d in daemons.items() if d.process}, "simulator": sim.proc.pid}
            cpu[interval] = _cpu_share(pids, WINDOW_S)
            sim.stop()
            sent += sim.heartbeats()
        time.sleep(5)
        handled = _handled(metrics)
        sim = Sim(broker.url, 6.0, sim_env)
        _online(broker.url)
        restart = _restart(broker, work, sim)
        broker = restart.pop("broker")
        sim.stop()
        time.sleep(5)
        restart_sent, restart_handled = sim.heartbeats(), _handled(metrics) - handled
    finally:
        for d in daemons.values():
            d.kill()
        broker.stop()
        redis.stop()
    rows += [
        "| measure | result | baseline (bare mosquitto, same simulator) | ratio |",
        "|---|---:|---:|---:|",
        f"| connection storm, {DEVICES:,} devices: all online | {full_t['online']:.1f} s | "
        f"{bare_t['online']:.1f} s | {full_t['online'] / bare_t['online']:.2f} |",
        f"| ... every shadow read (get answered) | {full_t['shadows_read']:.1f} s | | |",
        f"| ... health published for 99 % of the devices | {full_t['health_99']:.1f} s | | |",
        f"| ... every device (a few first heartbeats are lost: simulated) | {full_t['health']:.1f} s | | |",
        f"| broker restart with {DEVICES:,} connected: all online again | {restart['online']:.1f} s | | |",
        f"| ... and the desired change made meanwhile applied and reported by all | "
        f"{restart['reported']:.1f} s | | |",
        f"| heartbeats sent / handled by healthwatch / lost, steady state | {sent:,} / {handled:,.0f} / "
        f"{sent - int(handled):,} | | |",
        f"| heartbeats sent / delivered to healthwatch (redeliveries included) / missing, across the broker "
        f"restart | {restart_sent:,} / {restart_handled:,.0f} / "
        f"{max(0, restart_sent - int(restart_handled)):,} | | |",
        "",
        "Steady-state CPU, % of one core, over " + f"{WINDOW_S:g} s:",
        "",
        "| process | 60 s heartbeat | 6 s heartbeat |",
        "|---|---:|---:|",
        *(f"| {n} | {cpu[60.0][n]:.1f} | {cpu[6.0][n]:.1f} |" for n in cpu[60.0]),
        f"| total | {sum(cpu[60.0].values()):.1f} | {sum(cpu[6.0].values()):.1f} |",
        "",
        f"Simulator: {WORKERS} worker processes, connect rate {CONNECT_RATE:g}/s; every device its own MQTT "
        "3.1.1 connection with a persistent session and a Last Will, one named shadow, JSON or "
        "MessagePack (half each). Connection storm times are from the simulator's start. The broker "
        "restart: mosquitto with persistence, the daemons on plain subscriptions (the default), kept in "
        "their persistent sessions across it. Heartbeats across it are counted as messages healthwatch "
        "handled, so a message the broker redelivers after the restart counts twice here (healthwatch "
        "does not count it twice: its `seq` window); `make chaos` accounts for every heartbeat by `seq`.",
    ]
    return "\n".join(rows)


def _online(url: str) -> None:
    obs = Observer(url, "fleet", "fleetops", time.time())
    obs.wait(lambda: len(obs.seen.online) >= DEVICES, 600, NEVER)
    obs.close()


def _restart(broker: Server, work: Path, sim: Sim) -> dict[str, Any]:
    """Stop the broker (it saves its sessions) and start it again on the same port and store."""
    port = broker.port
    broker.stop()
    t0, since = time.monotonic(), time.time()
    broker = start_mosquitto(work / "mqtt", port, persistence=True)
    obs = Observer(broker.url, "fleet", "fleetops", since)
    value = secrets.randbelow(10**6)
    s = obs.seen
    tokens: list[str] = []
    # shadow-sync answers once it is back; a bulk over every shadow may take longer than the 2 s
    # between tries, so any answered try will do (they all set the same value).
    while not any(t in s.answers for t in tokens):
        tokens.append(secrets.token_hex(4))
        obs.publish("fleetops/shadow/bulk", {"selector": {}, "state": {"desired": {"bench": value}},
                                             "clientToken": tokens[-1]})
        obs.wait(lambda: any(t in s.answers for t in tokens), 2, NEVER)
    obs.wait(lambda: len(s.online) >= DEVICES, 600, NEVER)
    online = time.monotonic() - t0
    obs.wait(lambda: sum(1 for r in s.reported.values() if r.get("bench") == value) >= DEVICES, 600, NEVER)
    reported = time.monotonic() - t0
    obs.close()
    return {"broker": broker, "online": online, "reported": reported}


if __name__ == "__main__":
    print(main())
