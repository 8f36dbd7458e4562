"""Devices written with the AWS IoT Device SDK's IotJobsClient, as its jobs sample does it.

Each device: subscribe to notify-next and to the start-next / update replies, then start-next
(with statusDetails {hw, fw}: how an AWS device tells the planner what it is); run the job it gets
through the statuses its rule says, each one an UpdateJobExecution that must be accepted; then
start-next again. A notify-next with an execution also triggers start-next.
"""

from __future__ import annotations

import base64
import json
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from awsiot import iotjobs as j

from tests.aws_sdk import QOS1, Events, SdkConnection, subscribed

# (AWS status, statusDetails) steps a device goes through for a job.
Steps = list[tuple[str, dict[str, str]]]
AwsRule = Callable[[str, dict[str, Any]], Steps]


def aws_succeed(thing: str, manifest: dict[str, Any]) -> Steps:
    return [("IN_PROGRESS", {"state": "downloading"}), ("IN_PROGRESS", {"state": "verifying"}),
            ("SUCCEEDED", {"fw": manifest["version"]})]


class AwsDevice:
    def __init__(self, url: str, thing: str, rule: AwsRule, hw: str = "c3", fw: str = "1.0.0",
                 kind: str = "mqtt311") -> None:
        self.thing = thing
        self.rule = rule
        self.hw = hw
        self.fw = fw
        self.ev = Events()
        self.executions: list[Any] = []  # every JobExecutionData started
        self.finished: dict[str, str] = {}  # jobId -> last status sent and accepted
        self.changed = threading.Condition()
        self.rejections: list[Any] = []
        self.notified: list[str | None] = []  # notify-next events: the execution's jobId, or None
        self.nothing_next = threading.Event()  # a notify-next without an execution arrived
        self._work: queue.Queue[str | None] = queue.Queue()
        self.conn = SdkConnection(url, f"aws-{thing}", kind)
        self.jobs = j.IotJobsClient(self.conn.connection)
        t = {"thing_name": thing}
        subscribed(self.jobs.subscribe_to_next_job_execution_changed_events(
            j.NextJobExecutionChangedSubscriptionRequest(**t), QOS1, self._on_next))
        subscribed(self.jobs.subscribe_to_start_next_pending_job_execution_accepted(
            j.StartNextPendingJobExecutionSubscriptionRequest(**t), QOS1, self.ev.on("start+")))
        subscribed(self.jobs.subscribe_to_start_next_pending_job_execution_rejected(
            j.StartNextPendingJobExecutionSubscriptionRequest(**t), QOS1, self.ev.on("start-")))
        subscribed(self.jobs.subscribe_to_update_job_execution_accepted(
            j.UpdateJobExecutionSubscriptionRequest(job_id="+", **t), QOS1, self.ev.on("update+")))
        subscribed(self.jobs.subscribe_to_update_job_execution_rejected(
            j.UpdateJobExecutionSubscriptionRequest(job_id="+", **t), QOS1, self.ev.on("update-")))
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._work.put("start-next")

    def _on_next(self, event: j.NextJobExecutionChangedEvent) -> None:
        self.notified.append(event.execution.job_id if event.execution is not None else None)
        if event.execution is None:
            self.nothing_next.set()
        if event.execution is not None:
            self._work.put("start-next")

    def _run(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            try:
                self._start_next()
            except Exception as exc:  # a test failure shows in the planner's counts; keep the reason
                self.rejections.append(exc)

    def _start_next(self) -> None:
        self.jobs.publish_start_next_pending_job_execution(j.StartNextPendingJobExecutionRequest(
            thing_name=self.thing, status_details={"hw": self.hw, "fw": self.fw},
            client_token=f"sn-{time.monotonic_ns()}"), QOS1).result(10)
        reply: j.StartNextJobExecutionResponse = self.ev.next("start+")
        execution = reply.execution
        if execution is None or execution.job_id in self.finished:
            return
        self.executions.append(execution)
        manifest = json.loads(base64.b64decode(execution.job_document["manifest"]))
        assert manifest["device_id"] == self.thing and execution.status == "IN_PROGRESS"
        status = "IN_PROGRESS"  # start-next started it; the rule's IN_PROGRESS steps add details
        for status, details in self.rule(self.thing, manifest):
            self.jobs.publish_update_job_execution(j.UpdateJobExecutionRequest(
                thing_name=self.thing, job_id=execution.job_id, status=status, status_details=details,
                include_job_execution_state=True), QOS1).result(10)
            accepted: j.UpdateJobExecutionResponse = self.ev.next("update+")
            assert accepted.execution_state.status == status, accepted
            if status == "SUCCEEDED":
                self.fw = manifest["version"]
        if status != "IN_PROGRESS":
            with self.changed:
                self.finished[execution.job_id] = status
                self.changed.notify_all()
            self._work.put("start-next")

    def wait_finished(self, job_id: str, timeout: float = 10.0) -> str | None:
        """The last status this device set on `job_id`, once it is terminal (None: not in time)."""
        with self.changed:
            self.changed.wait_for(lambda: job_id in self.finished, timeout)
            return self.finished.get(job_id)

    def close(self) -> None:
        self._work.put(None)
        self._thread.join(10)
        self.conn.close()
