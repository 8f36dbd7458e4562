"""What the planner tells operators about a rollout: retained status and the event stream
(`{ops}/ota/rollouts/{id}/status` and `/events`, PROTOCOL §3).

Events are sent at least once: the highest seq this replica published is recorded after the
run loop sent it (`mark_sent`), and a replica that takes a rollout over sends the rest again.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from daemons.protocol.messages import Outcome, Publish
from otaplanner.records import Rollout
from otaplanner.rollout import Counts

Tally = tuple[Counts, int]  # counts per device state, and the counts' version (`_v`)


class EventLog(Protocol):
    """What reporting needs of the rollout store (otaplanner.rollout_store.RolloutStore)."""

    def counts(self, rid: str, kind: str = "") -> Tally: ...

    def mark_sent(self, sent: dict[str, int]) -> None: ...

    def unsent_events(self, rid: str) -> list[str]: ...


class Reporter:
    def __init__(self, store: EventLog, ops: str) -> None:
        self.store = store
        self.ops = ops
        self.sent: dict[str, int] = {}  # rollout -> highest event seq this replica published
        self._published: dict[str, tuple[str, int]] = {}

    def topic(self, rid: str, part: str) -> str:
        return f"{self.ops}/ota/rollouts/{rid}/{part}"

    @staticmethod
    def status(r: Rollout, tally: Tally, rollback: Tally, now: float) -> dict[str, Any]:
        """The retained status body (PROTOCOL §3); `rollback_counts` only once there are rollback jobs."""
        counts, rb_counts = tally[0], rollback[0]
        body: dict[str, Any] = {
            "rollout_id": r.rid, "version": r.cfg.version, "state": r.state, "stage": r.stage,
            "stage_pct": r.cfg.stages[r.stage], "stages": list(r.cfg.stages),
            "stage_opened_at": int(r.opened_at), "counts": counts.public(), "devices": counts.total,
            "reason": r.reason, "timestamp": int(now),
        }
        if rb_counts.total:
            body["rollback_counts"] = rb_counts.public()
        return body

    def publish_status(self, r: Rollout, now: float, out: Outcome, tally: Tally | None = None,
                       force: bool = False) -> None:
        """Queue the status unless nothing changed since this replica last sent it (or `force`).

        `tally`: the rollout's counts when the caller has read them already.
        """
        if tally is None:
            tally = self.store.counts(r.rid)
        rollback = self.store.counts(r.rid, "rb:")
        version = tally[1] + rollback[1]
        if not force and self._published.get(r.rid) == (r.rev, version):
            return
        self._published[r.rid] = (r.rev, version)
        out.publish(self.topic(r.rid, "status"), self.status(r, tally, rollback, now), retain=True)

    @staticmethod
    def event(r: Rollout, kind: str, to: str, reason: str, now: float, **extra: Any) -> dict[str, Any]:
        # seq: the rollout's rev once this transition is stored, so consumers can drop a duplicate
        # (events are sent at least once: again by a replica that takes the rollout over).
        return {"rollout_id": r.rid, "seq": int(r.rev) + 1, "event": kind, "from": r.state, "state": to,
                "stage": extra.pop("stage", r.stage), "reason": reason, "timestamp": int(now), **extra}

    def publish_event(self, rid: str, event: dict[str, Any], out: Outcome) -> None:
        out.publish(self.topic(rid, "events"), event)
        self.sent[rid] = max(self.sent.get(rid, 0), int(event["seq"]))

    def mark_sent(self) -> None:
        """What the previous batch or tick published is out by now: record it."""
        self.store.mark_sent(self.sent)
        self.sent = {}

    def resend_events(self, rid: str, out: Outcome) -> None:
        """Events stored but perhaps never published (a crash between the two), except ours."""
        for raw in self.store.unsent_events(rid):
            if json.loads(raw).get("seq", 0) > self.sent.get(rid, 0):  # not just sent by this replica
                out.publishes.append(Publish(self.topic(rid, "events"), raw.encode(), 1, False))
