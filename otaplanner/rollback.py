"""`rollback` on a halted or aborted rollout: each device this rollout updated gets a job for
the release it ran before, unless that release's secure_version is below the bad one's (the
device's anti-rollback would refuse it anyway: 409)."""

from __future__ import annotations

import json
from typing import Any

from daemons.protocol.messages import Outcome
from otaplanner import rollout as ro
from otaplanner.control import Control
from otaplanner.records import DeviceRecord, Release, Rollout, job_id_for

RB = "rb:"  # key prefix of the rollback jobs' records
RB_SUFFIX = "#rb"


def rollback_job_id(rollout_id: str, device_id: str) -> str:
    return job_id_for(rollout_id, device_id) + RB_SUFFIX


def rollback(control: Control, r: Rollout, now: float, out: Outcome) -> dict[str, Any]:
    store = control.store
    updated = {d: rec for d, rec in store.records(r.rid).items()
               if rec.state == ro.SUCCEEDED and not rec.already and rec.fw_before}
    if not updated:
        raise ro.RolloutError(409, "no device was updated by this rollout: nothing to roll back")
    bad = int(r.release.get("secure_version", 0))
    releases: dict[str, Release] = {}
    refused: list[dict[str, Any]] = []
    for version in sorted({rec.fw_before for rec in updated.values()}):
        release = store.release(version)
        if release is None:
            refused.append({"version": version, "code": 404, "reason": "release not registered"})
        elif int(release.get("secure_version", 0)) < bad:
            refused.append({"version": version, "code": 409,
                            "reason": f"secure_version {release.get('secure_version')} is below {bad}"})
        else:
            releases[version] = release
    targets = {d: rec for d, rec in updated.items() if rec.fw_before in releases}
    if not targets:
        first = refused[0]
        raise ro.RolloutError(first["code"],
                              f"rollback refused: release {first['version']}: {first['reason']}")
    store.assign(r.rid, {d: DeviceRecord(ro.PENDING, rec.bucket, rec.hw, rec.fw_before)
                         for d, rec in targets.items()}, kind=RB)
    ids = {d: rollback_job_id(r.rid, d) for d in store.pending(r.rid, len(targets), kind=RB)}
    claimed = list(store.claim(r.rid, ids))
    made: dict[str, tuple[str, str]] = {}
    jobs: dict[str, dict[str, Any]] = {}
    for device_id in claimed:
        rec = targets[device_id]
        job = control.issuer.jobs.make(device_id, rec.hw or None, ids[device_id], r.rid,
                                       releases[rec.fw_before], r.cfg.job_expiry_s, now)
        jobs[device_id] = job
        made[device_id] = (ids[device_id], json.dumps({"job": job, "enc": "json"}))
    issued = [d for d, ok in store.issue(r.rid, now, made, kind=RB).items() if ok]
    for device_id in issued:
        out.publish(control.issuer.job_topic(device_id), jobs[device_id], retain=True)
    for _ in range(10):  # the event goes through the rollout's compare-and-set like any transition
        event = control.reporter.event(r, "rollback", r.state, f"rollback jobs for {len(issued)} devices",
                                       now, versions=sorted(releases))
        if store.transition(r.rid, r.rev, {"updated_at": str(int(now))}, event):
            control.reporter.publish_event(r.rid, event, out)
            break
        r = control.load(r.rid) or r
    out.count("rollout", "rollback")
    return {"state": r.state, "rollback_jobs": len(issued), "refused": refused}
