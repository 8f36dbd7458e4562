"""The AWS IoT Jobs device-side MQTT API over the planner's jobs (docs/AWS.md), for devices written
with an AWS IoT Device SDK (its IotJobsClient), unchanged.

Served when the device prefix is `$aws/things` (the SDKs fix it), next to `{p}/{id}/ota/job`:
  `{p}/{thing}/jobs/get`                 -> `.../get/accepted` {inProgressJobs, queuedJobs}
  `{p}/{thing}/jobs/start-next`          -> `.../start-next/accepted` {execution?} (QUEUED -> IN_PROGRESS)
  `{p}/{thing}/jobs/{jobId}/get`         -> `.../{jobId}/get/accepted` {execution} (`$next`: the pending one)
  `{p}/{thing}/jobs/{jobId}/update`      -> `.../{jobId}/update/accepted` {executionState?, jobDocument?}
  every request -> `.../rejected` {code, message, timestamp, clientToken?, executionState?} on refusal
  `{p}/{thing}/jobs/notify-next`         <- {timestamp, execution?} when a job is issued or cleared

Translation only: a job execution is the planner's device record; an update becomes the §3 report
it stands for (IN_PROGRESS -> downloading, SUCCEEDED, FAILED, REJECTED -> the same words) and goes
through the planner's one report rule (gates, timeouts, halts); its answer says how that went.
What AWS has and §3 has not is kept beside it, per device (`ota:aws:{<device>}`): the execution's
versionNumber and statusDetails.

AWS jobId = the rollout id (`@rollback` appended for a rollback job): one AWS job per rollout, one
execution per thing, as in AWS IoT. executionNumber is always 1. Shapes: AWS IoT developer guide,
"Jobs device MQTT API operations", and the SDK's awsiot.iotjobs models.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from daemons.protocol.codec import CodecError, decode
from daemons.protocol.messages import Outcome, client_token_of, device_topic, valid_device_id
from otaplanner import rollout as ro
from otaplanner.records import DeviceRecord, job_id_for
from otaplanner.rollback import RB, RB_SUFFIX, rollback_job_id
from otaplanner.rollout_store import RolloutStore

AWS_PREFIX = "$aws/things"
ROLLBACK_TAIL = "@rollback"
NEXT = "$next"

# Our device states as AWS job execution statuses.
TO_AWS = {
    ro.PENDING: "QUEUED", ro.ISSUED: "QUEUED", ro.IN_PROGRESS: "IN_PROGRESS", ro.SUCCEEDED: "SUCCEEDED",
    ro.FAILED: "FAILED", ro.ROLLED_BACK: "FAILED", ro.REJECTED: "REJECTED", ro.TIMED_OUT: "TIMED_OUT",
    ro.WITHDRAWN: "CANCELED",
}
# What a device may set (UpdateJobExecution) and the §3 report it stands for. statusDetails.state may
# name a finer §3 state of the same status (e.g. FAILED + "rolled_back", IN_PROGRESS + "verifying").
FROM_AWS = {"IN_PROGRESS": "downloading", "SUCCEEDED": "succeeded", "FAILED": "failed",
            "REJECTED": "rejected"}
# AWS limits on statusDetails: at most 10 string pairs.
MAX_DETAILS = 10
MAX_DETAIL_CHARS = 1024

# The planner's report rule: (device, §3 status body, now, outcome) -> (rollout touched, result),
# result being the previous state or one of nojob, terminal, same, malformed, unknown_job.
Report = Callable[[str, dict[str, Any], float, Outcome], tuple[str | None, str]]
# What a request said about the device (`hw`, `fw` from statusDetails), for the registry.
Said = dict[str, str]


class JobsRejected(Exception):
    """An AWS Jobs refusal: `code` is AWS's error code string (RejectedErrorCode)."""

    def __init__(self, code: str, message: str, state: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.state = state


def serves(prefix: str) -> bool:
    return prefix == AWS_PREFIX


def request_of(kind: str) -> tuple[str, str | None] | None:
    """`jobs/get` -> ("get", None), `jobs/{id}/update` -> ("update", id); None if not a request."""
    parts = kind.split("/")
    if parts[0] != "jobs":
        return None
    if len(parts) == 2 and parts[1] in ("get", "start-next"):
        return parts[1], None
    if len(parts) == 3 and parts[2] in ("get", "update") and parts[1]:
        return parts[2], parts[1]
    return None


def aws_job_id(job_id: str) -> str:
    """`r1@dev` -> `r1`, `r1@dev#rb` -> `r1@rollback` (`#` cannot be in a topic)."""
    rid = job_id.partition("@")[0]
    return rid + ROLLBACK_TAIL if job_id.endswith(RB_SUFFIX) else rid


def our_job_id(aws_id: str, thing: str) -> str | None:
    rollback = aws_id.endswith(ROLLBACK_TAIL)
    rid = aws_id[:-len(ROLLBACK_TAIL)] if rollback else aws_id
    if not ro.NAME_RE.fullmatch(rid):
        return None
    return rollback_job_id(rid, thing) if rollback else job_id_for(rid, thing)


def status_details(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or len(raw) > MAX_DETAILS or not all(
            isinstance(k, str) and isinstance(v, str) and len(k) <= 128 and len(v) <= MAX_DETAIL_CHARS
            for k, v in raw.items()):
        raise JobsRejected("InvalidRequest", f"statusDetails: at most {MAX_DETAILS} string pairs")
    return dict(raw)


def report_body(job_id: str, status: str, details: dict[str, str]) -> dict[str, Any]:
    """The §3 `ota/status` body an AWS status update stands for."""
    if status not in FROM_AWS:
        raise JobsRejected("InvalidRequest", f"status: expected one of {', '.join(FROM_AWS)}, got {status!r}")
    state = FROM_AWS[status]
    finer = details.get("state")
    if finer in ro.REPORTED and TO_AWS[ro.REPORTED[finer]] == status:
        state = finer
    body: dict[str, Any] = {"job_id": job_id, "state": state}
    if "error" in details:
        body["error"] = details["error"]
    return body


class AwsJobs:
    """Answers the Jobs requests of one batch; notify-next for the jobs the planner publishes."""

    def __init__(self, store: RolloutStore, prefix: str, report: Report) -> None:
        self.store = store
        self.extras = ExecutionExtras(store.redis)
        self.prefix = prefix
        self.report = report

    def topics(self) -> list[str]:
        p = self.prefix
        return [f"{p}/+/jobs/get", f"{p}/+/jobs/start-next", f"{p}/+/jobs/+/get", f"{p}/+/jobs/+/update"]

    def route(self, topic: str) -> tuple[str, str] | None:
        """(thing, `jobs/...` kind) when `topic` is a Jobs request of a valid thing name."""
        split = device_topic(topic, self.prefix)
        if split is None or request_of(split[1]) is None or not valid_device_id(split[0]):
            return None
        return split

    # -- the execution, read from the planner's records ---------------------------------------

    def _execution(self, thing: str, job_id: str) -> tuple[str, str, DeviceRecord] | None:
        """(rollout, key kind, device record) of this job, if it is the device's job in that rollout."""
        rid = job_id.partition("@")[0]
        kind = RB if job_id.endswith(RB_SUFFIX) else ""
        rec = self.store.records_of(rid, [thing], kind).get(thing)
        if rec is None or rec.job_id != job_id:
            return None
        return rid, kind, rec

    def _pending(self, thing: str) -> str | None:
        """The job id of the device's one open job (QUEUED or IN_PROGRESS), if any."""
        slot = self.store.current(thing)
        if slot is None:
            return None
        found = self._execution(thing, slot)
        return slot if found and found[2].state in (ro.ISSUED, ro.IN_PROGRESS) else None

    def execution(self, thing: str, job_id: str, with_document: bool = True) -> dict[str, Any] | None:
        """JobExecutionData of this job for this thing."""
        found = self._execution(thing, job_id)
        if found is None:
            return None
        rid, kind, rec = found
        version, details = self.extras.read(thing, job_id)
        times = [t for t in (rec.issued_at, rec.in_progress_at, rec.decided_at) if t]
        data: dict[str, Any] = {
            "jobId": aws_job_id(job_id), "thingName": thing, "status": TO_AWS[rec.state],
            "versionNumber": version, "executionNumber": 1,
        }
        if rec.issued_at:
            data["queuedAt"] = int(rec.issued_at)
        if rec.in_progress_at:
            data["startedAt"] = int(rec.in_progress_at)
        if times:
            data["lastUpdatedAt"] = int(max(times))
        if details:
            data["statusDetails"] = details
        if with_document:
            stored = self.store.jobs(rid, [thing], kind).get(thing)
            if stored:
                data["jobDocument"] = stored["job"]
        return data

    @staticmethod
    def _state(data: dict[str, Any]) -> dict[str, Any]:
        """JobExecutionState: what update/accepted and rejections carry."""
        return {k: data[k] for k in ("status", "statusDetails", "versionNumber") if k in data}

    # -- requests --------------------------------------------------------------------------

    def handle(self, thing: str, kind: str, payload: bytes, now: float,
               out: Outcome) -> tuple[str | None, Said]:
        """Answer one request on `{p}/{thing}/{kind}`: (rollout touched, what it said of the device)."""
        op, aws_id = request_of(kind) or ("", None)
        base = f"{self.prefix}/{thing}/{kind}"
        token: str | None = None
        touched: str | None = None
        said: Said = {}
        try:
            try:
                body, _ = decode(payload, empty_as={})
            except CodecError:
                raise JobsRejected("InvalidJson", "the payload is not a JSON object") from None
            token = client_token_of(body)
            if "clientToken" in body and token is None:
                raise JobsRejected("InvalidRequest", "clientToken: a string of at most 64 characters")
            answer: dict[str, Any]
            if op == "get" and aws_id is None:
                answer = self._get(thing)
            elif op == "get":
                answer = self._describe(thing, str(aws_id), body)
            elif op == "start-next":
                said = _said(status_details(body.get("statusDetails")))
                answer, touched = self._start_next(thing, body, now, out)
            else:
                said = _said(status_details(body.get("statusDetails")))
                answer, touched = self._update(thing, str(aws_id), body, now, out)
        except JobsRejected as exc:
            error: dict[str, Any] = {"code": exc.code, "message": exc.message, "timestamp": int(now)}
            if exc.state:
                error["executionState"] = exc.state
            if token is not None:
                error["clientToken"] = token
            out.publish(f"{base}/rejected", error)
            out.count("aws_jobs", exc.code)
            return None, said
        answer["timestamp"] = int(now)
        if token is not None:
            answer["clientToken"] = token
        out.publish(f"{base}/accepted", answer)
        out.count("aws_jobs", op)
        return touched, said

    def _get(self, thing: str) -> dict[str, Any]:
        pending = self._pending(thing)
        data = self.execution(thing, pending, with_document=False) if pending else None
        summary = {k: data[k] for k in ("jobId", "queuedAt", "startedAt", "lastUpdatedAt",
                                        "versionNumber", "executionNumber") if k in data} if data else None
        in_progress = [summary] if data and data["status"] == "IN_PROGRESS" else []
        queued = [summary] if data and data["status"] == "QUEUED" else []
        return {"inProgressJobs": in_progress, "queuedJobs": queued}

    def _describe(self, thing: str, aws_id: str, body: dict[str, Any]) -> dict[str, Any]:
        job_id = self._pending(thing) if aws_id == NEXT else our_job_id(aws_id, thing)
        if aws_id == NEXT and job_id is None:
            return {}  # AWS: $next with nothing pending is accepted, without an execution
        with_document = body.get("includeJobDocument", True) is not False
        data = self.execution(thing, job_id, with_document) if job_id else None
        if data is None:
            raise JobsRejected("ResourceNotFound", f"no job execution {aws_id!r} for {thing!r}")
        return {"execution": data}

    def _start_next(self, thing: str, body: dict[str, Any], now: float,
                    out: Outcome) -> tuple[dict[str, Any], str | None]:
        details = status_details(body.get("statusDetails"))
        job_id = self._pending(thing)
        if job_id is None:
            return {}, None
        data = self.execution(thing, job_id)
        touched = None
        if data is not None and data["status"] == "QUEUED":
            touched, result = self.report(thing, report_body(job_id, "IN_PROGRESS", details), now, out)
            if result == ro.ISSUED:
                self.extras.bump(thing, job_id, details)
            data = self.execution(thing, job_id)
        return ({"execution": data} if data else {}), touched

    def _update(self, thing: str, aws_id: str, body: dict[str, Any], now: float,
                out: Outcome) -> tuple[dict[str, Any], str | None]:
        details = status_details(body.get("statusDetails"))
        job_id = our_job_id(aws_id, thing)
        before = self.execution(thing, job_id, with_document=False) if job_id else None
        if job_id is None or before is None:
            raise JobsRejected("ResourceNotFound", f"no job execution {aws_id!r} for {thing!r}")
        status = body.get("status")
        report = report_body(job_id, str(status), details)
        expected = body.get("expectedVersion")
        if expected is not None and (not isinstance(expected, int) or isinstance(expected, bool)):
            raise JobsRejected("InvalidRequest", "expectedVersion: an integer")
        if expected is not None and expected != before["versionNumber"]:
            raise JobsRejected("VersionMismatch", f"expectedVersion {expected} is not "
                               f"{before['versionNumber']}", self._state(before))
        touched, result = self.report(thing, report, now, out)
        if result in ("nojob", "unknown_job", "malformed"):
            raise JobsRejected("ResourceNotFound", f"no job execution {aws_id!r} for {thing!r}")
        if result == "terminal":
            raise JobsRejected("InvalidStateTransition", f"the execution is {before['status']}: "
                               f"it cannot become {status}", self._state(before))
        self.extras.bump(thing, job_id, details)
        after = self.execution(thing, job_id, with_document=body.get("includeJobDocument") is True) or before
        answer: dict[str, Any] = {}
        if body.get("includeJobExecutionState") is True:
            answer["executionState"] = self._state(after)
        if "jobDocument" in after:
            answer["jobDocument"] = after["jobDocument"]
        return answer, touched

    # -- notifications -----------------------------------------------------------------------

    def notify(self, out: Outcome, now: float) -> None:
        """A notify-next for every job the outcome publishes (or clears) on `{p}/{thing}/ota/job`."""
        for message in list(out.publishes):
            split = device_topic(message.topic, self.prefix)
            if split is None or split[1] != "ota/job":
                continue
            thing = split[0]
            event: dict[str, Any] = {"timestamp": int(now)}
            if message.payload:
                try:
                    job, _ = decode(message.payload)
                except CodecError:
                    continue
                job_id = job.get("job_id")
                if not isinstance(job_id, str):
                    continue
                event["execution"] = {
                    "jobId": aws_job_id(job_id), "thingName": thing, "jobDocument": job, "status": "QUEUED",
                    "queuedAt": int(now), "lastUpdatedAt": int(now), "versionNumber": 1, "executionNumber": 1,
                }
            out.publish(f"{self.prefix}/{thing}/jobs/notify-next", event)


class ExecutionExtras:
    """What AWS keeps of an execution and §3 has not: versionNumber and statusDetails, per device
    (`ota:aws:{<device>}`: job, v, details), for its latest AWS-touched job."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis

    @staticmethod
    def key(thing: str) -> str:
        return f"ota:aws:{{{thing}}}"

    def read(self, thing: str, job_id: str) -> tuple[int, dict[str, str]]:
        """(versionNumber, statusDetails) of this job: (1, {}) until the device updated it."""
        raw = self.redis.hgetall(self.key(thing))
        if raw.get("job") != job_id:
            return 1, {}
        return int(raw.get("v", 1)), json.loads(raw.get("details", "{}"))

    def bump(self, thing: str, job_id: str, details: dict[str, str]) -> None:
        """An accepted update: versionNumber + 1, statusDetails merged."""
        version, old = self.read(thing, job_id)
        self.redis.hset(self.key(thing), mapping={"job": job_id, "v": version + 1,
                                                  "details": json.dumps({**old, **details})})


def _said(details: dict[str, str]) -> Said:
    """A Jobs request's statusDetails `hw` and `fw`: what it tells the registry of the device."""
    return {name: details[name] for name in ("hw", "fw") if name in details}
