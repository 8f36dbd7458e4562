"""The planner in-process on real Redis with an injected clock: soak, timeouts, rate, leases."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from daemons.protocol.messages import Inbound, Outcome
from daemons.registry import Registry
from otaplanner.artifacts import LocalStore
from otaplanner.jobs import JobFactory
from otaplanner.planner import Planner
from otaplanner.rollout_store import RolloutStore
from otaplanner.signing import Signer


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


def make(redis: Any, root: Path, clock: Clock, owner: str = "a") -> Planner:
    store = LocalStore(root, "http://127.0.0.1:9", b"k" * 32)
    jobs = JobFactory(Signer(kid="k1", master_key=b"m" * 32), store)
    return Planner(RolloutStore(redis), Registry(redis), jobs, store, "p", "o", owner, clock=clock)


def send(planner: Planner, topic: str, body: Any) -> Outcome:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    return planner.handle([Inbound(topic, payload)])


def jobs(out: Outcome) -> dict[str, dict[str, Any]]:
    return {p.topic.split("/")[1]: json.loads(p.payload) for p in out.publishes
            if p.topic.endswith("/ota/job") and p.payload}


def published(out: Outcome, suffix: str) -> list[dict[str, Any]]:
    return [json.loads(p.payload) for p in out.publishes if p.topic.endswith(suffix) and p.payload]


@pytest.fixture
def world(redis: Any, tmp_path: Path) -> tuple[Planner, Clock]:
    data = b"x" * 100
    (tmp_path / "fw.bin").write_bytes(data)
    clock = Clock()
    planner = make(redis, tmp_path, clock)
    out = send(planner, "o/ota/releases/register", {"version": "2.0.0", "hw": ["c3"], "object": "fw.bin",
                                                    "sha256": hashlib.sha256(data).hexdigest(), "size": 100})
    assert published(out, "register/accepted"), out.publishes
    for i in range(20):
        send(planner, f"p/d{i:02d}/heartbeat", {"hw": "c3", "fw": "1.0.0", "ts": 1, "seq": 1})
    return planner, clock


def create(planner: Planner, **cfg: Any) -> Outcome:
    body = {"action": "create", "version": "2.0.0", "stages": [100], "soak_s": 0, "success_pct": 95,
            "max_failure_pct": 2, "min_devices_for_gate": 20, "timeout_s": 300, **cfg}
    out = send(planner, "o/ota/rollouts/r/command", body)
    assert published(out, "command/accepted"), out.publishes
    return out


def report(planner: Planner, job: dict[str, Any], device_id: str, state: str) -> Outcome:
    return send(planner, f"p/{device_id}/ota/status", {"job_id": job["job_id"], "state": state, "fw": "x"})


def test_a_stage_soaks_before_the_next_opens(world: tuple[Planner, Clock]) -> None:
    planner, clock = world
    first = jobs(create(planner, stages=[50, 100], soak_s=600))
    assert 3 <= len(first) < 20
    for device_id, job in first.items():
        report(planner, job, device_id, "succeeded")
    clock.t += 599
    assert jobs(planner.tick(clock.t)) == {}
    clock.t += 2
    out = planner.tick(clock.t)
    assert [e["stage"] for e in published(out, "/events")] == [1]
    assert set(jobs(out)) | set(first) == {f"d{i:02d}" for i in range(20)}


def test_jobs_in_progress_time_out_and_are_withdrawn(world: tuple[Planner, Clock]) -> None:
    planner, clock = world
    issued = jobs(create(planner, timeout_s=300))
    assert len(issued) == 20
    report(planner, issued["d03"], "d03", "downloading")
    clock.t += 299
    planner.tick(clock.t)
    clock.t += 2
    out = planner.tick(clock.t)
    assert published(out, "/status")[-1]["counts"]["timed_out"] == 1
    assert [p.topic for p in out.publishes if p.topic.endswith("/ota/job")] == ["p/d03/ota/job"]
    # A job never started does not time out (as AWS IoT Jobs' in-progress timeout).
    clock.t += 10_000
    status = published(planner.tick(clock.t), "/status")
    assert not status or status[-1]["counts"]["issued"] == 19


def test_a_terminal_report_after_the_timeout_replaces_timed_out(world: tuple[Planner, Clock],
                                                                redis: Any) -> None:
    # PROTOCOL §3 (issue 11): the device's word is the truth; AWS IoT Jobs would keep TIMED_OUT.
    planner, clock = world
    issued = jobs(create(planner, timeout_s=300))
    for device_id in ("d03", "d04"):
        report(planner, issued[device_id], device_id, "downloading")
    clock.t += 301
    assert published(planner.tick(clock.t), "/status")[-1]["counts"]["timed_out"] == 2
    out = send(planner, "p/d03/ota/status", {"job_id": issued["d03"]["job_id"], "state": "succeeded",
                                             "fw": "2.0.0"})
    assert ("ota_status", "late") in out.counts
    [event] = published(out, "/events")
    assert event["late"] is True and event["event"] == "late_report" and event["device_id"] == "d03"
    assert event["job_state"] == "succeeded" and event["replaces"] == "timed_out"
    assert event["seq"] == max(e["seq"] for e in planner.store.events("r"))
    assert Registry(redis).read_many(["d03"])["d03"].fw == "2.0.0", "the registry takes the real fw"
    report(planner, issued["d04"], "d04", "rolled_back")
    clock.t += 1
    counts = published(planner.tick(clock.t), "/status")[-1]["counts"]
    assert counts["timed_out"] == 0 and counts["succeeded"] == 1 and counts["rolled_back"] == 1
    # Once decided by the device, it stays decided; a non-terminal late report changes nothing.
    assert report(planner, issued["d03"], "d03", "failed").counts.count(("ota_status", "terminal")) == 1
    report(planner, issued["d05"], "d05", "downloading")
    clock.t += 301
    planner.tick(clock.t)
    assert report(planner, issued["d05"], "d05", "verifying").counts.count(("ota_status", "terminal")) == 1


def test_rate_per_min_spreads_the_jobs(world: tuple[Planner, Clock]) -> None:
    planner, clock = world
    sent = len(jobs(create(planner, rate_per_min=60)))
    for _ in range(4):
        clock.t += 1
        sent += len(jobs(planner.tick(clock.t)))
    assert sent == 5


def test_replicas_share_the_work_but_never_issue_twice(world: tuple[Planner, Clock], redis: Any,
                                                       tmp_path: Path) -> None:
    planner, clock = world
    other = make(redis, tmp_path, clock, owner="b")
    create(planner, rate_per_min=600)
    seen: dict[str, int] = {}
    for _ in range(10):
        clock.t += 0.5
        for p in (other, planner):
            for device_id in jobs(p.tick(clock.t)):
                seen[device_id] = seen.get(device_id, 0) + 1
    assert len(seen) == 19 and set(seen.values()) == {1}  # one went out with the create
    store = RolloutStore(redis)
    assert store.issue("r", clock.t, {"d00": ("r@d00", "{}")}) == {"d00": False}


def test_bad_input_is_counted_never_fatal(world: tuple[Planner, Clock]) -> None:
    planner, _ = world
    create(planner)
    for topic, payload in [
        ("p/d01/ota/status", b"\xff\x00"), ("p/d01/ota/status", b'{"job_id": 5, "state": "succeeded"}'),
        ("p/d01/ota/status", b'{"job_id": "nope@d01", "state": "succeeded"}'),
        ("p/d01/ota/status", b'{"job_id": "r@d01", "state": "exploded"}'),
        ("p/d01/ota/status", b'{"job_id": "r@d01", "state": {"not": "a string"}}'),
        ("p/bad+id/heartbeat", b"{}"), ("p/d01/health", b'{"score": "high"}'), ("p/d01/heartbeat", b"[1]"),
        ("o/ota/rollouts/r/command", b"\x93\x01\x02\x03"), ("o/ota/releases/register", b""),
        ("p/d01/ota/status", b'{"job_id": "r@d02", "state": "succeeded"}'),
    ]:
        out = planner.handle([Inbound(topic, payload)])
        assert not jobs(out)
    status = published(planner.tick(planner.clock()), "/status")
    assert not status or status[-1]["counts"]["succeeded"] == 0


def test_waiting_jobs_are_re_signed_before_they_expire(world: tuple[Planner, Clock]) -> None:
    import base64

    planner, clock = world
    first = jobs(create(planner, job_expiry_s=3600))
    clock.t += 1700
    assert jobs(planner.tick(clock.t)) == {}
    clock.t += 200
    again = jobs(planner.tick(clock.t))
    assert set(again) == set(first)
    old = json.loads(base64.b64decode(first["d05"]["manifest"]))
    new = json.loads(base64.b64decode(again["d05"]["manifest"]))
    assert new["job_id"] == old["job_id"] and new["expires_at"] == old["expires_at"] + 1900
    report(planner, again["d05"], "d05", "downloading")
    clock.t += 1900
    assert "d05" not in jobs(planner.tick(clock.t))  # started: no longer refreshed


def test_a_restarted_planner_sends_events_that_may_not_have_gone_out(world: tuple[Planner, Clock], redis: Any,
                                                                     tmp_path: Path) -> None:
    planner, clock = world
    create(planner, stages=[50, 100], soak_s=600)
    planner.tick(clock.t)  # the created event is out by now
    lost = published(send(planner, "o/ota/rollouts/r/command", {"action": "advance"}), "/events")
    assert [e["seq"] for e in lost] == [2]
    # The process dies before that batch is published; it comes back with the same identity.
    again = make(redis, tmp_path, clock, owner="a")
    clock.t += 0.5
    resent = published(again.tick(clock.t), "/events")
    assert resent == lost
    assert published(again.tick(clock.t + 0.5), "/events") == []


def test_a_device_joins_once_its_hardware_is_known(world: tuple[Planner, Clock]) -> None:
    planner, clock = world
    send(planner, "p/x1/status", {"online": True, "fw": "1.0.0", "ts": 1})  # no hw yet
    assert "x1" not in jobs(create(planner))
    send(planner, "p/x1/heartbeat", {"hw": "c3", "fw": "1.0.0", "ts": 2, "seq": 1})
    clock.t += 0.5
    assert set(jobs(planner.tick(clock.t))) == {"x1"}
    send(planner, "p/x2/heartbeat", {"hw": "c6", "fw": "1.0.0", "ts": 2, "seq": 1})  # not built for c6
    clock.t += 0.5
    assert jobs(planner.tick(clock.t)) == {}


def test_a_job_goes_in_the_encoding_the_device_last_used(world: tuple[Planner, Clock]) -> None:
    import msgpack

    planner, _ = world
    beat = msgpack.packb({"hw": "c3", "fw": "1.0.0", "ts": 3, "seq": 2})
    planner.handle([Inbound("p/d07/heartbeat", beat)])
    out = create(planner)
    payloads = {p.topic: p.payload for p in out.publishes if p.topic.endswith("/ota/job")}
    assert msgpack.unpackb(payloads["p/d07/ota/job"])["job_id"] == "r@d07"
    assert json.loads(payloads["p/d08/ota/job"])["job_id"] == "r@d08"


def test_jobs_stored_but_perhaps_not_sent_go_out_again_after_a_restart(world: tuple[Planner, Clock],
                                                                        redis: Any, tmp_path: Path) -> None:
    planner, clock = world
    lost = {p.topic: p.payload for p in create(planner).publishes if p.topic.endswith("/ota/job")}
    assert len(lost) == 20
    again = make(redis, tmp_path, clock, owner="a")  # the same replica, restarted
    clock.t += 0.5
    resent = {p.topic: p.payload for p in again.tick(clock.t).publishes if p.topic.endswith("/ota/job")}
    assert resent == lost  # byte for byte: a device that has it already ignores it
    clock.t += 0.5
    assert jobs(again.tick(clock.t)) == {}


def test_advance_opens_the_next_stage_at_once(world: tuple[Planner, Clock]) -> None:
    planner, _ = world
    first = jobs(create(planner, stages=[20, 100], soak_s=3600))
    out = send(planner, "o/ota/rollouts/r/command", {"action": "advance"})
    assert published(out, "command/accepted")[0]["state"] == "running"
    assert set(jobs(out)) | set(first) == {f"d{i:02d}" for i in range(20)}


def test_only_the_device_itself_sets_its_encoding(world: tuple[Planner, Clock], redis: Any) -> None:
    # Issue 11: health (healthwatch's) and the Last Will (the broker's) are not the device speaking.
    import msgpack

    from daemons.registry import device_key

    planner, _ = world
    planner.handle([Inbound("p/mp-1/heartbeat", msgpack.packb({"hw": "c3", "fw": "1.0.0", "seq": 1}))])
    send(planner, "p/mp-1/health", {"score": 90, "status": "ok", "reasons": [], "ts": 1})
    send(planner, "p/mp-1/status", {"online": False})
    assert redis.hget(device_key("fleet", "mp-1"), "enc") == "msgpack"
