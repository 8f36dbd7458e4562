"""`python -m daemons.broker` (fleet broker / fleet-broker): configured like the daemons."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

from daemons.protocol.keys import device_password
from daemons.protocol.passwd import write_passwd
from tests.identity.matrix import Client, Identity
from tests.support import ROOT


def run(args: list[str], env: dict[str, str], **kw: object) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    return subprocess.run([sys.executable, "-m", "daemons.broker", *args], env={**clean, **env}, cwd=ROOT,
                          capture_output=True, text=True, timeout=30, **kw)  # type: ignore[call-overload]


def test_configuration_errors_stop_it(tmp_path: Path) -> None:
    r = run([], {})
    assert r.returncode == 2 and "FLEET_SECRET" in r.stderr
    r = run([], {"FLEET_SECRET": "ab" * 16, "FLEET_BROKER_PASSWD_FILE": str(tmp_path / "missing")})
    assert r.returncode == 2 and "missing" in r.stderr
    r = run([], {"FLEET_SECRET": "ab" * 16, "FLEET_MQTT_URL": "mqtts://127.0.0.1:8883"})
    assert r.returncode == 2 and "mqtt://" in r.stderr


def test_toml_settings_and_any_free_port(tmp_path: Path) -> None:
    secret = secrets.token_hex(32)
    passwd = tmp_path / "accounts"
    write_passwd(passwd, [("operator", "op-pass")])
    config = tmp_path / "fleet.toml"
    config.write_text(f'secret = "{secret}"\nbroker_passwd_file = "{passwd}"\ntopic_prefix = "dev"\n'
                      'ops_prefix = "ops"\n')
    proc = subprocess.Popen([sys.executable, "-m", "daemons.broker", "--config", str(config), "--port", "0"],
                            cwd=ROOT, stderr=subprocess.PIPE, text=True,
                            env={k: v for k, v in os.environ.items() if not k.startswith("FLEET_")})
    try:
        assert proc.stderr is not None
        started = next(json.loads(line) for line in proc.stderr if '"started"' in line)
        port = int(started["url"].rsplit(":", 1)[1])
        op = Client(Identity("operator", port, "operator", "op-pass")).connect()
        dev = Client(Identity("d1", port, "d1", device_password(bytes.fromhex(secret), "d1"))).connect()
        assert op.subscribe("dev/d1/status", "fleet/d1/status") == [1, 0x80]  # the ACL follows the prefixes
        dev.publish("dev/d1/status", b'{"online": true}')
        assert op.received_until("dev/d1/status", b'{"online": true}')
        op.close()
        dev.close()
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
