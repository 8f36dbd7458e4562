"""`fleetctl release publish`: hash, upload, register with the planner; exit codes and --json."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from daemons.cli.fleetctl import main
from daemons.sim.device_model import DeviceModel
from daemons.sim.device_runner import DeviceRunner
from otaplanner.artifacts import S3Store
from otaplanner.signing import Signer
from tests.otaplanner.planner_env import MASTER_KEY, Env, ota
from tests.otaplanner.s3_server import S3, s3_server
from tests.support import ROOT, free_port

__all__ = ["ota", "s3_server"]
Cap = pytest.CaptureFixture[str]


def use(monkeypatch: pytest.MonkeyPatch, ota: Env, **extra: str) -> None:
    """fleetctl's settings: this test's broker, prefixes and the planner's artifact store."""
    env = {"FLEET_MQTT_URL": ota.broker.url, "FLEET_TOPIC_PREFIX": ota.prefix, "FLEET_OPS_PREFIX": ota.ops,
           "FLEET_ARTIFACT_STORE": f"local:{ota.artifacts}", "FLEET_OTA_MASTER_KEY": MASTER_KEY, **extra}
    for k, v in env.items():
        monkeypatch.setenv(k, v)


def image(tmp_path: Path, data: bytes = b"\xe9firmware 2.0.0" * 500) -> Path:
    p = tmp_path / "app.bin"
    p.write_bytes(data)
    return p


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = main([*argv, "--json"])
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1, out
    return code, json.loads(out[0])


def test_publish_uploads_and_registers_then_a_device_installs_it(
        ota: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Cap) -> None:
    ota.planner()
    use(monkeypatch, ota)
    fw = image(tmp_path)
    code, out = run_json(capsys, "release", "publish", str(fw), "--version", "2.0.0", "--hw", "c3",
                         "--hw", "s3", "--secure-version", "2", "--notes", "first")
    assert code == 0 and out["ok"] is True, out
    r = out["release"]
    assert r["sha256"] == hashlib.sha256(fw.read_bytes()).hexdigest() and r["size"] == fw.stat().st_size
    assert r["hw"] == ["c3", "s3"] and r["secure_version"] == 2 and r["notes"] == "first"
    assert (ota.artifacts / r["object"]).read_bytes() == fw.read_bytes()
    retained = ota.operator.wait(f"{ota.ops}/ota/releases/2.0.0")
    assert retained.body["sha256"] == r["sha256"]

    # The planner signs jobs whose URL points at its own HTTP server: a device model installs it.
    signer = Signer(kid="k1", master_key=bytes.fromhex(MASTER_KEY))
    model = DeviceModel("d-1", "c3", "1.0.0", signer.verifier("d-1"), secure_version=1)
    runner = DeviceRunner(model, ota.broker.url, ota.prefix).start()
    try:
        ota.wait_known(1)
        ota.create("r1", version="2.0.0", min_devices_for_gate=1)
        done = ota.wait_state("r1", "completed")
        assert done["counts"]["succeeded"] == 1, done
        assert model.version == "2.0.0" and model.secure_version == 2 and model.downloads == [(0, 0)]
    finally:
        runner.stop()


def test_conflicting_release_is_rejected_with_exit_3(
        ota: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Cap) -> None:
    ota.planner()
    use(monkeypatch, ota)
    assert main(["release", "publish", str(image(tmp_path)), "--version", "3.0.0", "--hw", "c3"]) == 0
    assert "release 3.0.0 registered" in capsys.readouterr().out
    other = image(tmp_path / "..", b"another image" * 10)
    code, out = run_json(capsys, "release", "publish", str(other), "--version", "3.0.0", "--hw", "c3",
                         "--object", "other.bin")
    assert code == 3 and out["ok"] is False and out["rejection"]["code"] == 409, out


def test_no_planner_times_out_with_exit_4(
        ota: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Cap) -> None:
    use(monkeypatch, ota)
    fw = image(tmp_path)
    started = time.monotonic()
    code, out = run_json(capsys, "release", "publish", str(fw), "--version", "2.0.0", "--hw", "c3",
                         "--timeout", "0.5")
    assert code == 4 and "no answer" in out["error"] and time.monotonic() - started < 5
    # The upload happened before the wait: the image is in the store under its default name.
    assert (ota.artifacts / "firmware/2.0.0/app.bin").read_bytes() == fw.read_bytes()


def test_unreachable_broker_is_exit_4(ota: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    use(monkeypatch, ota, FLEET_MQTT_URL=f"mqtt://127.0.0.1:{free_port()}")
    fw = str(image(tmp_path))
    code, out = run_json(capsys, "release", "publish", fw, "--version", "2.0.0", "--hw", "c3")
    assert code == 4 and "unreachable" in out["error"]


@pytest.mark.parametrize("argv, env, needle", [
    (["release", "publish", "MISSING", "--version", "2.0.0", "--hw", "c3"], {}, "no such file"),
    (["release", "publish", "FILE", "--hw", "c3"], {}, "--version"),
    (["release", "publish", "FILE", "--version", "2.0.0", "--hw", "c3", "--object", "../x"], {},
     "object name"),
    (["release", "publish", "FILE", "--version", "2.0.0", "--hw", "c3"],
     {"FLEET_ARTIFACT_STORE": "ftp://x"}, "FLEET_ARTIFACT_STORE"),
    (["release", "publish", "FILE", "--version", "2.0.0", "--hw", "c3"],
     {"FLEET_ARTIFACT_STORE": "s3://bucket/fw"}, "FLEET_S3_ENDPOINT"),
])
def test_usage_and_configuration_errors_are_exit_2(
        ota: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        argv: list[str], env: dict[str, str], needle: str) -> None:
    use(monkeypatch, ota, **env)
    fw = str(image(tmp_path))
    assert main([fw if a == "FILE" else a for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fleetctl") and needle in err, err
    assert not (ota.artifacts / "firmware").exists()  # nothing uploaded


def test_console_command_runs_as_a_process(ota: Env, tmp_path: Path) -> None:
    ota.planner()
    env = {"FLEET_MQTT_URL": ota.broker.url, "FLEET_TOPIC_PREFIX": ota.prefix, "FLEET_OPS_PREFIX": ota.ops,
           "FLEET_ARTIFACT_STORE": f"local:{ota.artifacts}", "PATH": "/usr/bin:/bin"}
    argv = ["release", "publish", str(image(tmp_path)), "--version", "4.0.0", "--hw", "c3", "--json"]
    proc = subprocess.run([sys.executable, "-m", "daemons.cli.fleetctl", *argv], cwd=ROOT, env=env,
                          capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["release"]["version"] == "4.0.0"


def test_s3_store_end_to_end_publish_register_and_install(
        ota: Env, s3_server: S3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Cap) -> None:
    """The S3 path through every part: fleetctl uploads, the planner checks the object there and
    signs jobs with pre-signed S3 URLs, a device downloads through one (S3 refuses bad ones)."""
    bucket = f"fleet-e2e-{ota.prefix.lower()[-12:].replace('_', '-')}"
    s3 = {"FLEET_ARTIFACT_STORE": f"s3://{bucket}/firmware", "FLEET_S3_ENDPOINT": s3_server.endpoint,
          "FLEET_S3_ACCESS_KEY": s3_server.access_key, "FLEET_S3_SECRET_KEY": s3_server.secret_key,
          "FLEET_S3_REGION": s3_server.region}
    S3Store(s3_server.endpoint.removeprefix("http://"), s3_server.access_key, s3_server.secret_key,
            s3_server.region, bucket, secure=False).ensure_bucket()
    ota.planner(**s3)
    use(monkeypatch, ota, **s3)
    fw = str(image(tmp_path))
    code, out = run_json(capsys, "release", "publish", fw, "--version", "5.0.0", "--hw", "c3")
    assert code == 0, out
    assert out["release"]["object"] == "firmware/5.0.0/app.bin"
    signer = Signer(kid="k1", master_key=bytes.fromhex(MASTER_KEY))
    model = DeviceModel("d-s3", "c3", "1.0.0", signer.verifier("d-s3"))
    runner = DeviceRunner(model, ota.broker.url, ota.prefix).start()
    try:
        ota.wait_known(1)
        ota.create("r-s3", version="5.0.0", min_devices_for_gate=1)
        assert ota.wait_state("r-s3", "completed")["counts"]["succeeded"] == 1
        assert model.version == "5.0.0" and model.last_manifest is not None
        url = model.last_manifest["url"]
        assert url.startswith(f"{s3_server.endpoint}/{bucket}/firmware/firmware/5.0.0/app.bin?")
        assert "X-Amz-Signature=" in url
    finally:
        runner.stop()
