"""AWS IoT Jobs device API: devices on the official SDK's IotJobsClient take part in our rollouts.

FLEET_TOPIC_PREFIX=$aws/things, otherwise the default configuration (MQTT 5, shared subscriptions
auto), real mosquitto and Redis, the planner as a process. amqtt 0.12 cannot carry `$aws/things`
(the planner refuses to start there: tests/daemons/runtime/test_dollar_prefix.py).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
from awsiot import iotjobs as j

from tests.aws_sdk import QOS1, Events, SdkConnection, subscribed
from tests.otaplanner.aws_fleet import AwsDevice, AwsRule, Steps, aws_succeed
from tests.otaplanner.planner_env import Env, ota
from tests.support import iter_unique

__all__ = ["ota"]

_names = iter_unique("aws")


@pytest.fixture
def prefixes() -> tuple[str, str]:
    return "$aws/things", f"ops{next(_names)}"


@pytest.fixture
def things() -> Iterator[list[AwsDevice]]:
    made: list[AwsDevice] = []
    yield made
    for d in made:
        d.close()


def fleet(ota: Env, things: list[AwsDevice], n: int, rule: AwsRule = aws_succeed,
          kind: str = "mqtt311") -> list[str]:
    """`n` SDK devices with unique thing names (the prefix is shared by every test)."""
    tag = next(_names)
    ids = [f"{tag}-{i:03d}" for i in range(n)]
    things.extend(AwsDevice(ota.broker.url, t, rule, kind=kind) for t in ids)
    return ids


def test_staged_rollout_completes_through_the_sdk_jobs_client(ota: Env, things: list[AwsDevice]) -> None:
    ota.planner()
    ota.release()
    ids = fleet(ota, things, 20)
    ota.wait_known(20)  # start-next with statusDetails {hw, fw} made them known
    ota.create("ra", stages=[10, 50, 100], soak_s=0, success_pct=95, min_devices_for_gate=5)
    done = ota.wait_state("ra", "completed")
    assert done["counts"]["succeeded"] == 20 and done["stage"] == 2, done
    assert [e["stage"] for e in ota.events("ra") if e["event"] == "stage_opened"] == [1, 2]
    for d in things:
        assert d.wait_finished("ra") == "SUCCEEDED" and [e.job_id for e in d.executions] == ["ra"]
        assert not d.rejections, d.rejections
        doc = d.executions[0].job_document  # our signed job, as the job document
        assert doc["job_id"] == f"ra@{d.thing}" and doc["alg"] == "hmac-sha256" and doc["sig"]
        assert json.loads(base64.b64decode(doc["manifest"]))["version"] == "2.0.0"
    # notify-next: the job when issued, then nothing next once the finished job is cleared
    assert all(d.nothing_next.wait(10) for d in things)
    assert all(d.notified[0] == "ra" and d.notified[-1] is None for d in things), [d.notified for d in things]
    # statusDetails.fw reached the registry, as an ota/status `fw` does
    assert ota.redis.hget(f"fleet:dev:{{{ids[0]}}}", "fw") == "2.0.0"


def test_describe_get_and_refusals_parsed_by_the_sdk(ota: Env, things: list[AwsDevice]) -> None:
    ota.planner()
    ota.release()
    ids = fleet(ota, things, 1, rule=lambda t, m: [])  # takes the job (start-next), then stays silent
    ota.wait_known(1)
    ota.create("rd", stages=[100], soak_s=0, timeout_s=600)
    thing = ids[0]
    # the device got notify-next and started the job (start-next): the rollout counts it in progress
    ota.wait_status("rd", lambda b: b["counts"].get("in_progress") == 1)
    conn = SdkConnection(ota.broker.url, f"peer-{thing}")  # a second session of the same thing
    try:
        client = j.IotJobsClient(conn.connection)
        ev = Events()
        t = {"thing_name": thing}
        subscribed(client.subscribe_to_get_pending_job_executions_accepted(
            j.GetPendingJobExecutionsSubscriptionRequest(**t), QOS1, ev.on("pending")))
        for jid in ("rd", "nope", "$next"):
            describe = j.DescribeJobExecutionSubscriptionRequest(job_id=jid, **t)
            update = j.UpdateJobExecutionSubscriptionRequest(job_id=jid, **t)
            for subscribe, request, name in (
                    (client.subscribe_to_describe_job_execution_accepted, describe, "describe+"),
                    (client.subscribe_to_describe_job_execution_rejected, describe, "describe-"),
                    (client.subscribe_to_update_job_execution_accepted, update, "update+"),
                    (client.subscribe_to_update_job_execution_rejected, update, "update-")):
                subscribed(subscribe(request, QOS1, ev.on(name + jid)))

        # the device started it: get lists it in progress, describe gives the document
        client.publish_get_pending_job_executions(j.GetPendingJobExecutionsRequest(
            client_token="p1", **t), QOS1).result(10)
        pending: j.GetPendingJobExecutionsResponse = ev.next("pending")
        assert pending.client_token == "p1" and pending.queued_jobs == []
        assert len(pending.in_progress_jobs) == 1
        summary = pending.in_progress_jobs[0]
        assert summary.job_id == "rd" and summary.execution_number == 1 and summary.version_number == 2
        assert summary.queued_at is not None and summary.started_at is not None

        client.publish_describe_job_execution(j.DescribeJobExecutionRequest(
            job_id="$next", client_token="n1", **t), QOS1).result(10)
        nxt: j.DescribeJobExecutionResponse = ev.next("describe+$next")
        assert nxt.execution.job_id == "rd" and nxt.execution.status == "IN_PROGRESS"
        assert nxt.execution.job_document["job_id"] == f"rd@{thing}" and nxt.client_token == "n1"
        assert nxt.execution.status_details == {"hw": "c3", "fw": "1.0.0"}

        client.publish_describe_job_execution(j.DescribeJobExecutionRequest(
            job_id="nope", client_token="n2", **t), QOS1).result(10)
        missing: j.RejectedError = ev.next("describe-nope")
        assert missing.code == "ResourceNotFound" and missing.client_token == "n2"

        # a stale expectedVersion: VersionMismatch with the execution's state
        client.publish_update_job_execution(j.UpdateJobExecutionRequest(
            job_id="rd", status="IN_PROGRESS", expected_version=1, client_token="u1", **t), QOS1).result(10)
        stale: j.RejectedError = ev.next("update-rd")
        assert stale.code == "VersionMismatch" and stale.execution_state.version_number == 2
        # a status a device may not set: InvalidRequest
        client.publish_update_job_execution(j.UpdateJobExecutionRequest(
            job_id="rd", status="QUEUED", client_token="u2", **t), QOS1).result(10)
        assert ev.next("update-rd").code == "InvalidRequest"
        # progress, then the end, with the job document asked for
        client.publish_update_job_execution(j.UpdateJobExecutionRequest(
            job_id="rd", status="IN_PROGRESS", status_details={"state": "verifying"}, expected_version=2,
            include_job_execution_state=True, **t), QOS1).result(10)
        progress: j.UpdateJobExecutionResponse = ev.next("update+rd")
        assert progress.execution_state.version_number == 3
        assert progress.execution_state.status_details["state"] == "verifying"
        client.publish_update_job_execution(j.UpdateJobExecutionRequest(
            job_id="rd", status="SUCCEEDED", status_details={"fw": "2.0.0"}, include_job_document=True,
            client_token="u3", **t), QOS1).result(10)
        ok: j.UpdateJobExecutionResponse = ev.next("update+rd")
        assert ok.client_token == "u3" and ok.job_document["job_id"] == f"rd@{thing}"
        assert ok.execution_state is None  # not asked for
        # a terminal execution cannot change: InvalidStateTransition
        client.publish_update_job_execution(j.UpdateJobExecutionRequest(
            job_id="rd", status="FAILED", client_token="u4", **t), QOS1).result(10)
        late: j.RejectedError = ev.next("update-rd")
        assert late.code == "InvalidStateTransition" and late.execution_state.status == "SUCCEEDED"
        # describe of the finished one, and nothing next
        client.publish_describe_job_execution(j.DescribeJobExecutionRequest(job_id="rd", **t),
                                              QOS1).result(10)
        done = ev.next("describe+rd").execution
        assert done.status == "SUCCEEDED" and done.status_details["fw"] == "2.0.0"
        client.publish_describe_job_execution(j.DescribeJobExecutionRequest(job_id="$next", **t),
                                              QOS1).result(10)
        assert ev.next("describe+$next").execution is None
        assert ota.wait_state("rd", "completed")["counts"]["succeeded"] == 1
        # bad input: answered on the rejected topic, nothing stored, the planner carries on
        raw = ota.probe(f"$aws/things/{thing}/jobs/#")
        base = f"$aws/things/{thing}/jobs"
        for topic, payload in ((f"{base}/start-next", b"{broken"), (f"{base}/get", b"[1, 2]"),
                               (f"{base}/rd/update", b'{"status": "SUCCEEDED", "statusDetails": 5}'),
                               (f"{base}/rd/update", b'{"status": 7, "clientToken": "x"}')):
            r = raw.request(topic, raw=payload)
            assert r.topic == f"{topic}/rejected", r.body
            assert r.body["code"] in ("InvalidJson", "InvalidRequest"), r.body
    finally:
        conn.close()


def test_failures_rejections_and_timeouts_over_aws_jobs_halt_the_rollout(ota: Env,
                                                                         things: list[AwsDevice]) -> None:
    """2 rolled back + 2 rejected of 30 stay under the 20 % gate; 4 silent ones timing out pass it.
    Then `rollback`: the 22 updated devices get the rollback job (jobId `rh@rollback`) the same way."""
    ota.planner()
    ota.release("1.0.0")
    ota.release()

    def rule(thing: str, manifest: dict[str, object]) -> Steps:
        i = int(thing.rsplit("-", 1)[1])
        if i < 2:
            return [("IN_PROGRESS", {"state": "rebooting"}),
                    ("FAILED", {"state": "rolled_back", "error": "self-test failed"})]
        if i < 4:
            return [("REJECTED", {"error": "secure_version below the device's"})]
        if i < 8:
            return []  # silent after start-next: the in-progress timeout decides
        return aws_succeed(thing, manifest)

    fleet(ota, things, 30, rule, kind="mqtt5")
    ota.wait_known(30)
    # The gate waits for all 30 (fast failures must not decide alone); the soak keeps it from completing.
    ota.create("rh", stages=[100], soak_s=30, success_pct=50, min_devices_for_gate=30, max_failure_pct=20,
               timeout_s=2)
    halted = ota.wait_state("rh", "halted", timeout=60)
    assert "8 of 30" in halted["reason"] and "failure gate" in halted["reason"], halted
    counts = halted["counts"]
    assert (counts["rolled_back"], counts["rejected"], counts["timed_out"]) == (2, 2, 4)
    assert counts["succeeded"] == 22
    assert [e["event"] for e in ota.events("rh")] == ["created", "halted"]
    for d in things:
        assert not d.rejections, (d.thing, d.rejections)
    # A timed-out execution follows the planner's one report rule: IN_PROGRESS again is refused; a late
    # SUCCEEDED is taken, as a §3 late report is (the device's word wins; AWS IoT keeps TIMED_OUT final).
    silent = things[4]
    update = {"thing_name": silent.thing, "job_id": "rh", "include_job_execution_state": True}
    silent.jobs.publish_update_job_execution(j.UpdateJobExecutionRequest(status="IN_PROGRESS", **update),
                                             QOS1).result(10)
    refused: j.RejectedError = silent.ev.next("update-")
    assert refused.code == "InvalidStateTransition" and refused.execution_state.status == "TIMED_OUT"
    silent.jobs.publish_update_job_execution(j.UpdateJobExecutionRequest(
        status="SUCCEEDED", status_details={"fw": "2.0.0"}, **update), QOS1).result(10)
    taken: j.UpdateJobExecutionResponse = silent.ev.next("update+")
    assert taken.execution_state.status == "SUCCEEDED"
    ota.wait_status("rh", lambda b: b["counts"]["timed_out"] == 3 and b["counts"]["succeeded"] == 23)
    assert [e["event"] for e in ota.events("rh")] == ["created", "halted", "late_report"]

    # rollback: the 23 updated devices (the late one too) get job `rh@rollback`; 22 complete it, the
    # silent one times out again
    r = ota.command("rh", {"action": "rollback"})
    assert r.topic.endswith("/accepted") and r.body["rollback_jobs"] == 23, r.body
    ota.wait_status("rh", lambda b: b.get("rollback_counts", {}).get("succeeded") == 22)
    back = [d for d in things if d.finished.get("rh") == "SUCCEEDED"]
    assert len(back) == 22
    assert all(d.wait_finished("rh@rollback") == "SUCCEEDED" and d.fw == "1.0.0" for d in back), [
        (d.thing, d.finished, d.fw, d.rejections) for d in back]
