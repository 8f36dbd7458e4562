"""Jobs waiting for a device that stays offline get a fresh manifest and URL before they expire,
under the same job id: a device that comes back after days still gets a job it can accept
(an expired manifest would be refused, and counted as a failure)."""

from __future__ import annotations

import json
from typing import Any

from daemons.protocol.messages import Outcome
from otaplanner import rollout as ro
from otaplanner.issuing import Issuer
from otaplanner.records import Rollout

CHUNK = 1000


def refresh_expiring(issuer: Issuer, r: Rollout, now: float, out: Outcome) -> int:
    """Re-sign `issued` jobs older than half their lifetime; returns how many were refreshed."""
    store = issuer.store
    due = {d: rec for d, rec in store.records(r.rid).items()
           if rec.state == ro.ISSUED and rec.job_id is not None
           and now - (now if rec.issued_at is None else rec.issued_at) > r.cfg.job_expiry_s / 2}
    stored = store.jobs(r.rid, due)
    done = 0
    items = list(due.items())
    for start in range(0, len(items), CHUNK):
        made: dict[str, tuple[str, str]] = {}
        fresh: dict[str, tuple[dict[str, Any], str]] = {}
        for device_id, rec in items[start:start + CHUNK]:
            enc = stored.get(device_id, {}).get("enc", "json")
            assert rec.job_id is not None  # every issued record has one
            job = issuer.jobs.make(device_id, rec.hw or None, rec.job_id, r.rid, r.release,
                                   r.cfg.job_expiry_s, now)
            fresh[device_id] = (job, enc)
            made[device_id] = (rec.job_id, json.dumps({"job": job, "enc": enc}, separators=(",", ":")))
        done += issuer.publish_jobs(store.refresh(r.rid, now, made), fresh, out, "refreshed")
    return done
