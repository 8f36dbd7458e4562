"""The planner as a process against real mosquitto and Redis, with a fake fleet."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tests.otaplanner.fleet import SUCCESS, share
from tests.otaplanner.planner_env import MASTER_KEY, Env, ids, ota

__all__ = ["ota"]


def device_key(device_id: str) -> bytes:
    return HKDF(hashes.SHA256(), 32, b"", b"fleet-ota-v1:" + device_id.encode()).derive(
        bytes.fromhex(MASTER_KEY))


def test_happy_path_1_5_20_100_completes(ota: Env) -> None:
    ota.planner()
    ota.release()
    devices = ids(60)
    fleet = ota.fleet(devices)
    ota.wait_known(60)
    ota.create("r1", stages=[1, 5, 20, 100], soak_s=0, success_pct=95)
    done = ota.wait_state("r1", "completed")
    assert done["counts"]["succeeded"] == 60 and done["stage"] == 3, done
    assert all(fleet.distinct_jobs(d) == 1 for d in devices)
    stages = [e["stage"] for e in ota.events("r1") if e["event"] == "stage_opened"]
    assert stages == [1, 2, 3]
    # The job is signed for that one device, over exactly the manifest bytes (§3).
    job = json.loads(fleet.jobs["d0007"][0])
    manifest = base64.b64decode(job["manifest"])
    assert job["alg"] == "hmac-sha256" and job["rollout_id"] == "r1"
    assert hmac.compare_digest(base64.b64decode(job["sig"]),
                               hmac.new(device_key("d0007"), manifest, hashlib.sha256).digest())
    body = json.loads(manifest)
    assert body["device_id"] == "d0007" and body["version"] == "2.0.0" and body["hw"] == "c3"
    assert body["job_id"] == job["job_id"] and body["expires_at"] > body["issued_at"]


def test_release_failing_on_30_percent_halts_inside_the_first_stage(ota: Env) -> None:
    ota.planner()
    ota.release()
    devices = ids(100)

    def rule(device_id: str, manifest: dict[str, object]) -> list[str]:
        return ["downloading", "failed"] if share(device_id) < 0.3 else SUCCESS

    fleet = ota.fleet(devices, rule)
    ota.wait_known(100)
    ota.create("r30", stages=[20, 50, 100], soak_s=0, min_devices_for_gate=10, max_failure_pct=10)
    halted = ota.wait_state("r30", "halted")
    assert halted["stage"] == 0 and "failure gate" in halted["reason"], halted
    assert halted["counts"]["failed"] >= 2
    events = ota.events("r30")
    assert [e["event"] for e in events] == ["created", "halted"]
    assert events[-1]["reason"] == halted["reason"]
    # Nobody outside the first stage (20 % of the buckets) ever got the job.
    from otaplanner.rollout import bucket
    assert all(bucket("r30", d) < 2000 for d in fleet.with_job())
    assert len(fleet.with_job()) < 40


def test_rolled_back_and_timed_out_count_as_failures(ota: Env) -> None:
    ota.planner()
    ota.release()
    devices = ids(40)
    rolled = set(devices[:4])   # 10 %: alone below the gate
    silent = set(devices[4:10])  # 15 % more once they time out

    def rule(device_id: str, manifest: dict[str, object]) -> list[str]:
        if device_id in rolled:
            return ["downloading", "rebooting", "rolled_back"]
        if device_id in silent:
            return ["downloading"]
        return SUCCESS

    ota.fleet(devices, rule)
    ota.wait_known(40)
    ota.create("rt", stages=[100], soak_s=30, success_pct=100, min_devices_for_gate=5, max_failure_pct=20,
               timeout_s=2)
    halted = ota.wait_state("rt", "halted")
    assert halted["counts"]["rolled_back"] == 4 and halted["counts"]["timed_out"] == 6, halted
    assert "10 of 40" in halted["reason"], halted
