"""The device model (device side of PROTOCOL §3): refusals, download with resume, A/B trial, rollback."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from daemons.sim.device_model import DeviceModel
from daemons.sim.device_runner import DeviceRunner
from otaplanner.manifest import build_manifest
from otaplanner.signing import Signer
from tests.otaplanner.artifact_env import Served, served
from tests.support import Probe, Server

__all__ = ["served"]

MASTER = bytes.fromhex("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff")
SIGNER = Signer(kid="k1", master_key=MASTER)
IMAGE = bytes(range(256)) * 200  # 51,200 bytes: several download chunks


def make_job(served: Served, device_id: str = "dev-1", signer: Signer = SIGNER,
             **over: Any) -> dict[str, Any]:
    sha, size = served.add("fw-2.0.0.bin", IMAGE)
    now = int(time.time())
    fields: dict[str, Any] = {
        "device_id": device_id, "job_id": "job-1", "version": "2.0.0", "hw": "c3",
        "url": served.store.presign_get("fw-2.0.0.bin", 300), "sha256": sha, "size": size,
        "secure_version": 2, "issued_at": now, "expires_at": now + 600, **over}
    return signer.make_job(device_id, fields["job_id"], "r1", build_manifest(**fields))


def device(signer: Signer = SIGNER, **kw: Any) -> DeviceModel:
    kw.setdefault("secure_version", 1)
    return DeviceModel("dev-1", "c3", "1.0.0", signer.verifier("dev-1"), **kw)


def states(statuses: list[dict[str, Any]]) -> list[str]:
    return [s["state"] for s in statuses]


def test_happy_path_downloads_boots_on_trial_and_commits(served: Served) -> None:
    d = device()
    out = d.handle_job(make_job(served))
    assert states(out)[0] == "downloading" and states(out)[-2:] == ["verifying", "rebooting"]
    assert [s["progress"] for s in out if s["state"] == "downloading"] == [0, 25, 50, 75]
    assert d.trial is not None and d.active == 1 and d.version == "2.0.0"
    assert d.secure_version == 1  # committed only once the new image has proved itself
    done = d.heartbeat_acked()
    assert states(done) == ["succeeded"] and done[0]["fw"] == "2.0.0" and done[0]["job_id"] == "job-1"
    assert d.secure_version == 2 and d.slots[1].version == "2.0.0" and d.trial is None
    assert all(set(s) <= {"job_id", "state", "progress", "fw", "error", "ts"} for s in out + done)


def test_same_job_again_is_ignored(served: Served) -> None:
    d = device()
    job = make_job(served)
    assert states(d.run(job))[-1] == "succeeded"
    assert d.run(job) == []


@pytest.mark.parametrize("case, expect", [
    ("tampered", "signature: bad signature"),
    ("expired", "expired"),
    ("wrong_hw", "hardware"),
    ("downgrade", "downgrade"),
    ("other_device_key", "signature: bad signature"),
    ("unknown_kid", "unknown kid"),
])
def test_refused_jobs_are_rejected_with_a_reason(served: Served, case: str, expect: str) -> None:
    d = device(secure_version=3 if case == "downgrade" else 1)
    if case == "tampered":
        job = make_job(served)
        body = json.loads(base64.b64decode(job["manifest"]))
        body["version"] = "6.6.6"
        job["manifest"] = base64.b64encode(json.dumps(body, separators=(",", ":")).encode()).decode()
    elif case == "expired":
        now = int(time.time())
        job = make_job(served, issued_at=now - 700, expires_at=now - 100)
    elif case == "wrong_hw":
        job = make_job(served, hw="s3")
    elif case == "other_device_key":
        job = make_job(served, device_id="dev-2")  # signed with dev-2's key, sent to dev-1
    elif case == "unknown_kid":
        job = make_job(served, signer=Signer(kid="k9", master_key=MASTER))
    else:
        job = make_job(served)
    out = d.run(job)
    assert states(out) == ["rejected"], out
    assert expect in out[0]["error"] and out[0]["job_id"] == "job-1" and out[0]["fw"] == "1.0.0"
    assert d.version == "1.0.0" and d.active == 0 and d.downloads == []


def test_wrong_device_manifest_refused_even_with_a_valid_fleet_signature(served: Served) -> None:
    # With ECDSA every device trusts the same key, so the device id check is what stops it.
    signer = Signer(kid="e1", ecdsa_key=ec.generate_private_key(ec.SECP256R1()))
    d = device(signer)
    out = d.run(make_job(served, device_id="dev-2", signer=signer))
    assert states(out) == ["rejected"] and "for device 'dev-2'" in out[0]["error"]
    assert states(d.run(make_job(served, signer=signer, job_id="job-2")))[-1] == "succeeded"


def test_sha256_mismatch_rejected_and_nothing_booted(served: Served) -> None:
    d = device()
    out = d.run(make_job(served, sha256="ab" * 32))
    assert states(out)[-1] == "rejected" and "sha256" in out[-1]["error"]
    assert d.version == "1.0.0" and d.active == 0 and d.slots[1].version is None


def test_self_test_failure_rolls_back_to_the_previous_slot(served: Served) -> None:
    d = device(selftest_fails=lambda device_id, manifest: manifest["version"] == "2.0.0")
    out = d.run(make_job(served))
    assert states(out)[-2:] == ["rebooting", "rolled_back"]
    assert out[-1]["fw"] == "1.0.0" and d.version == "1.0.0" and d.active == 0 and d.secure_version == 1


def test_no_heartbeat_ack_in_time_rolls_back(served: Served) -> None:
    d = device()
    d.handle_job(make_job(served))
    assert d.trial_failed(now=time.time()) == []  # still inside the 60 s window
    out = d.trial_failed(now=time.time() + 61)
    assert states(out) == ["rolled_back"] and d.version == "1.0.0" and d.active == 0


def test_interrupted_download_resumes_with_range(served: Served) -> None:
    def cut(device_id: str, attempt: int) -> int | None:
        return 20_000 if attempt == 0 else None

    d = device(interrupt=cut)
    out = d.run(make_job(served))
    assert states(out)[-1] == "succeeded"
    assert d.downloads == [(0, 0), (1, 20_000)]  # the second request starts where the first broke


def test_download_failures_report_failed(served: Served) -> None:
    d = device(download_fails=lambda device_id, manifest: True)
    assert states(d.run(make_job(served)))[-1] == "failed"
    # An expired URL (the store answers 403) is a failure too, not a retry loop.
    d2 = device()
    job = make_job(served)
    body = json.loads(base64.b64decode(job["manifest"]))
    body["url"] = served.store.presign_get("fw-2.0.0.bin", 60, now=time.time() - 120)
    job = SIGNER.make_job("dev-1", "job-1", "r1", build_manifest(**body))
    out = d2.run(job)
    assert states(out)[-1] == "failed" and "403" in out[-1]["error"] and len(d2.downloads) == 1


def test_runner_over_mqtt_reports_progress_and_success(served: Served, broker: Server,
                                                       probe: Callable[..., Probe],
                                                       prefixes: tuple[str, str]) -> None:
    p = prefixes[0]
    watch = probe(f"{p}/dev-1/#")
    runner = DeviceRunner(device(), broker.url, p).start()
    try:
        watch.wait(f"{p}/dev-1/heartbeat")
        watch.publish(f"{p}/dev-1/ota/job", make_job(served), retain=True)
        done = watch.wait(f"{p}/dev-1/ota/status", lambda m: m.body["state"] in ("succeeded", "rejected"), 20)
        assert done.body["state"] == "succeeded" and done.body["fw"] == "2.0.0"
        online = watch.wait(f"{p}/dev-1/status", lambda m: m.body.get("fw") == "2.0.0")
        assert online.body["online"] is True
        assert states(runner.statuses)[-3:] == ["verifying", "rebooting", "succeeded"]
    finally:
        runner.stop()
        watch.publish(f"{p}/dev-1/ota/job", raw=b"", retain=True)


def test_runner_sends_a_fresh_status_ts_on_every_connection(broker: Server, probe: Callable[..., Probe],
                                                             prefixes: tuple[str, str]) -> None:
    # PROTOCOL §4 (issue 11): shadow-sync pushes the delta on each reconnect, told apart by the ts.
    p = prefixes[0]
    watch = probe(f"{p}/dev-1/status")
    runner = DeviceRunner(device(), broker.url, p).start()
    try:
        first = watch.wait(f"{p}/dev-1/status", lambda m: m.body.get("online") is True).body["ts"]
        runner.client.reconnect()  # at once, within the same second
        again = watch.wait(f"{p}/dev-1/status", lambda m: m.body.get("online") is True).body["ts"]
        assert again > first
    finally:
        runner.stop()
