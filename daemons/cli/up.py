"""`make run` / `fleet up`: the whole system on this machine, a simulated fleet, and a live scenario.

Starts redis-server and a broker (mosquitto, or the embedded amqtt with --broker amqtt) unless given
--redis-url / --mqtt-url, then every daemon (with the local artifact store), then the fleet simulator
(1,000 devices, each its own MQTT connection), and plays the scenario of daemons.cli.scenario live in
the terminal. Then it keeps running until Ctrl-C or SIGTERM, which stop every child. A child that
dies is reported at once with the tail of its log.
"""

from __future__ import annotations

import argparse
import fcntl
import importlib.util
import json
import os
import resource
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING

from rich.console import Console

from daemons.cli import localauth
from daemons.cli.localstack import Server, start_redis
from daemons.runtime.notify import ReadinessListener

if TYPE_CHECKING:
    from daemons.cli.observe import Observer

# Started in this order, each awaited (its READY=1) before the devices come.
DAEMONS = ("shadowsync", "otaplanner", "healthwatch", "daemons.api")
ACCOUNTS = {"daemons.api": "api"}  # broker account of a daemon, when not its name
SIM_FAULTS = "temp_drift=0.5%,heap_leak=0.5%,reboot_loop=0.2%,silent=0.2%,flaky_link=1%"


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


def raise_nofile() -> tuple[int, int]:
    """Take the hard RLIMIT_NOFILE for this process and its children (one socket per device in the
    broker and the simulator); raising the hard limit itself needs root (see README)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


class Children:
    """Child processes with a log file each; a watcher reports a death at once, with its log's tail."""

    def __init__(self, env: dict[str, str], logs: Path, console: Console, stop: threading.Event) -> None:
        self.env, self.logs, self.console, self.stop = env, logs, console, stop
        self.procs: list[tuple[str, subprocess.Popen[bytes], Path]] = []
        self._files: list[IO[bytes]] = []
        threading.Thread(target=self._watch, daemon=True).start()

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None
              ) -> subprocess.Popen[bytes]:
        log = self.logs / f"{name}.log"
        f = log.open("wb")  # fresh each run
        self._files.append(f)
        proc = subprocess.Popen(argv, env={**self.env, **(env or {})}, stdout=f, stderr=f)
        self.procs.append((name, proc, log))
        return proc

    def start_daemons(self, names: list[str], accounts: dict[str, str], timeout: float = 60.0) -> None:
        """Start the daemons (each with its broker account when `accounts` has one), then wait for
        each one's READY=1 (sd_notify: connected and subscribed)."""
        started = []
        for name in names:
            ready = ReadinessListener()
            env = ready.env()
            account = ACCOUNTS.get(name, name)
            if account in accounts:
                env.update(FLEET_MQTT_USERNAME=account, FLEET_MQTT_PASSWORD=accounts[account])
            started.append((name, ready, self.start(name, [sys.executable, "-m", name], env)))
        for name, ready, proc in started:

            def alive(proc: subprocess.Popen[bytes] = proc) -> bool:
                return proc.poll() is None and not self.stop.is_set()

            if not ready.wait_ready(timeout, alive=alive):
                self.console.print(f"[yellow]{name} has not started yet; see {self.logs / name}.log")
            ready.close()

    def _watch(self) -> None:
        reported: set[int] = set()
        while not self.stop.wait(0.5):
            for name, proc, log in list(self.procs):
                if proc.poll() is not None and proc.pid not in reported:
                    reported.add(proc.pid)
                    tail = log.read_text(errors="replace").splitlines()[-15:]
                    self.console.print(f"[bold red]{name} exited ({proc.returncode}); last lines of {log}:")
                    self.console.print("\n".join(tail), markup=False, highlight=False)

    def stop_all(self) -> None:
        for _, proc, _ in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for _, proc, _ in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        for f in self._files:
            f.close()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fleet up", description=__doc__.split("\n\n")[0])
    p.add_argument("--broker", choices=("mosquitto", "amqtt"), default="mosquitto")
    p.add_argument("--mqtt-url", help="use this broker instead of starting one")
    p.add_argument("--redis-url", help="use this Redis instead of starting one")
    p.add_argument("--devices", type=int, default=int(os.environ.get("FLEET_SIM_DEVICES", "1000")))
    p.add_argument("--interval", type=float, default=2.0,
                   help="heartbeat seconds of the simulated devices (one heartbeat = one simulated minute)")
    p.add_argument("--sim-workers", type=int, default=1, help="simulator processes")
    p.add_argument("--faults", default=SIM_FAULTS, help="faults the simulator injects (fleet sim --help)")
    p.add_argument("--hw", default="esp32-c3,esp32-s3", help="hardware mix of the simulated fleet")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--scenario", choices=("full", "none"), default="full")
    p.add_argument("--summary-json", type=Path, help="write the scenario's outcome here")
    p.add_argument("--workdir", default="var/run")
    p.add_argument("--mqtt-port", type=int, default=11883, help="0: any free port")
    p.add_argument("--redis-port", type=int, default=16379, help="0: any free port")
    return p


def _console(config: Path, env: dict[str, str]) -> tuple[str, str]:
    """The console's URL and a new admin token (stored hashed in this run's Redis)."""
    from daemons.api.app import public_url
    from daemons.api.auth import TokenStore
    from daemons.runtime.config import load_settings
    from daemons.runtime.redisclient import connect_redis

    settings = load_settings("api", str(config), env)
    client = connect_redis(settings)
    try:
        token = TokenStore(client).create("fleet-up-admin", "admin", ttl_days=7)["token"]
    finally:
        client.close()
    return public_url(settings), token


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    console = Console()
    workdir = Path(args.workdir).resolve()
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    # One `fleet up` per workdir: a second one would overwrite the first's config, passwords and logs.
    lock = (workdir / "fleet-up.lock").open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        print(f"fleet up: another fleet up is running in {workdir} (pid {lock.read().strip() or '?'}); "
              "stop it, or pass --workdir for a second one", file=sys.stderr)
        return 2
    lock.seek(0)
    lock.truncate()
    lock.write(str(os.getpid()))
    lock.flush()
    servers: list[Server] = []
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    nofile = raise_nofile()
    children: Children | None = None
    obs: Observer | None = None
    try:
        redis_url = args.redis_url
        if not redis_url:
            servers.append(start_redis(workdir / "redis", args.redis_port))
            redis_url = servers[-1].url
        mqtt_url = args.mqtt_url
        accounts: dict[str, str] = {}  # broker account -> password (of the broker started here)
        secret_env: dict[str, str] = {}
        if not mqtt_url:
            # Authentication on, with either broker (docs/IDENTITY.md): the run's fleet secret and
            # accounts; mosquitto's password file lists the simulated devices.
            auth = localauth.prepare(workdir)
            servers.append(localauth.start_broker(args.broker, workdir / "broker", args.mqtt_port, auth,
                                                  localauth.sim_device_ids(args.devices)))
            accounts, secret_env = auth.accounts, {"FLEET_SECRET": auth.secret}
            mqtt_url = servers[-1].url
        config = workdir / "fleet.toml"
        master_key = os.environ.get("FLEET_OTA_MASTER_KEY", _master_key(workdir))
        store = os.environ.get("FLEET_ARTIFACT_STORE", f"local:{workdir / 'artifacts'}")
        operator = (f'mqtt_username = "operator"\nmqtt_password = "{accounts["operator"]}"\n'
                    if "operator" in accounts else "")  # fleetctl and the scenario's observer
        # The embedded broker speaks 3.1.1 only: saying so spares each daemon's "auto" a 3 s wait for
        # the MQTT 5 CONNACK amqtt never sends.
        protocol = 'mqtt_protocol = "3.1.1"\n' if args.broker == "amqtt" and not args.mqtt_url else ""
        config.write_text(
            f'mqtt_url = "{mqtt_url}"\nredis_url = "{redis_url}"\n{protocol}'
            f"heartbeat_interval_s = {max(1, round(args.interval))}\n"
            f'ota_master_key = "{master_key}"\nartifact_store = "{store}"\n{operator}')
        # One file for the daemons, the simulator and fleetctl alike.
        env = {**os.environ, "FLEET_CONFIG": str(config)}
        children = Children(env, logs, console, stop)
        started = [name for name in DAEMONS if _available(name)]
        # Devices and users come after the daemons have subscribed, so nothing is missed.
        children.start_daemons(started, accounts)
        since = time.time()
        plan_file = workdir / "fault-plan.json"
        plan_file.unlink(missing_ok=True)  # the simulator writes this run's
        # The scenario's observer subscribes before any device connects: a device reads its shadow
        # once per connection, and an answer it missed would never come again.
        obs = _observer(config, mqtt_url, since) if args.scenario == "full" else None
        children.start("simulator", [
            sys.executable, "-m", "daemons.sim", "--mqtt-url", mqtt_url, "--devices", str(args.devices),
            "--interval", str(args.interval), "--faults", args.faults, "--hw", args.hw,
            "--seed", str(args.seed), "--workers", str(args.sim_workers), "--plan", str(plan_file),
            "--fault-severity", "20", "--connect-rate", "1000"], secret_env)
        console.print(f"[bold]fleet is up[/]: {args.broker if not args.mqtt_url else 'broker'} {mqtt_url}, "
                      f"redis {redis_url}; daemons: {', '.join(started)}; {args.devices} simulated devices "
                      f"(sim-00000 ...), heartbeat every {args.interval:g} s; open files {nofile[0]}; "
                      f"logs in {logs}")
        console_url, token = _console(config, env)
        console.print(f"[bold]Console[/]: {console_url}/  (admin token, shown once: {token})\n"
                      f"HTTP API: curl -H 'Authorization: Bearer {token}' {console_url}/api/v1/devices",
                      highlight=False)
        if obs is not None and not stop.is_set():
            _play(args, console, obs, mqtt_url, config, workdir, plan_file, stop)
        login = f'-u operator -P "$(cat {workdir / "operator.password"})" ' if accounts else ""
        console.print(f"Watch everything: mosquitto_sub -h {mqtt_url.split('://')[1].replace(':', ' -p ')} "
                      f"{login}-t 'fleet/#' -t 'fleetops/#' -v\nCtrl-C stops everything.", highlight=False)
        while not stop.wait(1.0):
            pass
        return 0
    finally:
        if obs is not None:
            obs.close()
        if children is not None:
            children.stop_all()
        for server in reversed(servers):
            server.stop()


def _observer(config: Path, mqtt_url: str, since: float) -> Observer:
    from daemons.cli.observe import Observer
    from daemons.runtime.config import load_settings

    settings = load_settings("fleet-up", str(config))
    return Observer(mqtt_url, settings.topic_prefix, settings.ops_prefix, since, settings.mqtt_username,
                    settings.mqtt_password)


def _play(args: argparse.Namespace, console: Console, obs: Observer, mqtt_url: str, config: Path,
          workdir: Path, plan_file: Path, stop: threading.Event) -> None:
    from daemons.cli.scenario import Scenario, summary_table

    deadline = time.monotonic() + 30
    while not plan_file.exists() and time.monotonic() < deadline and not stop.wait(0.1):
        pass
    plan = json.loads(plan_file.read_text()) if plan_file.exists() else {}
    scenario = Scenario(obs, console, config, workdir, args.devices, [h.split("=")[0] for h in
                        args.hw.split(",") if h], args.interval, plan, stop)
    steps = scenario.run()
    console.print(summary_table(steps))
    if args.summary_json:
        args.summary_json.write_text(json.dumps({
            "devices": args.devices, "interval_s": args.interval, "broker": args.broker, "mqtt_url": mqtt_url,
            "ok": len(steps) == 6 and all(s.ok for s in steps),
            "steps": [{"step": s.number, "name": s.name, "ok": s.ok, "summary": s.summary, **s.facts}
                      for s in steps]}, indent=1, default=str))


if __name__ == "__main__":
    sys.exit(main())
