"""Driving one rollout: stages, gates, issuing and withdrawing jobs, status and events.

Every method stores its decision through `RolloutStore` first and only then queues the
publishes on the Outcome, which the run loop sends after the handler returns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from daemons.protocol.messages import Outcome, Publish
from daemons.registry import Registry
from daemons.runtime.logs import get_logger
from otaplanner import rollout as ro
from otaplanner.jobs import JobFactory
from otaplanner.rollout_store import RolloutStore

ISSUE_CHUNK = 1000
MAX_ISSUE_PER_TICK = 20_000
# A job stored but perhaps never published (crash between the two) is sent again by the
# replica that takes the rollout over; devices ignore a job id they already have.
REPUBLISH_WINDOW_S = 60
# A device left out for its hardware is looked at again after this long (its hw may become known).
EXCLUDED_RECHECK_S = 30


def job_id_for(rollout_id: str, device_id: str) -> str:
    # `@` is in neither a rollout id nor a device id: the rollout is found from the job id alone.
    return f"{rollout_id}@{device_id}"


def rollout_of(job_id: str) -> str | None:
    rid, sep, device = job_id.partition("@")
    return rid if sep and ro.NAME_RE.fullmatch(rid) and device else None


@dataclass(frozen=True)
class Rollout:
    rid: str
    cfg: ro.RolloutConfig
    release: dict[str, Any]
    state: str
    stage: int
    opened_at: float
    reason: str
    rev: str
    tokens: float
    tokens_at: float

    @classmethod
    def from_meta(cls, rid: str, meta: dict[str, str]) -> Rollout:
        return cls(rid, ro.RolloutConfig.from_json(json.loads(meta["config"])), json.loads(meta["release"]),
                   meta["state"], int(meta["stage"]), float(meta["opened_at"]), meta.get("reason", ""),
                   meta["rev"], float(meta.get("tokens", 0)), float(meta.get("tokens_at", 0)))


class Control:
    def __init__(self, store: RolloutStore, registry: Registry, jobs: JobFactory, prefix: str,
                 ops: str, owner: str, lease_ms: int = 3000, scan_interval_s: float = 1.0,
                 health_interval_s: float = 1.0, refresh_interval_s: float = 60.0) -> None:
        self.store = store
        self.registry = registry
        self.jobs = jobs
        self.prefix = prefix
        self.ops = ops
        self.owner = owner
        self.lease_ms = lease_ms
        self.scan_interval_s = scan_interval_s
        self.health_interval_s = health_interval_s
        self.refresh_interval_s = refresh_interval_s
        self.fleet_changed = True
        self.log = get_logger("otaplanner")
        self._owned: set[str] = set()
        self._published: dict[str, tuple[str, int]] = {}
        self._last_scan: dict[str, float] = {}
        self._last_health: dict[str, float] = {}
        self._last_refresh: dict[str, float] = {}
        self.sent: dict[str, int] = {}  # rollout -> highest event seq this replica published
        self._buckets: dict[str, dict[str, int]] = {}
        self._excluded: dict[str, dict[str, float]] = {}

    def device_news(self, device_id: str) -> None:
        """A device appeared or its hardware became known: look at the fleet again soon."""
        self.fleet_changed = True
        for excluded in self._excluded.values():
            excluded.pop(device_id, None)

    def load(self, rid: str) -> Rollout | None:
        meta = self.store.meta(rid)
        return Rollout.from_meta(rid, meta) if meta else None

    def topic(self, rid: str, part: str) -> str:
        return f"{self.ops}/ota/rollouts/{rid}/{part}"

    def job_topic(self, device_id: str) -> str:
        return f"{self.prefix}/{device_id}/ota/job"

    def publish_jobs(self, stored: dict[str, bool], jobs: dict[str, tuple[dict[str, Any], str]],
                     out: Outcome, counted_as: str) -> int:
        """Publish (retained) the jobs whose store script said yes; how many went out."""
        n = 0
        for device_id, ok in stored.items():
            if ok:
                job, enc = jobs[device_id]
                out.publish(self.job_topic(device_id), job, enc, retain=True)  # type: ignore[arg-type]
                out.count("job", counted_as)
                n += 1
        return n

    # -- status and transitions ---------------------------------------------------------------

    def status(self, r: Rollout, now: float) -> tuple[dict[str, Any], int]:
        counts, version = self.store.counts(r.rid)
        rollback, rb_version = self.store.counts(r.rid, "rb:")
        body: dict[str, Any] = {
            "rollout_id": r.rid, "version": r.cfg.version, "state": r.state, "stage": r.stage,
            "stage_pct": r.cfg.stages[r.stage], "stages": list(r.cfg.stages),
            "stage_opened_at": int(r.opened_at), "counts": counts.public(), "devices": counts.total,
            "reason": r.reason, "timestamp": int(now),
        }
        if rollback.total:
            body["rollback_counts"] = rollback.public()
        return body, version + rb_version

    def publish_status(self, rid: str, now: float, out: Outcome, force: bool = False) -> None:
        r = self.load(rid)
        if r is None:
            return
        body, version = self.status(r, now)
        if not force and self._published.get(rid) == (r.rev, version):
            return
        self._published[rid] = (r.rev, version)
        out.publish(self.topic(rid, "status"), body, retain=True)

    def event(self, r: Rollout, kind: str, to: str, reason: str, now: float, **extra: Any) -> dict[str, Any]:
        # seq: the rollout's rev once this transition is stored, so consumers can drop a duplicate
        # (events are sent at least once: again by a replica that takes the rollout over).
        return {"rollout_id": r.rid, "seq": int(r.rev) + 1, "event": kind, "from": r.state, "state": to,
                "stage": extra.pop("stage", r.stage), "reason": reason, "timestamp": int(now), **extra}

    def publish_event(self, rid: str, event: dict[str, Any], out: Outcome) -> None:
        out.publish(self.topic(rid, "events"), event)
        self.sent[rid] = max(self.sent.get(rid, 0), int(event["seq"]))

    def transition(self, r: Rollout, kind: str, to: str, reason: str, now: float, out: Outcome,
                   **fields: str) -> bool:
        """Store a transition (compare-and-set on the rollout's rev), then queue its event."""
        stage = int(fields.get("stage", r.stage))
        event = self.event(r, kind, to, reason, now, stage=stage)
        if to in ro.ACTIVE:
            self.store.set_active(r.rid, True)  # before: a crash must not leave it un-ticked
        rev = self.store.transition(r.rid, r.rev, {"state": to, "reason": reason,
                                                   "updated_at": str(int(now)), **fields}, event)
        if not rev:
            return False
        if to not in ro.ACTIVE:
            self.store.set_active(r.rid, False)
            self.store.trail([r.rid])
        self.publish_event(r.rid, event, out)
        out.count("rollout", kind)
        self.log.info("rollout_" + kind, rollout_id=r.rid, state=to, stage=stage, reason=reason)
        return True

    def stop(self, r: Rollout, kind: str, to: str, reason: str, now: float, out: Outcome) -> bool:
        """Halt or abort: store the transition, withdraw every job, clear the retained job topics."""
        if not self.transition(r, kind, to, reason, now, out):
            return False
        self.withdraw(r.rid, now, out)
        return True

    def withdraw(self, rid: str, now: float, out: Outcome) -> None:
        slots = self.store.withdraw(rid, now)
        self.clear_jobs(slots, out)

    def clear_jobs(self, slots: dict[str, str], out: Outcome) -> None:
        """An empty retained message takes a job back (or clears a finished one)."""
        self.store.free(slots)
        for device_id in slots:
            out.publishes.append(_empty(self.job_topic(device_id)))
        if slots:
            out.count("job", "cleared")

    # -- periodic work ----------------------------------------------------------------------

    def tick(self, rid: str, now: float, out: Outcome) -> None:
        if not self.store.lease(rid, self.owner, self.lease_ms):
            self._owned.discard(rid)
            return
        r = self.load(rid)
        if r is None or r.state not in ro.ACTIVE:
            self.store.set_active(rid, False)
            if r is not None:
                self.publish_status(rid, now, out)
            return
        if rid not in self._owned:
            self._owned.add(rid)
            self._republish(r, now, out)
        expired = self.store.expire(rid, now)
        if expired:
            out.count("job", "timed_out")
            self.clear_jobs(expired, out)
        counts, _ = self.store.counts(rid)
        verdict = ro.failure_gate(r.cfg, counts) or self._health_gate(r, now)
        if verdict is not None:
            self.stop(r, "halted", ro.HALTED, verdict.reason, now, out)
        else:
            if now - self._last_refresh.get(rid, 0.0) >= self.refresh_interval_s:
                self._last_refresh[rid] = now
                from otaplanner.refresh import refresh_expiring  # it builds on this module

                refresh_expiring(self, r, now, out)
            if r.state == ro.RUNNING:
                self._run(r, now, out)
        self.publish_status(rid, now, out)

    def trail(self, rid: str, now: float, out: Outcome) -> None:
        """A rollout that is over still times out jobs in progress and reports late news."""
        if not self.store.lease(rid, self.owner, self.lease_ms):
            self._owned.discard(rid)
            return
        if rid not in self._owned:  # e.g. this process restarted: send what may not have gone out
            self._owned.add(rid)
            self._resend_events(rid, out)
        for kind in ("", "rb:"):
            expired = self.store.expire(rid, now, kind)
            if expired:
                out.count("job", "timed_out")
                self.clear_jobs(expired, out)
        self.publish_status(rid, now, out)
        if not self.store.in_progress(rid):
            self.store.untrail(rid)

    def _run(self, r: Rollout, now: float, out: Outcome) -> None:
        self.scan(r, now, force=False)
        self.issue(r, now, out)
        counts, _ = self.store.counts(r.rid)
        verdict = ro.stage_gate(r.cfg, r.stage, r.opened_at, counts, now)
        if verdict is None:
            return
        if verdict.action == "halt":
            self.stop(r, "halted", ro.HALTED, verdict.reason, now, out)
        elif verdict.action == "complete":
            self.transition(r, "completed", ro.COMPLETED, verdict.reason, now, out)
        elif self.open_stage(r, r.stage + 1, verdict.reason, now, out):
            self._run_again(r.rid, now, out)

    def open_stage(self, r: Rollout, stage: int, reason: str, now: float, out: Outcome) -> bool:
        if not self.transition(r, "stage_opened", r.state, reason, now, out, stage=str(stage),
                               opened_at=repr(now)):
            return False
        self._last_scan.pop(r.rid, None)  # the new stage's devices are taken in at once
        return True

    def _run_again(self, rid: str, now: float, out: Outcome) -> None:
        r = self.load(rid)
        if r is not None and r.state == ro.RUNNING:
            self.scan(r, now, force=True)
            self.issue(r, now, out)

    def mark_sent(self) -> None:
        """What the previous batch or tick published is out by now: record it."""
        self.store.mark_sent(self.sent)
        self.sent = {}

    def _resend_events(self, rid: str, out: Outcome) -> None:
        for raw in self.store.unsent_events(rid):
            if json.loads(raw).get("seq", 0) > self.sent.get(rid, 0):  # not just sent by this replica
                out.publishes.append(Publish(self.topic(rid, "events"), raw.encode(), 1, False))

    def _republish(self, r: Rollout, now: float, out: Outcome) -> None:
        self._resend_events(r.rid, out)
        recent = [d for d, rec in self.store.records(r.rid).items()
                  if rec["s"] == ro.ISSUED and rec.get("t", 0) >= now - REPUBLISH_WINDOW_S]
        for device_id, stored in self.store.jobs(r.rid, recent).items():
            out.publish(self.job_topic(device_id), stored["job"], stored.get("enc", "json"), retain=True)
        self.publish_status(r.rid, now, out, force=True)

    # -- taking devices in and sending jobs --------------------------------------------------

    def scan(self, r: Rollout, now: float, force: bool) -> int:
        """Take in every fleet device that matches the selector and whose bucket is open."""
        due = now - self._last_scan.get(r.rid, 0.0) >= self.scan_interval_s
        if not (force or due or self.fleet_changed):
            return 0
        self._last_scan[r.rid] = now
        self.fleet_changed = False
        matched = self.registry.select(r.cfg.selector)
        known = self.store.device_ids(r.rid)
        buckets = self._buckets.setdefault(r.rid, {})
        excluded = self._excluded.setdefault(r.rid, {})
        limit = ro.threshold(r.cfg.stages, r.stage)
        candidates = []
        for device_id in matched:
            if device_id in known or now - excluded.get(device_id, -EXCLUDED_RECHECK_S) < EXCLUDED_RECHECK_S:
                continue
            b = buckets.get(device_id)
            if b is None:
                b = buckets[device_id] = ro.bucket(r.rid, device_id)
            if b < limit:
                candidates.append(device_id)
        if not candidates:
            return 0
        hw_ok = set(r.release.get("hw") or [])
        records: dict[str, dict[str, Any]] = {}
        for device_id, info in self.registry.read_many(candidates).items():
            if hw_ok and info.hw not in hw_ok:
                excluded[device_id] = now  # the release is not built for this hardware (or unknown yet)
                continue
            rec: dict[str, Any] = {"s": ro.PENDING, "b": buckets[device_id], "h": info.hw or "",
                                   "f": info.fw or ""}
            if info.fw == r.cfg.version:
                rec.update(s=ro.SUCCEEDED, d=int(now), a=1)
            records[device_id] = rec
        return self.store.assign(r.rid, records)

    def issue(self, r: Rollout, now: float, out: Outcome) -> int:
        allowance = ro.rate_allowance(r.cfg.rate_per_min, r.tokens, r.tokens_at, now)
        limit = int(min(MAX_ISSUE_PER_TICK, allowance))
        issued = 0
        if limit > 0:
            for start in range(0, limit, ISSUE_CHUNK):
                pending = self.store.pending(r.rid, min(ISSUE_CHUNK, limit - start))
                if not pending:
                    break
                issued += self._issue_chunk(r, pending, now, out)
        if r.cfg.rate_per_min is not None:
            self.store.set_tokens(r.rid, max(0.0, allowance - issued), now)
        return issued

    def _issue_chunk(self, r: Rollout, pending: list[str], now: float, out: Outcome) -> int:
        ids = {d: job_id_for(r.rid, d) for d in pending}
        encodings = self.store.claim(r.rid, ids)
        claimed = list(encodings)
        if len(claimed) < len(pending):
            out.count("job", "device_busy")  # in another rollout's job still
        if not claimed:
            return 0
        hw = dict(zip(claimed, self.store.redis.hmget(self.store.key(r.rid, "dev"), claimed), strict=True))
        made: dict[str, tuple[str, str]] = {}
        payloads: dict[str, tuple[dict[str, Any], str]] = {}
        for device_id in claimed:
            rec = json.loads(hw[device_id] or "{}")
            enc = encodings[device_id]
            job = self.jobs.make(device_id, rec.get("h") or None, ids[device_id], r.rid, r.release,
                                 r.cfg.job_expiry_s, now)
            payloads[device_id] = (job, enc)
            made[device_id] = (ids[device_id], json.dumps({"job": job, "enc": enc}, separators=(",", ":")))
        return self.publish_jobs(self.store.issue(r.rid, now, made), payloads, out, "issued")

    # -- the health gate ----------------------------------------------------------------------

    def _health_gate(self, r: Rollout, now: float) -> ro.Verdict | None:
        if now - self._last_health.get(r.rid, 0.0) < self.health_interval_s:
            return None
        self._last_health[r.rid] = now
        health = self.store.health()
        if not health:
            return None
        updated: dict[str, list[float]] = {}
        updated_ids: set[str] = set()
        for device_id, rec in self.store.records(r.rid).items():
            if rec["s"] != ro.SUCCEEDED or device_id not in health:
                continue
            score, at = health[device_id]
            # Only health reported after the update says something about the new firmware.
            if rec.get("a") or at >= rec.get("d", 0):
                updated.setdefault(rec.get("h") or "", []).append(score)
                updated_ids.add(device_id)
        if not any(len(v) >= r.cfg.health_min_devices for v in updated.values()):
            return None
        others = [d for d in health if d not in updated_ids]
        baseline: dict[str, list[float]] = {}
        for device_id, info in self.registry.read_many(others).items():
            if info.fw != r.cfg.version and (info.hw or "") in updated:
                baseline.setdefault(info.hw or "", []).append(health[device_id][0])
        return ro.health_gate(r.cfg, updated, baseline)


def _empty(topic: str) -> Publish:
    return Publish(topic, b"", 1, True)
