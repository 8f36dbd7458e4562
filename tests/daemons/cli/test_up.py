"""`make run` (fleet up): the whole system, 200 simulated devices on their own connections, the six
scenario steps succeeding as the system's own topics show them (mosquitto, shipped config: authentication
on); the embedded broker with a smaller fleet; SIGTERM stops it all."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading

import httpx
import paho.mqtt.client as paho
import pytest

from tests.support import ROOT, Probe, free_port

DEVICES = 200


def fleet_up(tmp_path, *args: str) -> tuple[subprocess.Popen[str], list[str], threading.Event]:
    """`fleet up` on free ports in tmp_path: the process, its output lines so far, and an event set
    once it says it is up ("Ctrl-C stops everything")."""
    env = {**os.environ, "FLEET_METRICS_PORT": "0", "FLEET_ARTIFACT_HTTP_PORT": str(free_port()),
           "FLEET_API_PORT": str(free_port()), "COLUMNS": "200"}
    up = subprocess.Popen(
        [sys.executable, "-m", "daemons.cli.up", "--workdir", str(tmp_path), "--mqtt-port", "0",
         "--redis-port", "0", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert up.stdout is not None
        for line in up.stdout:
            lines.append(line)
            if "Ctrl-C stops everything" in line:
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    return up, lines, ready


def test_fleet_up_plays_the_scenario_on_a_simulated_fleet(tmp_path):
    summary = tmp_path / "summary.json"
    up, lines, ready = fleet_up(
        tmp_path, "--devices", str(DEVICES), "--interval", "0.5", "--summary-json", str(summary),
        # Enough faulty devices that each kind shows in a fleet of 200 (seeded: the same every run).
        "--faults", "temp_drift=2%,heap_leak=2%,reboot_loop=2%,silent=1%,flaky_link=2%")
    try:
        assert ready.wait(150), "".join(lines[-40:])
        text = "".join(lines)
        assert "exited" not in text, text
        result = json.loads(summary.read_text())
        steps = {s["step"]: s for s in result["steps"]}
        assert [s["ok"] for s in result["steps"]] == [True] * 6, text
        # (1) every device announced itself on its own status topic, read its shadow, and healthwatch
        # scored each.
        assert steps[1]["online"] == steps[1]["shadows_read"] == steps[1]["health_published"] == DEVICES
        # (2) the fleet-wide change: every online device reported the value back.
        s2 = steps[2]
        assert s2["matched"] == DEVICES and s2["converged"] == s2["online"] >= DEVICES - 4
        assert 0 <= s2["t99_s"] <= s2["t100_s"]
        # (3) the good release went through every stage and completed.
        assert steps[3]["state"] == "completed" and steps[3]["stages_seen"][-1] == 100
        assert len(steps[3]["stages_seen"]) >= 3
        # (4) the bad release halted by itself in its first stage, and rollback returned its devices.
        s4 = steps[4]
        assert s4["state"] == "halted" and s4["halted_in_stage"] == 1 and "failure gate" in s4["reason"]
        assert s4["updated"] > 0 and s4["rolled_back"] == s4["updated"]
        assert s4["rollback_devices_report_good"] == s4["updated"]
        # (5) every device with a vital fault was flagged with the reason that names it.
        s5 = steps[5]
        assert s5["right_reason"] == s5["expected"] == 14
        for fault in ("temp_drift", "heap_leak", "reboot_loop", "silent_death"):
            assert s5["faults"][fault]["right_reason"] == s5["faults"][fault]["injected"] > 0
        # (6) log lines came through the debug link.
        assert len(steps[6]["lines"]) == 3 and steps[6]["link"].startswith("http://")

        # The console's URL and an admin token are printed; the API answers with that token.
        url, token = re.search(r"Console: (http://\S+)/ +\(admin token, shown once: (\S+)\)", text).groups()  # type: ignore[union-attr]
        listed = httpx.get(f"{url}/api/v1/devices", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert listed.status_code == 200 and listed.json()["total"] == DEVICES, listed.text

        # The retained rollout statuses say the same to any operator who looks now.
        port = int(re.search(r"mqtt://127\.0\.0\.1:(\d+)", text).group(1))  # type: ignore[union-attr]
        auth = ("operator", (tmp_path / "operator.password").read_text())  # authentication is on
        operator = Probe(f"mqtt://127.0.0.1:{port}", auth=auth).connect()
        operator.subscribe("fleetops/ota/rollouts/+/status")
        assert operator.wait("fleetops/ota/rollouts/canary-good/status").body["state"] == "completed"
        assert operator.wait("fleetops/ota/rollouts/canary-bad/status").body["state"] == "halted"
        operator.close()
    finally:
        up.send_signal(signal.SIGTERM)
        code = up.wait(60)
    assert code == 0


def test_fleet_up_on_the_embedded_broker_logs_everyone_in(tmp_path):
    """--broker amqtt: the devices log in with their derived passwords, the daemons with their accounts
    (shadow-sync answers), and an anonymous client is refused."""
    devices = 30
    up, lines, ready = fleet_up(tmp_path, "--broker", "amqtt", "--devices", str(devices), "--interval", "1",
                                "--scenario", "none")
    try:
        assert ready.wait(120), "".join(lines[-40:])
        text = "".join(lines)
        assert "exited" not in text, text
        url = re.search(r"mqtt://127\.0\.0\.1:\d+", text).group(0)  # type: ignore[union-attr]
        auth = ("operator", (tmp_path / "operator.password").read_text())
        operator = Probe(url, protocol=paho.MQTTv311, auth=auth)
        operator.connect().subscribe("fleet/+/status", "fleet/sim-00001/shadow/get/+")
        online = set()
        while len(online) < devices:
            m = operator.wait("fleet/*/status", lambda m: m.body.get("online") is True, timeout=60)
            online.add(m.topic.split("/")[1])
        operator.publish("fleet/sim-00001/shadow/get", {"clientToken": "up"})  # shadow-sync answers
        operator.wait("fleet/sim-00001/shadow/get/*", lambda m: m.body.get("clientToken") == "up")
        operator.close()
        anonymous = Probe(url, protocol=paho.MQTTv311)
        with pytest.raises(TimeoutError):
            anonymous.connect()
    finally:
        up.send_signal(signal.SIGTERM)
        code = up.wait(60)
    assert code == 0


def test_a_child_that_dies_is_reported_at_once_with_its_log_tail(tmp_path):
    import io
    import time

    from rich.console import Console

    from daemons.cli.up import Children

    out = io.StringIO()
    stop = threading.Event()
    children = Children(dict(os.environ), tmp_path, Console(file=out, width=200), stop)
    try:
        code = "import sys; print('disk full', flush=True); sys.exit(3)"
        children.start("doomed", [sys.executable, "-c", code])
        deadline = time.monotonic() + 10
        while "exited" not in out.getvalue() and time.monotonic() < deadline:
            stop.wait(0.1)
        assert "doomed exited (3)" in out.getvalue() and "disk full" in out.getvalue()
    finally:
        stop.set()
        children.stop_all()


def test_fleet_dispatches_up_and_sim_and_refuses_the_rest():
    from daemons.cli.fleet import main

    assert main([]) == 2
    assert main(["nosuch"]) == 2
    sim = subprocess.run([sys.executable, "-m", "daemons.cli.fleet", "sim", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert sim.returncode == 0 and "--connect-rate" in sim.stdout
    broker = subprocess.run([sys.executable, "-m", "daemons.cli.fleet", "broker", "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert broker.returncode == 0 and "FLEET_SECRET" in broker.stdout


def test_a_second_fleet_up_in_the_same_workdir_is_refused(tmp_path):
    """Two `fleet up` in one workdir would overwrite each other's config and passwords: refused."""
    import fcntl

    with (tmp_path / "fleet-up.lock").open("a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("4242")
        held.flush()
        done = subprocess.run([sys.executable, "-m", "daemons.cli.up", "--workdir", str(tmp_path)],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "another fleet up is running" in done.stderr and "4242" in done.stderr
    assert not (tmp_path / "fleet.toml").exists(), "nothing of the first run is touched"
