"""The fleet simulator: seeded fault injection, and devices that ride out a broker restart."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from daemons.cli.localstack import start_mosquitto
from daemons.protocol.keys import device_password, parse_hex_key
from daemons.sim.faults import assign, parse_faults
from daemons.sim.fleet import device_vitals, fault_plan, parse_hw, parser
from daemons.sim.heartbeats import ambient
from tests.support import ROOT, Daemon, Probe, Received, env_for, free_port, need, wait_port

SPEC = "temp_drift=0.5%,heap_leak=0.5%,reboot_loop=0.2%,silent=0.2%,flaky_link=1%"


def test_fault_plan_is_a_function_of_devices_spec_and_seed():
    shares = parse_faults(SPEC)
    assert shares == {"temp_drift": 0.005, "heap_leak": 0.005, "reboot_loop": 0.002,
                      "silent_death": 0.002, "flaky_link": 0.01}
    plan = assign(10_000, shares, seed=7)
    assert plan == assign(10_000, shares, seed=7)
    assert plan != assign(10_000, shares, seed=8)
    assert Counter(plan.values()) == {"temp_drift": 50, "heap_leak": 50, "reboot_loop": 20,
                                      "silent_death": 20, "flaky_link": 100}
    args = parser().parse_args(["--devices", "1000", "--faults", SPEC, "--seed", "3"])
    plan_file = fault_plan(args)
    assert plan_file == fault_plan(args)
    assert {f["fault"]: f["expect"] for f in plan_file.values()} == {
        "temp_drift": "temp_drift", "heap_leak": "heap_leak", "reboot_loop": "reboot_loop",
        "silent_death": "offline", "flaky_link": None}


@pytest.mark.parametrize("spec", ["nosuch=1%", "temp_drift", "temp_drift=x", "temp_drift=120%",
                                  "temp_drift=60%,heap_leak=60%"])
def test_bad_fault_specs_are_refused_with_the_item(spec):
    with pytest.raises(ValueError, match="--faults"):
        parse_faults(spec)


def test_a_faulty_device_misbehaves_the_same_way_on_every_run():
    args = parser().parse_args(["--devices", "100", "--fault-after", "5", "--fault-severity", "10"])
    mix = parse_hw(args.hw)

    def temps(fault: str | None) -> list[float]:
        vitals, _, _ = device_vitals(args, 42, fault, mix)
        beats = [vitals.heartbeat(k * 60.0, ambient(k * 60.0), 0) for k in range(1, 60)]
        return [b["temp_c"] for b in beats if b is not None]

    assert temps("temp_drift") == temps("temp_drift")
    drift = temps("temp_drift")
    healthy = temps(None)
    # Same device, same noise: identical until the fault starts, then it runs away.
    assert drift[:4] == healthy[:4]
    assert drift[-1] - healthy[-1] > 10


def _sim(url: str, prefix: str, devices: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    return subprocess.Popen(
        [sys.executable, "-m", "daemons.sim", "--mqtt-url", url, "--prefix", prefix,
         "--devices", str(devices),
         "--interval", "1", "--faults", "", "--named-shadows", "", "--connect-rate", "200"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_devices_come_back_after_a_broker_restart_and_report_nothing_twice(tmp_path, redis, redis_server,
                                                                           prefixes):
    p, o = prefixes
    n = 40
    ids = {f"sim-{i:05d}" for i in range(n)}
    broker = start_mosquitto(tmp_path / "m1")
    sync = Daemon("shadowsync", env_for(redis_server, broker, p, o, FLEET_MQTT_CLIENT_ID="ss-sim")).start()
    sim = _sim(broker.url, p, n)
    reports: Counter[tuple[str, object]] = Counter()

    def fold(m: Received, online: set[str], since: float) -> None:
        device = m.topic.split("/")[1]
        if m.topic.endswith("/status") and m.body.get("online") and m.body.get("ts", 0) >= since:
            online.add(device)
        elif m.topic.endswith("/shadow/update/accepted"):
            value = m.body["state"].get("reported", {}).get("a")
            if value is not None:
                reports[(device, value)] += 1

    def watch(op: Probe, since: float, value: int, timeout: float = 60) -> None:
        """Until every device is online (status ts >= since) and has reported a = value."""
        online: set[str] = set()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if online == ids and all(reports[(d, value)] for d in ids):
                return
            with contextlib.suppress(TimeoutError):
                fold(op.wait(f"{p}/*", timeout=1), online, since)
        raise AssertionError(f"{len(online)} of {n} online, "
                             f"{sum(1 for d in ids if reports[(d, value)])} reported a={value}")

    def set_desired(op: Probe, value: int) -> None:
        for d in sorted(ids):
            op.publish(f"{p}/{d}/shadow/update", {"state": {"desired": {"a": value}}})

    try:
        op = Probe(broker.url).connect().subscribe(f"{p}/+/status", f"{p}/+/shadow/update/accepted")
        set_desired(op, 1)
        watch(op, 0, 1)
        op.close()

        broker.stop()  # no persistence: every session is gone, the devices must subscribe again
        restarted = time.time()
        broker = start_mosquitto(tmp_path / "m2", broker.port)
        op = Probe(broker.url).connect().subscribe(f"{p}/+/status", f"{p}/+/shadow/update/accepted")
        # A desired change made while the fleet is coming back (once shadow-sync is) reaches every device.
        for _attempt in range(40):
            with contextlib.suppress(TimeoutError):
                op.request(f"{p}/sim-00000/shadow/update", {"state": {"desired": {"a": 2}}}, timeout=1)
                break
        set_desired(op, 2)
        watch(op, int(restarted), 2)
        for m in op.drain(quiet=2.0):
            fold(m, set(), 0)
        op.close()
        assert sim.poll() is None
        # Each value was reported once per device: nothing again after the reconnect.
        assert len(reports) == 2 * n
        assert set(reports.values()) == {1}, [k for k, c in reports.items() if c > 1][:5]
    finally:
        sim.send_signal(signal.SIGTERM)
        code = sim.wait(20)
        sync.kill()
        broker.stop()
    assert code == 0


def test_with_a_fleet_secret_each_device_logs_in_as_itself(tmp_path):
    """Device i's account is its id with keys.device_password(secret, id): a broker that knows only
    those accounts (mosquitto with a password file, anonymous refused) lets every device in."""
    secret = "5e" * 16
    ids = [f"sim-{i:05d}" for i in range(5)]
    passwd = tmp_path / "passwd"
    passwd.touch()
    for d in ids:
        subprocess.run([need("mosquitto_passwd"), "-b", str(passwd), d,
                        device_password(parse_hex_key(secret), d)], check=True, capture_output=True)
    subprocess.run([need("mosquitto_passwd"), "-b", str(passwd), "operator", "op-secret"], check=True,
                   capture_output=True)
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {passwd}\n"
                    # As root, mosquitto would read the file as user mosquitto, who cannot enter tmp_path.
                    "persistence false\nuser root\n")
    broker = subprocess.Popen([need("mosquitto"), "-c", str(conf)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    sim = None
    try:
        wait_port(port)
        url = f"mqtt://127.0.0.1:{port}"
        op = Probe(url)
        op.client.username_pw_set("operator", "op-secret")
        op.connect().subscribe("fl/+/status")
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
        sim = subprocess.Popen(
            [sys.executable, "-m", "daemons.sim", "--mqtt-url", url, "--prefix", "fl", "--devices", "5",
             "--faults", "", "--interval", "5"],
            cwd=ROOT, env={**env, "FLEET_SECRET": secret}, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        online = set()
        while online != set(ids):
            m = op.wait("fl/*/status", lambda m: m.body.get("online") is True, timeout=20)
            online.add(m.topic.split("/")[1])
        op.close()
    finally:
        if sim is not None:
            sim.send_signal(signal.SIGTERM)
            sim.wait(20)
        broker.terminate()
        broker.wait(10)


def test_each_connection_announces_a_fresh_status_ts():
    # PROTOCOL §4 (issue 11): shadow-sync tells a reconnect from a redelivered retained status by
    # the ts, so two connections within one second still carry two different ts.
    import asyncio
    import random
    from concurrent.futures import ThreadPoolExecutor
    from types import SimpleNamespace

    from daemons.sim.device import Device, FleetContext
    from daemons.sim.heartbeats import make_device

    loop = asyncio.new_event_loop()
    with ThreadPoolExecutor(1) as pool:
        ctx = FleetContext(loop, pool, lambda client: None, "mqtt://127.0.0.1:9", "fl", 5.0, 12.0,
                           time.time(), loop.time(), ())
        device = Device(ctx, make_device(0, random.Random(1)), None, "json", None, None, random.Random(1))
        sent: list[tuple[str, dict]] = []
        device._send = lambda suffix, body, qos=1, retain=False: sent.append((suffix, body)) or 0  # type: ignore[method-assign]
        device._tick = lambda: None  # type: ignore[method-assign]
        for _ in range(3):  # three connections in the same second
            device._on_connect(device.client, None, SimpleNamespace(session_present=True),
                               SimpleNamespace(is_failure=False), None)
        device.client.loop_stop()
    loop.close()
    stamps = [body["ts"] for suffix, body in sent if suffix == "status"]
    assert len(stamps) == 3 and stamps[0] < stamps[1] < stamps[2]
