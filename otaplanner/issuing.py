"""Taking devices into a rollout and sending their jobs (PROTOCOL §3): scan, issue, withdraw.

A device is taken in once its bucket is below the open stage's threshold and its hardware is one
the release is built for; a job goes out (retained on `{p}/{id}/ota/job`) within the rate limit
and only after the store marked it issued. An empty retained message takes a job back.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from daemons.protocol.messages import Outcome, Publish
from daemons.registry import Registry
from otaplanner import rollout as ro
from otaplanner.jobs import JobFactory
from otaplanner.records import DeviceRecord, Rollout, job_id_for
from otaplanner.rollout_store import RolloutStore

ISSUE_CHUNK = 1000
MAX_ISSUE_PER_TICK = 20_000
# A job stored but perhaps never published (crash between the two) is sent again by the
# replica that takes the rollout over; devices ignore a job id they already have.
REPUBLISH_WINDOW_S = 60
# A device left out for its hardware is looked at again after this long (its hw may become known).
EXCLUDED_RECHECK_S = 30


class Issuer:
    def __init__(self, store: RolloutStore, registry: Registry, jobs: JobFactory, prefix: str,
                 scan_interval_s: float = 1.0) -> None:
        self.store = store
        self.registry = registry
        self.jobs = jobs
        self.prefix = prefix
        self.scan_interval_s = scan_interval_s
        self.fleet_changed = True
        self._last_scan: dict[str, float] = {}
        self._buckets: dict[str, dict[str, int]] = {}
        self._excluded: dict[str, dict[str, float]] = {}

    def device_news(self, device_id: str) -> None:
        """A device appeared or its hardware became known: look at the fleet again soon."""
        self.fleet_changed = True
        for excluded in self._excluded.values():
            excluded.pop(device_id, None)

    def stage_opened(self, rid: str) -> None:
        """The new stage's devices are taken in at once, not at the next scan interval."""
        self._last_scan.pop(rid, None)

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

    def withdraw(self, rid: str, now: float, out: Outcome) -> None:
        """Halt or abort: jobs not started are withdrawn, every retained job topic cleared."""
        self.clear_jobs(self.store.withdraw(rid, now), out)

    def clear_jobs(self, slots: dict[str, str], out: Outcome) -> None:
        """An empty retained message takes a job back (or clears a finished one)."""
        self.store.free(slots)
        for device_id in slots:
            out.publishes.append(Publish(self.job_topic(device_id), b"", 1, True))
        if slots:
            out.count("job", "cleared")

    def expire(self, rid: str, now: float, out: Outcome, kind: str = "") -> bool:
        """Time out jobs in progress past their deadline; whether any did (the counts changed)."""
        expired = self.store.expire(rid, now, kind)
        if expired:
            out.count("job", "timed_out")
            self.clear_jobs(expired, out)
        return bool(expired)

    def republish(self, r: Rollout, now: float, out: Outcome) -> None:
        """Jobs issued lately, sent again by a replica that takes the rollout over."""
        recent = [d for d, rec in self.store.records(r.rid).items()
                  if rec.state == ro.ISSUED and (rec.issued_at or 0) >= now - REPUBLISH_WINDOW_S]
        for device_id, stored in self.store.jobs(r.rid, recent).items():
            out.publish(self.job_topic(device_id), stored["job"], stored.get("enc", "json"), retain=True)

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
        records: dict[str, DeviceRecord] = {}
        for device_id, info in self.registry.read_many(candidates).items():
            if hw_ok and info.hw not in hw_ok:
                excluded[device_id] = now  # the release is not built for this hardware (or unknown yet)
                continue
            rec = DeviceRecord(ro.PENDING, buckets[device_id], info.hw or "", info.fw or "")
            if info.fw == r.cfg.version:
                rec = replace(rec, state=ro.SUCCEEDED, decided_at=int(now), already=True)
            records[device_id] = rec
        return self.store.assign(r.rid, records)

    def issue(self, r: Rollout, now: float, out: Outcome) -> tuple[int, Rollout]:
        """Send pending jobs within the rate limit: how many, and the rollout with its tokens spent."""
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
            tokens = max(0.0, allowance - issued)
            self.store.set_tokens(r.rid, tokens, now)
            r = replace(r, tokens=tokens, tokens_at=now)
        return issued, r

    def _issue_chunk(self, r: Rollout, pending: list[str], now: float, out: Outcome) -> int:
        ids = {d: job_id_for(r.rid, d) for d in pending}
        encodings = self.store.claim(r.rid, ids)
        claimed = list(encodings)
        if len(claimed) < len(pending):
            out.count("job", "device_busy")  # in another rollout's job still
        if not claimed:
            return 0
        records = self.store.records_of(r.rid, claimed)
        made: dict[str, tuple[str, str]] = {}
        payloads: dict[str, tuple[dict[str, Any], str]] = {}
        for device_id in claimed:
            rec = records.get(device_id)
            enc = encodings[device_id]
            job = self.jobs.make(device_id, (rec.hw if rec else "") or None, ids[device_id], r.rid, r.release,
                                 r.cfg.job_expiry_s, now)
            payloads[device_id] = (job, enc)
            made[device_id] = (ids[device_id], json.dumps({"job": job, "enc": enc}, separators=(",", ":")))
        return self.publish_jobs(self.store.issue(r.rid, now, made), payloads, out, "issued")
