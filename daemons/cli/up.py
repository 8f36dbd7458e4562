"""`make run` / `fleet up`: the whole system on this machine, with a simulated fleet.

Starts redis-server and a broker (mosquitto, or the embedded amqtt with --broker amqtt) as
child processes, then every daemon and the simulator, prints how to talk to them, and stops
everything on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import secrets
import signal
import subprocess
import sys
import threading
from pathlib import Path

from daemons.cli.localstack import Server, start_amqtt, start_mosquitto, start_redis
from daemons.runtime.notify import ReadinessListener

DAEMONS = ("shadowsync", "otaplanner", "healthwatch", "daemons.api")


def _available(module: str) -> bool:
    # `python -m` runs a package through its __main__, a plain module as itself.
    try:
        spec = importlib.util.find_spec(module)
        if spec is None:
            return False
        if spec.submodule_search_locations is None:
            return True
        return importlib.util.find_spec(f"{module}.__main__") is not None
    except ModuleNotFoundError:
        return False


def _master_key(workdir: Path) -> str:
    path = workdir / "ota-master.key"
    if not path.exists():
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


def _wait_started(name: str, ready: ReadinessListener, child: subprocess.Popen[bytes], log: Path,
                  stop: threading.Event, timeout: float = 60.0) -> None:
    """Wait for a daemon's READY=1 (sd_notify: it is connected and subscribed)."""
    if not ready.wait_ready(timeout, alive=lambda: child.poll() is None and not stop.is_set()):
        print(f"{name} has not started yet; see {log}", file=sys.stderr)


def _console(config: Path, env: dict[str, str]) -> tuple[str, str]:
    """The console's URL and a new admin token (stored hashed in this run's Redis)."""
    import redis as redis_lib

    from daemons.api.app import public_url
    from daemons.api.auth import TokenStore
    from daemons.runtime.config import load_settings

    settings = load_settings("api", str(config), env)
    client = redis_lib.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        token = TokenStore(client).create("fleet-up-admin", "admin", ttl_days=7)["token"]
    finally:
        client.close()
    return public_url(settings), token


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fleet up", description=__doc__)
    parser.add_argument("--broker", choices=("mosquitto", "amqtt"), default="mosquitto")
    parser.add_argument("--devices", type=int, default=int(os.environ.get("FLEET_SIM_DEVICES", "50")))
    parser.add_argument("--interval", type=float, default=5.0, help="simulated heartbeat interval (s)")
    parser.add_argument("--workdir", default="var/run")
    parser.add_argument("--mqtt-port", type=int, default=11883, help="0: any free port")
    parser.add_argument("--redis-port", type=int, default=16379, help="0: any free port")
    args = parser.parse_args(argv)

    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    servers: list[Server] = []
    children: list[subprocess.Popen[bytes]] = []
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    try:
        redis = start_redis(workdir / "redis", args.redis_port)
        servers.append(redis)
        start_broker = start_amqtt if args.broker == "amqtt" else start_mosquitto
        broker = start_broker(workdir / "broker", args.mqtt_port)
        servers.append(broker)
        config = workdir / "fleet.toml"
        master_key = os.environ.get("FLEET_OTA_MASTER_KEY", _master_key(workdir))
        store = os.environ.get("FLEET_ARTIFACT_STORE", f"local:{workdir / 'artifacts'}")
        config.write_text(
            f'mqtt_url = "{broker.url}"\nredis_url = "{redis.url}"\n'
            f"heartbeat_interval_s = {max(1, int(args.interval))}\n"
            f'ota_master_key = "{master_key}"\nartifact_store = "{store}"\n')
        # One file for the daemons, the simulator and fleetctl alike.
        env = {**os.environ, "FLEET_CONFIG": str(config)}
        logs = workdir / "logs"
        logs.mkdir(exist_ok=True)
        started = []
        listeners: list[ReadinessListener] = []
        for name in DAEMONS:
            if not _available(name):
                continue
            log = (logs / f"{name}.log").open("wb")
            ready = ReadinessListener()
            listeners.append(ready)
            children.append(subprocess.Popen([sys.executable, "-m", name], env={**env, **ready.env()},
                                             stderr=log, stdout=log))
            started.append(name)
        # Devices and users come after the daemons have subscribed, so nothing is missed.
        for name, ready, child in zip(started, listeners, children, strict=True):
            _wait_started(name, ready, child, logs / f"{name}.log", stop)
            ready.close()
        sim_log = (logs / "simulator.log").open("wb")
        children.append(subprocess.Popen(
            [sys.executable, "-m", "daemons.sim.simulator", "--mqtt-url", broker.url,
             "--prefix", os.environ.get("FLEET_TOPIC_PREFIX", "fleet"),  # the daemons' prefix
             "--devices", str(args.devices), "--interval", str(args.interval)],
            env=env, stderr=sim_log, stdout=sim_log))
        port = broker.port
        console, token = _console(config, env)
        print(f"""
fleet is up: {args.broker} on 127.0.0.1:{port}, redis on 127.0.0.1:{redis.port}
daemons: {", ".join(started)}; simulated devices: {args.devices} (sim-0000 ...); logs in {logs}

Console:                 {console}/   (log in with the admin token below)
Admin token (shown once): {token}
HTTP API:                curl -H "Authorization: Bearer {token}" {console}/api/v1/devices

Watch everything:        mosquitto_sub -p {port} -t 'fleet/#' -t 'fleetops/#' -v
Set a desired value:     mosquitto_pub -p {port} -t fleet/sim-0001/shadow/update \\
                           -m '{{"state": {{"desired": {{"led": "blue"}}}}}}'
Read a shadow:           mosquitto_sub -p {port} -t fleet/sim-0001/shadow/get/accepted -C 1 & \\
                         mosquitto_pub -p {port} -t fleet/sim-0001/shadow/get -n
Fleet-wide desired:      mosquitto_pub -p {port} -t fleetops/shadow/bulk \\
                           -m '{{"selector": {{"hw": "esp32c3"}}, "state": {{"desired": {{"rate": 30}}}}}}'
Health of a device:      mosquitto_sub -p {port} -t 'fleet/+/health' -v
Metrics:                 curl -s 127.0.0.1:9101/metrics | grep fleet_
Live logs of a device:   mosquitto_sub -p {port} -t fleetops/debug/open/+ -C 1 & \\
                         mosquitto_pub -p {port} -t fleetops/debug/open \\
                           -m '{{"device_id": "sim-0001", "ttl_s": 600, "operator": "me"}}'
                         (open the "link" of the answer in a browser; devices publish on fleet/<id>/logs)
OTA, a staged rollout:   export FLEET_CONFIG={config}
                         head -c 200000 /dev/urandom > fw.bin
                         .venv/bin/fleetctl release publish fw.bin --version 1.1.0 --hw esp32c3 --hw esp32s3
                         mosquitto_sub -p {port} -t 'fleetops/ota/#' -v &
                         mosquitto_pub -p {port} -t fleetops/ota/rollouts/r1/command -m \\
                           '{{"action": "create", "version": "1.1.0", "stages": [10, 50, 100], "soak_s": 10,
                             "success_pct": 90, "max_failure_pct": 10, "min_devices_for_gate": 3}}'
                         (a version with "bad" in its name fails on the simulated devices: the rollout halts)
Ctrl-C stops everything.
""", flush=True)
        reported: set[int] = set()
        while not stop.wait(1.0):
            for child in children:
                if child.poll() is not None and child.pid not in reported:
                    reported.add(child.pid)
                    print(f"{child.args!s} exited ({child.returncode}); see {logs}",
                          file=sys.stderr)
        return 0
    finally:
        for child in reversed(children):
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
        for server in reversed(servers):
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
