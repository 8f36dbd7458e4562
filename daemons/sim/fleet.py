"""`fleet sim` / `python -m daemons.sim`: N simulated devices, each on its own MQTT connection.

One asyncio loop drives every connection of a process through paho's external-loop API (each
socket registered with `add_reader`/`add_writer`, `loop_misc` once a second for keepalives): paho is
already the project's MQTT client, and measured on this machine one loop carries a few thousand
devices at a 6 s heartbeat per core. `--workers N` splits the fleet over N processes (device i goes to
worker i mod N) when one core is not enough. Point it at any deployment for a load test.

Devices are `{id-prefix}-00000` .. in order; everything random (hardware, encoding, vitals, faults,
jitter) is seeded, so the same arguments give the same fleet. Counters go to stderr as JSON lines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fnmatch
import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

from daemons.protocol.codec import Encoding
from daemons.protocol.errors import ConfigError, FleetError
from daemons.protocol.keys import device_password, parse_hex_key
from daemons.runtime.mqtt import BrokerAddress
from daemons.runtime.prefixes import probe_prefix
from daemons.sim.device import Device, FleetContext
from daemons.sim.device_model import DeviceModel
from daemons.sim.faults import DIAGNOSIS, assign, parse_faults
from daemons.sim.heartbeats import FAULTS, SimDevice, make_device

DEFAULT_FAULTS = "temp_drift=0.5%,heap_leak=0.5%,reboot_loop=0.2%,silent=0.2%,flaky_link=1%"


class Binding:
    """paho's external-loop API on one asyncio loop (the pattern of paho's examples/loop_asyncio.py)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.clients: set[paho.Client] = set()

    def __call__(self, c: paho.Client) -> None:
        c.on_socket_open = self._open
        c.on_socket_close = self._close
        c.on_socket_register_write = self._want_write
        c.on_socket_unregister_write = self._wrote

    def _open(self, client: paho.Client, _u: Any, sock: Any) -> None:
        self.loop.add_reader(sock, client.loop_read)
        self.clients.add(client)

    def _want_write(self, client: paho.Client, _u: Any, sock: Any) -> None:
        self.loop.add_writer(sock, client.loop_write)

    def _wrote(self, _c: paho.Client, _u: Any, sock: Any) -> None:
        self.loop.remove_writer(sock)

    def _close(self, client: paho.Client, _u: Any, sock: Any) -> None:
        self.loop.remove_reader(sock)
        self.loop.remove_writer(sock)
        self.clients.discard(client)

    async def misc(self) -> None:
        """Keepalive pings and lost-PINGRESP detection for every connection, once a second."""
        while True:
            for c in list(self.clients):
                c.loop_misc()
            await asyncio.sleep(1.0)


def say(event: dict[str, Any]) -> None:
    """One JSON line on stderr, in one write: the workers share the pipe, lines must not interleave."""
    os.write(2, (json.dumps(event) + "\n").encode())


def parse_hw(spec: str) -> list[tuple[str, float]]:
    """`esp32-c3=70,esp32-s3=30` (or just names, equal weights) → [(hw, weight)]; ValueError if bad."""
    mix = []
    for item in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, weight = item.partition("=")
        try:
            w = float(weight.rstrip("%")) if sep else 1.0
        except ValueError:
            raise ValueError(f"--hw: {item!r}: weight must be a number") from None
        if not name or w < 0:
            raise ValueError(f"--hw: {item!r}: expected name or name=weight")
        mix.append((name.strip(), w))
    if not mix or sum(w for _, w in mix) <= 0:
        raise ValueError("--hw: at least one hardware type with a positive weight")
    return mix


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fleet sim", description=__doc__.split("\n\n")[0])
    p.add_argument("--mqtt-url", default=os.environ.get("FLEET_MQTT_URL", "mqtt://127.0.0.1:1883"))
    p.add_argument("--prefix", default=os.environ.get("FLEET_TOPIC_PREFIX", "fleet"), help="topic prefix")
    p.add_argument("--devices", type=int, default=1000)
    p.add_argument("--id-prefix", default="sim", help="device ids are <id-prefix>-00000, -00001, ...")
    p.add_argument("--first", type=int, default=0, help="index of the first device")
    p.add_argument("--hw", default="esp32-c3,esp32-s3", help="hardware mix: name[=weight],...")
    p.add_argument("--fw", default="1.0.0", help="firmware version the devices start on")
    p.add_argument("--interval", type=float, default=60.0,
                   help="heartbeat seconds; also the time scale: one heartbeat is one simulated minute")
    p.add_argument("--connect-rate", type=float, default=500.0, help="new connections per second")
    p.add_argument("--faults", default=DEFAULT_FAULTS, help="fault=share,... (deterministic, seeded)")
    p.add_argument("--fault-after", type=float, default=10.0, help="heartbeats before vital faults start")
    p.add_argument("--fault-severity", type=float, default=1.0,
                   help="multiply drift and leak rates (a demo wants them found in fewer heartbeats)")
    p.add_argument("--bad-fw", default="*bad*", help="glob of versions that fail their self-test")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json-share", type=float, default=0.5, help="share of devices speaking JSON (else "
                                                                 "MessagePack)")
    p.add_argument("--named-shadows", default="config", help="named shadows each device keeps (comma list)")
    p.add_argument("--fleet-secret-file", help="hex fleet secret: per-device passwords (else FLEET_SECRET)")
    p.add_argument("--workers", type=int, default=1, help="processes to split the fleet over")
    p.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    p.add_argument("--ota-threads", type=int, default=16, help="concurrent OTA downloads per process")
    p.add_argument("--bad-fw-share", type=float, default=0.5,
                   help="share of devices on which a --bad-fw version fails (a bad release rarely fails "
                        "everywhere: the others keep it, so a rollback has devices to return)")
    p.add_argument("--plan", type=Path, help="write the fault plan here: JSON {device id: {fault, expect}}")
    p.add_argument("--stats-every", type=float, default=5.0, help="seconds between counter lines")
    return p


def fault_plan(args: argparse.Namespace) -> dict[str, dict[str, str | None]]:
    """{device id: {"fault", "expect"}} of this fleet, `expect` the health reason (or status) that
    diagnoses the fault: what `--plan` writes, recomputable from the arguments."""
    plan = assign(args.devices, parse_faults(args.faults), args.seed)
    return {device_id(args, i): {"fault": fault, "expect": DIAGNOSIS[fault]}
            for i, fault in sorted(plan.items())}


def device_id(args: argparse.Namespace, i: int) -> str:
    return f"{args.id_prefix}-{args.first + i:05d}"


def _raise_nofile() -> None:
    # One socket per device: take the hard limit (a larger one needs root or limits.conf).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _verifiers() -> Any:
    """The OTA verifier factory from the fleet's configuration, or None (OTA off) without keys."""
    from daemons.runtime.config import load_settings
    from otaplanner.signing import Signer

    try:
        return Signer.from_settings(load_settings("simulator")).verifier
    except Exception as exc:  # no key configured: the devices ignore jobs
        say({"event": "ota_disabled", "reason": str(exc)})
        return None


def _secret(args: argparse.Namespace) -> bytes | None:
    path = args.fleet_secret_file
    text = Path(path).read_text() if path else os.environ.get("FLEET_SECRET")
    return parse_hex_key(text) if text else None


def device_vitals(args: argparse.Namespace, i: int, fault: str | None, mix: list[tuple[str, float]]
                  ) -> tuple[SimDevice, Encoding, random.Random]:
    """Device i's vitals model (daemons.sim.heartbeats), encoding and random source: a function of
    (seed, i, fault) only, so every run and every worker makes the same device."""
    rng = random.Random(f"{args.seed}:{i}")
    vital = fault if fault in FAULTS else None
    vitals = make_device(i, rng, vital, args.fault_after * 60.0 if vital else float("inf"))
    vitals.device_id = device_id(args, i)
    vitals.hw = rng.choices([h for h, _ in mix], [w for _, w in mix])[0]
    vitals.fw = args.fw
    vitals.fault_rate *= args.fault_severity
    encoding: Encoding = "json" if rng.random() < args.json_share else "msgpack"
    return vitals, encoding, rng


def build(args: argparse.Namespace, ctx: FleetContext, worker: int, workers: int) -> list[Device]:
    plan = assign(args.devices, parse_faults(args.faults), args.seed)
    mix = parse_hw(args.hw)
    verifier = _verifiers()
    secret = _secret(args)
    bad, share = args.bad_fw, args.bad_fw_share

    def selftest_fails(device: str, manifest: dict[str, Any]) -> bool:
        version = str(manifest.get("version", ""))
        if not fnmatch.fnmatchcase(version, bad):
            return False
        # Which devices fail is fixed by (seed, device, version), like a hardware-dependent bug.
        return bool(random.Random(f"{args.seed}:{device}:{version}").random() < share)

    devices = []
    for i in range(worker, args.devices, workers):
        vitals, encoding, rng = device_vitals(args, i, plan.get(i), mix)
        model = None
        if verifier is not None:
            model = DeviceModel(vitals.device_id, vitals.hw, args.fw, verifier(vitals.device_id),
                                selftest_fails=selftest_fails)
        password = device_password(secret, vitals.device_id) if secret else None
        devices.append(Device(ctx, vitals, model, encoding, plan.get(i), password, rng))
    return devices


async def run(args: argparse.Namespace, worker: int, workers: int) -> None:
    loop = asyncio.get_running_loop()
    binding = Binding(loop)
    ctx = FleetContext(
        loop=loop, executor=ThreadPoolExecutor(args.ota_threads, thread_name_prefix="ota"), bind=binding,
        url=args.mqtt_url, prefix=args.prefix, interval_s=args.interval, scale=60.0 / args.interval,
        epoch=time.time(), started=loop.time(),
        named_shadows=tuple(n for n in args.named_shadows.split(",") if n))
    devices = build(args, ctx, worker, workers)
    misc = loop.create_task(binding.misc())
    rate = max(args.connect_rate / workers, 1e-3)
    t0 = loop.time()
    for k, d in enumerate(devices):
        at = t0 + k / rate
        loop.call_at(at, d.connect)
        loop.call_at(at + d.rng.uniform(0, args.interval), d.beat)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    say({"event": "started", "worker": worker, "devices": len(devices)})
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), args.stats_every)
        s = ctx.stats
        say({"event": "stats", "worker": worker, "devices": len(devices), "online": s.online,
             "connects": s.connects, "disconnects": s.disconnects, "sent": s.sent,
             "deltas_applied": s.deltas_applied, "jobs": s.jobs})
    ctx.stopping = True
    for d in devices:
        d.stop()
    deadline = loop.time() + 5
    while binding.clients and loop.time() < deadline:
        await asyncio.sleep(0.05)
    misc.cancel()
    ctx.executor.shutdown(wait=False, cancel_futures=True)


def _spawn_workers(argv: list[str], workers: int) -> int:
    children = [subprocess.Popen([sys.executable, "-m", "daemons.sim", *argv, "--worker", str(k)])
                for k in range(workers)]

    def forward(signum: int, _frame: Any) -> None:
        for c in children:
            if c.poll() is None:
                c.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    return max(c.wait() for c in children)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = parser()
    args = p.parse_args(argv)
    try:
        plan = fault_plan(args)
        parse_hw(args.hw)
        _secret(args)
        BrokerAddress.parse(args.mqtt_url)
    except (ValueError, OSError, FleetError) as exc:
        p.error(str(exc))
    if (args.devices < 0 or args.interval <= 0 or args.workers < 1 or not 0 <= args.json_share <= 1
            or not 0 <= args.bad_fw_share <= 1):
        p.error("--devices >= 0, --interval > 0, --workers >= 1, --json-share and --bad-fw-share in [0, 1]")
    if args.prefix.startswith("$") and args.worker is None:
        try:  # a '$' prefix the broker drops (amqtt) is refused here, not found as a silent fleet
            probe_prefix(args.mqtt_url, args.prefix, "--prefix")
        except ConfigError as exc:
            p.error(str(exc))
    _raise_nofile()
    if args.worker is None:
        if args.plan is not None:
            args.plan.write_text(json.dumps(plan, indent=1))
        if args.workers > 1:
            return _spawn_workers(argv, args.workers)
    asyncio.run(run(args, args.worker or 0, args.workers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
