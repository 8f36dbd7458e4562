"""Operator requests the planner refuses, and what it accepts: releases, commands, bad input."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from tests.otaplanner.fleet import SUCCESS
from tests.otaplanner.planner_env import Env, ids, ota
from tests.support import on_both_backends

__all__ = ["ota"]


def register(ota: Env, **body: object) -> tuple[str, dict[str, object]]:
    r = ota.operator.request(f"{ota.ops}/ota/releases/register", body)
    return r.topic.rsplit("/", 1)[1], r.body


def test_release_registration_checks_the_artifact(ota: Env) -> None:
    ota.planner()
    data = b"\x01" * 1000
    (ota.artifacts / "fw.bin").write_bytes(data)
    good = {"version": "3.1.0", "hw": ["c3", "s3"], "object": "fw.bin",
            "sha256": hashlib.sha256(data).hexdigest(), "size": 1000, "secure_version": 2, "notes": "n",
            "clientToken": "t1"}
    kind, body = register(ota, **{**good, "object": "missing.bin"})
    assert kind == "rejected" and body["code"] == 404 and body["clientToken"] == "t1"
    kind, body = register(ota, **{**good, "size": 999})
    assert kind == "rejected" and body["code"] == 400 and "1000 bytes" in str(body["message"])
    for bad in ({"sha256": "xyz"}, {"hw": []}, {"version": "a/b"}, {"secure_version": -1}, {"size": "1000"}):
        kind, body = register(ota, **{**good, **bad})
        assert kind == "rejected" and body["code"] == 400, bad
    assert ota.operator.request(f"{ota.ops}/ota/releases/register", raw=b"\xc1nope").body["code"] == 415
    kind, body = register(ota, **good)
    assert kind == "accepted" and body["release"]["version"] == "3.1.0"  # type: ignore[index]
    retained = ota.probe(f"{ota.ops}/ota/releases/3.1.0").wait(f"{ota.ops}/ota/releases/3.1.0")
    assert retained.retain and retained.body["sha256"] == good["sha256"]
    assert register(ota, **good)[0] == "accepted"  # a redelivered registration changes nothing
    kind, body = register(ota, **{**good, "secure_version": 3})
    assert kind == "rejected" and body["code"] == 409


@on_both_backends
def test_rollout_commands_are_validated(ota: Env) -> None:
    ota.planner()
    topic = f"{ota.ops}/ota/rollouts/rx/command"
    r = ota.operator.request(topic, {"action": "create", "version": "9.9.9", "stages": [100]})
    assert r.topic.endswith("/rejected") and r.body["code"] == 404
    ota.release()
    for bad in ({"stages": [50, 10]}, {"soak_s": -5}, {"selector": {"hw": 3}}, {"max_failure_pct": 200}):
        r = ota.operator.request(topic, {"action": "create", "version": "2.0.0", **bad})
        assert r.topic.endswith("/rejected") and r.body["code"] == 400, bad
    assert ota.operator.request(topic, {"action": "pause"}).body["code"] == 404
    assert ota.operator.request(topic, {"action": "dance"}).body["code"] == 400
    assert ota.operator.request(topic, {"nothing": 1}).body["code"] == 400
    assert ota.operator.request(topic, raw=b"{not json").body["code"] == 400
    assert ota.operator.request(topic, {"action": "rollback"}).body["code"] == 404
    ota.create("rx", stages=[50, 100], soak_s=3600)
    assert ota.operator.request(topic, {"action": "rollback"}).body["code"] == 409  # still running
    r = ota.operator.request(topic, {"action": "create", "version": "2.0.0", "stages": [100]})
    assert r.body["code"] == 409  # the id is taken, by another configuration
    assert ota.operator.request(topic, {"action": "advance"}).body["state"] == "running"
    assert ota.operator.request(topic, {"action": "advance"}).body["code"] == 409  # last stage
    status = ota.wait_status("rx", lambda b: b["stage"] == 1)
    assert status["reason"] == "advance by operator"
    # The planner is alive and well after all that.
    assert ota.operator.request(topic, {"action": "abort"}).body["state"] == "aborted"


def test_selector_targets_a_subset(ota: Env) -> None:
    ota.planner()
    ota.release(hw=("c3", "s3"))
    c3 = ota.fleet(ids(20), hw="c3")
    s3 = ota.fleet(ids(10, start=100), hw="s3")
    ota.fleet(ids(5, start=200), hw="c6")  # the release is not built for this one
    ota.wait_known(35)
    ota.create("rs", selector={"hw": "s3"}, stages=[100])
    done = ota.wait_state("rs", "completed")
    assert done["devices"] == 10 and done["counts"]["succeeded"] == 10
    assert s3.with_job() == set(ids(10, start=100)) and c3.with_job() == set()
    ota.create("rall", stages=[100])
    done = ota.wait_state("rall", "completed")
    # s3 devices are on 2.0.0 already: they count as succeeded without a job; c6 is left out.
    assert done["devices"] == 30 and done["counts"]["succeeded"] == 30
    assert all(s3.distinct_jobs(d) == 1 for d in ids(10, start=100))


@on_both_backends
def test_rollback_after_a_halt(ota: Env) -> None:
    ota.planner()
    ota.release("1.0.0", secure_version=1)
    ota.release("2.0.0", secure_version=1)
    devices = ids(30)
    fail = set(devices[:12])
    fleet = ota.fleet(devices, lambda d, m: ["failed"] if d in fail and m["version"] == "2.0.0" else SUCCESS)
    ota.wait_known(30)
    ota.create("rb", stages=[100], min_devices_for_gate=30, max_failure_pct=10, success_pct=100)
    halted = ota.wait_state("rb", "halted")
    assert halted["counts"]["succeeded"] == 18
    r = ota.command("rb", {"action": "rollback"})
    assert r.topic.endswith("/accepted") and r.body["rollback_jobs"] == 18, r.body
    ota.wait_status("rb", lambda b: b.get("rollback_counts", {}).get("succeeded") == 18)
    back = [d for d in devices if d not in fail]
    assert all(fleet.fw[d] == "1.0.0" for d in back)


def test_rollback_refused_below_the_bad_secure_version(ota: Env) -> None:
    ota.planner()
    ota.release("1.0.0", secure_version=1)
    ota.release("2.0.0", secure_version=2)
    devices = ids(10)
    ota.fleet(devices)
    ota.wait_known(10)
    ota.create("rv", stages=[100], success_pct=100, soak_s=3600)
    ota.wait_status("rv", lambda b: b["counts"]["succeeded"] == 10)
    assert ota.command("rv", {"action": "abort"}).body["state"] == "aborted"
    r = ota.command("rv", {"action": "rollback"})
    assert r.topic.endswith("/rejected") and r.body["code"] == 409 and "secure_version" in r.body["message"]


def test_no_signing_key_stops_the_daemon_with_a_clear_message(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    env.update(FLEET_METRICS_PORT="0", FLEET_ARTIFACT_STORE=f"local:{tmp_path}", FLEET_ARTIFACT_HTTP_PORT="0",
               FLEET_REDIS_URL="redis://127.0.0.1:1/0", FLEET_MQTT_URL="mqtt://127.0.0.1:1")
    done = subprocess.run([sys.executable, "-m", "otaplanner"], env=env, capture_output=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode != 0 and b"FLEET_OTA_MASTER_KEY" in done.stderr, done.stderr[-500:]
