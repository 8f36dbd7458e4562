"""The planner as a process against real mosquitto and Redis, with a fake fleet."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import urllib.request

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tests.otaplanner.fleet import SUCCESS, share
from tests.otaplanner.planner_env import MASTER_KEY, Env, ids, ota
from tests.support import counted, free_port, on_both_backends

__all__ = ["ota"]


def device_key(device_id: str) -> bytes:
    return HKDF(hashes.SHA256(), 32, b"", b"fleet-ota-v1:" + device_id.encode()).derive(
        bytes.fromhex(MASTER_KEY))


@on_both_backends
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
    # The planner serves the local artifact store: the URL gives the image the manifest names.
    with urllib.request.urlopen(body["url"], timeout=10) as resp:
        assert hashlib.sha256(resp.read()).hexdigest() == body["sha256"]


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
    silent = set(devices[4:10])  # 15 % more once they time out: only all six pass 24 %

    def rule(device_id: str, manifest: dict[str, object]) -> list[str]:
        if device_id in rolled:
            return ["downloading", "rebooting", "rolled_back"]
        if device_id in silent:
            return ["downloading"]
        return SUCCESS

    ota.fleet(devices, rule)
    ota.wait_known(40)
    ota.create("rt", stages=[100], soak_s=30, success_pct=100, min_devices_for_gate=5, max_failure_pct=24,
               timeout_s=2)
    halted = ota.wait_state("rt", "halted")
    assert halted["counts"]["rolled_back"] == 4 and halted["counts"]["timed_out"] == 6, halted
    assert "10 of 40" in halted["reason"], halted


def test_pause_stops_issuing_and_resume_carries_on(ota: Env) -> None:
    ota.planner()
    ota.release()
    devices = ids(40)
    fleet = ota.fleet(devices)
    ota.wait_known(40)
    ota.create("rp", stages=[100], rate_per_min=1200, success_pct=100)  # 20 jobs a second
    fleet.wait_for(lambda: len(fleet.with_job()) >= 3)
    r = ota.command("rp", {"action": "pause", "clientToken": "p1"})
    assert r.topic.endswith("/accepted") and r.body["state"] == "paused" and r.body["clientToken"] == "p1"
    paused = ota.wait_state("rp", "paused")
    sent = 40 - paused["counts"]["pending"]
    assert sent < 40
    fleet.wait_for(lambda: len(fleet.with_job()) == sent)
    again = ota.command("rp", {"action": "pause"})
    assert again.topic.endswith("/rejected") and again.body["code"] == 409
    try:
        fleet.wait_for(lambda: len(fleet.with_job()) > sent, timeout=1.2)
        raise AssertionError("a job went out while paused")
    except TimeoutError:
        pass
    assert ota.command("rp", {"action": "resume"}).body["state"] == "running"
    done = ota.wait_state("rp", "completed")
    assert done["counts"]["succeeded"] == 40
    assert [e["event"] for e in ota.events("rp")] == ["created", "paused", "resumed", "completed"]


def test_abort_withdraws_every_job(ota: Env) -> None:
    ota.planner()
    ota.release()
    devices = ids(40)
    fleet = ota.fleet(devices, lambda d, m: [])  # devices that never start
    ota.wait_known(40)
    ota.create("ra", stages=[100])
    fleet.wait_for(lambda: len(fleet.with_job()) == 40)
    assert ota.command("ra", {"action": "abort"}).body["state"] == "aborted"
    aborted = ota.wait_state("ra", "aborted")
    assert aborted["counts"]["withdrawn"] == 40, aborted
    fleet.wait_for(lambda: fleet.cleared == set(devices))
    # No job is left retained for anyone.
    late = ota.probe(f"{ota.prefix}/+/ota/job")
    assert [m for m in late.drain(0.3) if m.payload] == []
    assert ota.command("ra", {"action": "resume"}).body["code"] == 409


def test_device_offline_at_issue_gets_its_job_when_it_returns(ota: Env) -> None:
    ota.planner()
    ota.release()
    online = ids(20)
    ota.fleet(online)
    ota.operator.publish(f"{ota.prefix}/off1/heartbeat", {"ts": 1, "seq": 1, "uptime_s": 1, "fw": "1.0.0",
                                                          "slot": 0, "hw": "c3"})
    ota.wait_known(21)
    ota.create("ro", stages=[100], success_pct=100)
    status = ota.wait_status("ro", lambda b: b["counts"]["succeeded"] == 20)
    assert status["state"] == "running" and status["counts"]["issued"] == 1
    # A device first heard of after the rollout started joins it too.
    ota.fleet(["new1"])
    ota.wait_status("ro", lambda b: b["counts"]["succeeded"] == 21)
    back = ota.fleet(["off1"], announce=False)  # reconnects: the retained job is waiting
    done = ota.wait_state("ro", "completed")
    assert done["counts"]["succeeded"] == 22 and back.distinct_jobs("off1") == 1


def test_planner_killed_mid_stage_carries_on_without_issuing_twice(ota: Env) -> None:
    planner = ota.planner()
    ota.release()
    devices = ids(60)
    fleet = ota.fleet(devices)
    ota.wait_known(60)
    ota.create("rk", stages=[50, 100], rate_per_min=1200)
    fleet.wait_for(lambda: len(fleet.with_job()) >= 8)
    planner.kill()  # SIGKILL: no drain, no goodbye
    planner.start()
    # The gate may complete the rollout at its success share while the last reports are on their way;
    # they are still counted (the status follows them), so wait for every device.
    done = ota.wait_status("rk", lambda b: b["state"] == "completed" and b["counts"]["succeeded"] == 60)
    assert done["counts"]["issued"] == 0, done
    assert all(fleet.distinct_jobs(d) == 1 for d in devices)
    assert [e["event"] for e in ota.events("rk")].count("stage_opened") == 1


def test_two_replicas_never_issue_twice(ota: Env) -> None:
    """Behind `$share`: reports split between the replicas, each counted once; one job per device."""
    ports = [free_port(), free_port()]
    planners = [ota.planner(FLEET_METRICS_PORT=str(port), FLEET_SHARED_SUBSCRIPTIONS="auto")
                for port in ports]
    assert all(d.event("started")["shared"] for d in planners)
    ota.release()
    devices = ids(80)
    fleet = ota.fleet(devices)
    ota.wait_known(80)
    ota.create("r2", stages=[10, 50, 100])
    done = ota.wait_state("r2", "completed")
    assert done["counts"]["succeeded"] == 80
    assert all(len(fleet.jobs[d]) == 1 for d in devices), "each device got one job document"
    reports = [counted(port, "otaplanner", "ota_status") for port in ports]
    assert sum(reports) == len(SUCCESS) * 80 and min(reports) > 0, reports
    assert sum(counted(port, "otaplanner", "ota_status", "succeeded") for port in ports) == 80
    assert sum(counted(port, "otaplanner", "job", "issued") for port in ports) == 80
    kinds = [e["event"] for e in ota.events("r2")]
    assert kinds.count("stage_opened") == 2 and kinds.count("completed") == 1, kinds


def test_health_gate_halts_a_release_whose_devices_do_worse(ota: Env) -> None:
    ota.planner()
    ota.release()
    devices = ids(30)
    for d in devices:  # what healthwatch says before the rollout
        ota.operator.publish(f"{ota.prefix}/{d}/health",
                             {"score": 90, "status": "ok", "reasons": [], "ts": 1}, retain=True)

    def worse(device_id: str) -> None:
        body = {"score": 35, "status": "watch", "reasons": [{"code": "heap_leak"}], "ts": 2}
        ota.fleets[0].client.publish(f"{ota.prefix}/{device_id}/health", json.dumps(body), qos=1, retain=True)

    ota.fleet(devices, on_success=worse)
    ota.wait_known(30)
    ota.create("rh", stages=[40, 100], soak_s=60, success_pct=100)
    halted = ota.wait_state("rh", "halted")
    assert "health gate" in halted["reason"] and halted["stage"] == 0, halted
    assert halted["counts"]["failed"] == 0


def test_real_device_models_download_verify_and_roll_back(ota: Env) -> None:
    from daemons.sim.device_model import DeviceModel
    from daemons.sim.device_runner import DeviceRunner
    from otaplanner.signing import Signer

    ota.planner()
    ota.release()
    signer = Signer(kid="k1", master_key=bytes.fromhex(MASTER_KEY))
    bad = {"m02", "m07"}
    models = [DeviceModel(d, "c3", "1.0.0", signer.verifier(d), secure_version=1,
                          selftest_fails=lambda device_id, manifest: device_id in bad)
              for d in (f"m{i:02d}" for i in range(12))]
    runners = [DeviceRunner(m, ota.broker.url, ota.prefix).start() for m in models]
    try:
        ota.wait_known(12)
        ota.create("rm", stages=[100], success_pct=80, min_devices_for_gate=12, max_failure_pct=20)
        # Late reports still reach a completed rollout's status.
        done = ota.wait_status("rm", lambda b: b["state"] == "completed" and b["counts"]["rolled_back"] == 2)
        assert done["counts"]["succeeded"] == 10, done
        assert {m.device_id for m in models if m.version == "2.0.0"} == {f"m{i:02d}" for i in range(12)} - bad
    finally:
        for r in runners:
            r.stop()
