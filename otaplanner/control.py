"""Driving one rollout per tick: lease, timeouts, gates, stage transitions (PROTOCOL §3).

The parts it drives: `issuing` (devices taken in, jobs sent and withdrawn), `reporting` (status
and events), `health_gate`, `refresh` (jobs re-signed before they expire). A tick loads the
rollout once and reads its counts once, again only after something in the tick changed them.
Every decision is stored through `RolloutStore` first; the publishes are queued on the Outcome,
which the run loop sends after the handler returns.
"""

from __future__ import annotations

from daemons.protocol.messages import Outcome
from daemons.registry import Registry
from daemons.runtime.logs import get_logger
from otaplanner import rollout as ro
from otaplanner.health_gate import HealthGate
from otaplanner.issuing import Issuer
from otaplanner.jobs import JobFactory
from otaplanner.records import Rollout
from otaplanner.refresh import refresh_expiring
from otaplanner.reporting import Reporter, Tally
from otaplanner.rollout_store import RolloutStore


class Control:
    def __init__(self, store: RolloutStore, registry: Registry, jobs: JobFactory, prefix: str,
                 ops: str, owner: str, lease_ms: int = 3000, scan_interval_s: float = 1.0,
                 health_interval_s: float = 1.0, refresh_interval_s: float = 60.0) -> None:
        self.store = store
        self.owner = owner
        self.lease_ms = lease_ms
        self.refresh_interval_s = refresh_interval_s
        self.issuer = Issuer(store, registry, jobs, prefix, scan_interval_s)
        self.reporter = Reporter(store, ops)
        self.health = HealthGate(store, registry, health_interval_s)
        self.log = get_logger("otaplanner")
        self._owned: set[str] = set()
        self._last_refresh: dict[str, float] = {}

    def load(self, rid: str) -> Rollout | None:
        meta = self.store.meta(rid)
        return Rollout.from_meta(rid, meta) if meta else None

    def publish_status(self, rid: str, now: float, out: Outcome) -> None:
        r = self.load(rid)
        if r is not None:
            self.reporter.publish_status(r, now, out)

    # -- transitions ------------------------------------------------------------------------

    def transition(self, r: Rollout, kind: str, to: str, reason: str, now: float, out: Outcome,
                   stage: int | None = None) -> Rollout | None:
        """Store a transition (compare-and-set on the rollout's rev), then queue its event.

        `stage`: a stage that opens now. Returns the rollout as stored, None when someone else
        moved it first (the caller decides again on fresh state).
        """
        event = self.reporter.event(r, kind, to, reason, now, stage=r.stage if stage is None else stage)
        fields = {"state": to, "reason": reason, "updated_at": str(int(now))}
        if stage is not None:
            fields.update(stage=str(stage), opened_at=repr(now))
        rev = self.store.transition(r.rid, r.rev, fields, event)  # also lists or unlists it as active
        if not rev:
            return None
        if to not in ro.ACTIVE:
            self.store.trail([r.rid])
        self.reporter.publish_event(r.rid, event, out)
        out.count("rollout", kind)
        self.log.info("rollout_" + kind, rollout_id=r.rid, state=to, stage=event["stage"], reason=reason)
        return r.after(rev, to, reason, stage, None if stage is None else now)

    def stop(self, r: Rollout, kind: str, to: str, reason: str, now: float, out: Outcome) -> Rollout | None:
        """Halt or abort: store the transition, withdraw every job, clear the retained job topics."""
        stopped = self.transition(r, kind, to, reason, now, out)
        if stopped is not None:
            self.issuer.withdraw(r.rid, now, out)
        return stopped

    def open_stage(self, r: Rollout, stage: int, reason: str, now: float, out: Outcome) -> Rollout | None:
        opened = self.transition(r, "stage_opened", r.state, reason, now, out, stage=stage)
        if opened is not None:
            self.issuer.stage_opened(r.rid)
        return opened

    # -- periodic work ----------------------------------------------------------------------

    def tick(self, rid: str, now: float, out: Outcome) -> None:
        """One periodic pass over an active rollout, on the replica that holds (or takes) its lease:
        timeouts, the failure and health gates, job refresh, taking devices in, issuing, the stage
        gate, then the status (sent only when it changed, or after a takeover)."""
        if not self.store.lease(rid, self.owner, self.lease_ms):
            self._owned.discard(rid)
            return
        r = self.load(rid)
        if r is None or r.state not in ro.ACTIVE:
            self.store.drop_inactive(rid)  # re-checks: a transition may have made it active since
            if r is not None:
                self.reporter.publish_status(r, now, out)
            return
        taken_over = rid not in self._owned
        if taken_over:  # e.g. this process restarted: send what may not have gone out
            self._owned.add(rid)
            self.reporter.resend_events(rid, out)
            self.issuer.republish(r, now, out)
        self.issuer.expire(rid, now, out)
        counted = self.store.counts(rid)
        tally: Tally | None = counted
        verdict = ro.failure_gate(r.cfg, counted[0]) or self.health.check(r, now)
        if verdict is not None:
            r = self.stop(r, "halted", ro.HALTED, verdict.reason, now, out) or self.load(rid)
            tally = None  # withdrawn
        else:
            if now - self._last_refresh.get(rid, 0.0) >= self.refresh_interval_s:
                self._last_refresh[rid] = now
                refresh_expiring(self.issuer, r, now, out)
            if r.state == ro.RUNNING:
                r, tally = self._run(r, now, out, counted)
        if r is not None:
            self.reporter.publish_status(r, now, out, tally, force=taken_over)

    def _run(self, r: Rollout, now: float, out: Outcome, tally: Tally) -> tuple[Rollout | None, Tally | None]:
        """Take devices in, send jobs, then the stage gate; the rollout and counts afterwards."""
        r, fresh = self._take_in(r, now, out, force=False)
        if fresh:
            tally = self.store.counts(r.rid)
        verdict = ro.stage_gate(r.cfg, r.stage, r.opened_at, tally[0], now)
        if verdict is None:
            return r, tally
        if verdict.action == "halt":
            return self.stop(r, "halted", ro.HALTED, verdict.reason, now, out) or self.load(r.rid), None
        if verdict.action == "complete":
            done = self.transition(r, "completed", ro.COMPLETED, verdict.reason, now, out)
            return done or self.load(r.rid), tally
        opened = self.open_stage(r, r.stage + 1, verdict.reason, now, out)
        if opened is None:
            return self.load(r.rid), tally
        opened, fresh = self._take_in(opened, now, out, force=True)
        return opened, None if fresh else tally

    def _take_in(self, r: Rollout, now: float, out: Outcome, force: bool) -> tuple[Rollout, bool]:
        """Scan and issue; the rollout with its rate tokens spent, and whether the counts changed."""
        assigned = self.issuer.scan(r, now, force)
        issued, r = self.issuer.issue(r, now, out)
        return r, bool(assigned or issued)

    def trail(self, rid: str, now: float, out: Outcome) -> None:
        """A rollout that is over still times out jobs in progress and reports late news."""
        if not self.store.lease(rid, self.owner, self.lease_ms):
            self._owned.discard(rid)
            return
        if rid not in self._owned:  # e.g. this process restarted: send what may not have gone out
            self._owned.add(rid)
            self.reporter.resend_events(rid, out)
        for kind in ("", "rb:"):
            self.issuer.expire(rid, now, out, kind)
        self.publish_status(rid, now, out)
        if not self.store.in_progress(rid):
            self.store.untrail(rid)
