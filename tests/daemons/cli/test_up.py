"""`make run` (fleet up): the whole system comes up, a simulated device converges, SIGTERM stops it all."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading

import httpx

from tests.support import ROOT, Probe, free_port


def test_fleet_up_runs_the_system_with_a_simulated_fleet(tmp_path):
    env = {**os.environ, "FLEET_METRICS_PORT": "0", "FLEET_ARTIFACT_HTTP_PORT": str(free_port()),
           "FLEET_API_PORT": str(free_port())}
    up = subprocess.Popen(
        [sys.executable, "-m", "daemons.cli.up", "--devices", "3", "--interval", "1",
         "--workdir", str(tmp_path), "--mqtt-port", "0", "--redis-port", "0"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert up.stdout is not None
        for line in up.stdout:
            lines.append(line)
            if "Ctrl-C stops everything" in line:
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert ready.wait(60), "".join(lines[-20:])
        text = "".join(lines)
        assert "shadowsync" in text and "otaplanner" in text and "healthwatch" in text
        console = re.search(r"Console: +(http://\S+)/", text).group(1)  # type: ignore[union-attr]
        token = re.search(r"Admin token \(shown once\): (\S+)", text).group(1)  # type: ignore[union-attr]
        listed = httpx.get(f"{console}/api/v1/devices", headers={"Authorization": f"Bearer {token}"},
                           timeout=10)
        assert listed.status_code == 200, listed.text
        port = int(re.search(r"mosquitto on 127\.0\.0\.1:(\d+)", text).group(1))  # type: ignore[union-attr]
        operator = Probe(f"mqtt://127.0.0.1:{port}").connect().subscribe(
            "fleet/sim-0001/shadow/update/accepted", "fleet/sim-0001/health")
        operator.publish("fleet/sim-0001/shadow/update", {"state": {"desired": {"led": "blue"}}})
        # The simulated device gets the delta and reports the value back.
        operator.wait("fleet/sim-0001/shadow/update/accepted",
                      lambda m: m.body["state"].get("reported") == {"led": "blue"}, timeout=30)
        # healthwatch scores its heartbeats.
        assert operator.wait("fleet/sim-0001/health", timeout=30).body["status"] in ("ok", "watch")
        operator.close()
    finally:
        up.send_signal(signal.SIGTERM)
        code = up.wait(60)
    assert code == 0
