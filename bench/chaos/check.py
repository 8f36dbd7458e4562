"""The chaos assertions, from Redis (what the system stored) and the Recorder (what its topics said).

- Shadow: every update answered `accepted` (or 200 by the API) is in the stored shadow under its
  own key; the versions the answers carried are exactly 1..V, V the stored version (a version with no
  answer is an update applied without one: the first application of an update later applied again);
  no clientToken accepted twice.
- Rollout: every targeted device succeeded exactly once; one job per device (one distinct payload);
  the rollout's stored counts, its last status on the topic and what the devices reported agree.
- Heartbeats: every heartbeat the broker delivered has its bit in healthwatch's window of the last
  64 `seq`s (scored, or filled in when it came late), checked after each phase; and what healthwatch
  scored per device (its state's `n`, late ones aside) is never above the distinct `seq`s delivered.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from bench.chaos.load import Stream
from bench.chaos.watch import Recorder
from daemons.registry import device_key
from healthwatch.device import SEQ_WINDOW
from healthwatch.store import HealthStore


@dataclass
class Outcome:
    accepted: int = 0  # requests answered accepted / devices targeted / heartbeats delivered
    lost: int = 0
    doubled: int = 0
    unanswered: int = 0
    exact: bool = True
    notes: list[str] = field(default_factory=list)


def shadows(redis: Any, rec: Recorder, stream: Stream) -> Outcome:
    out = Outcome()
    pipe = redis.pipeline(transaction=False)
    for d in stream.devices:
        pipe.hget(device_key("fleet", d), "sh:")
    raws = pipe.execute()
    stored = {d: json.loads(raw) if raw else None for d, raw in zip(stream.devices, raws, strict=True)}
    with rec.cond:
        if stream.via == "mqtt":
            ok = {s.token: s.device for s in stream.sent
                  if any(a.accepted for a in rec.rec.by_token.get(s.token, []))}
            silent = [s for s in stream.sent if s.token not in rec.rec.by_token]
            out.unanswered = len(silent)
            twice = [t for t in ok if len({a.version for a in rec.rec.by_token[t] if a.accepted}) > 1]
        else:
            ok = {s.token: s.device for s in stream.sent if s.status == 200}
            silent = [s for s in stream.sent if s.status is None]
            out.unanswered = len(silent)
            twice = []
        versions: dict[str, set[int]] = {d: set() for d in stream.devices}
        for a in rec.rec.answers:
            if a.accepted and a.device in versions and isinstance(a.version, int):
                versions[a.device].add(a.version)
    out.accepted = len(ok)

    def desired(doc: dict[str, Any] | None) -> dict[str, Any]:
        return dict((((doc or {}).get("state") or {}).get("desired") or {}).get(stream.section) or {})

    missing = [t for t, d in ok.items() if t not in desired(stored[d])]
    unseen = ahead = 0
    for d in stream.devices:
        v = int((stored[d] or {}).get("version", 0))
        unseen += len(set(range(1, v + 1)) - versions[d])
        ahead += len({x for x in versions[d] if x > v})  # answered, then gone from the store
    out.lost = len(missing) + ahead
    out.doubled = len(twice) + unseen
    out.exact = not (missing or ahead or twice or unseen)
    if stream.via == "mqtt":
        with rec.cond:
            refused = [a for x in stream.sent for a in rec.rec.by_token.get(x.token, []) if not a.accepted]
        if refused:
            out.notes.append(f"{len(refused)} rejected: {sorted({str(a.code) for a in refused})}")
    if silent:
        applied = sum(1 for s in silent if s.token in desired(stored[s.device]))
        out.notes.append(f"{len(silent)} requests never answered, {applied} of them stored all the same")
    if missing:
        out.notes.append(f"accepted but not stored: {missing[:5]}")
    if unseen:
        out.notes.append(f"{unseen} stored versions had no answer (an update applied again)")
    if ahead:
        out.notes.append(f"{ahead} answered versions are above the stored version")
    if twice:
        out.notes.append(f"tokens accepted twice: {twice[:5]}")
    return out


def rollout(redis: Any, rec: Recorder, rid: str, devices: int) -> Outcome:
    out = Outcome()
    base = f"ota:{{ro:{rid}}}"
    records = {d: json.loads(v) for d, v in redis.hgetall(f"{base}:dev").items()}
    cnt = {k: int(v) for k, v in redis.hgetall(f"{base}:cnt").items() if not k.startswith("_") and int(v)}
    state = redis.hget(f"{base}:meta", "state")
    with rec.cond:
        status = dict(rec.rec.rollouts.get(rid, {}))
        jobs = {d: len(rec.rec.jobs.get((d, f"{rid}@{d}"), ())) for d in records}
        reported = {d for d in records if d in rec.rec.succeeded.get(f"{rid}@{d}", set())}
        # Distinct `succeeded` reports (JSON or MessagePack alike hold the word): two mean an install twice.
        reports = {d: sum(1 for p in rec.rec.ota.get((d, f"{rid}@{d}"), ()) if b"succeeded" in p)
                   for d in records}
    stored_ok = sum(1 for r in records.values() if r.get("s") == "succeeded")
    topic_counts = {k: v for k, v in (status.get("counts") or {}).items() if v}
    out.accepted = len(records)
    # Success reports the devices made that the rollout did not count, and devices taken in that
    # never reported success (devices never taken in, by a halt or abort, show in `accepted`).
    out.lost = len(reported - {d for d, r in records.items() if r.get("s") == "succeeded"}) + (
        len(records) - len(reported))
    out.doubled = sum(1 for n in jobs.values() if n > 1) + sum(1 for n in reports.values() if n > 1)
    out.exact = (state == "completed" and len(records) == devices == stored_ok == len(reported)
                 and cnt == {"succeeded": devices} and topic_counts == {"succeeded": devices}
                 and out.doubled == 0 and all(n == 1 for n in jobs.values()))
    if not out.exact:
        out.notes.append(f"state {state}, {len(records)} taken in, {stored_ok} stored succeeded, "
                         f"counts {cnt}, status counts {topic_counts}, "
                         f"{len(reported)} devices reported success, "
                         f"jobs per device {sorted(set(jobs.values()))}")
    return out


def heartbeats(redis: Any, rec: Recorder, devices: list[str]) -> Outcome:
    out = Outcome()
    states = HealthStore(redis).read(devices)
    with rec.cond:
        seen = {d: len(rec.rec.heartbeats.get(d, ())) for d in devices}
    counted = {d: st.n if st is not None else 0 for d, (st, _) in states.items()}
    for d in devices:
        n = counted[d]
        out.accepted += seen[d]
        out.lost += max(0, seen[d] - n)
        out.doubled += max(0, n - seen[d])
    out.exact = out.lost == out.doubled == 0
    if not out.exact:
        short = sorted(d for d in devices if counted[d] != seen[d])
        out.notes.append(f"devices whose count differs: {len(short)}, e.g. {short[:3]}")
    return out


def heartbeat_window(redis: Any, rec: Recorder, devices: list[str], t0: float, t1: float) -> tuple[int, int]:
    """(heartbeats the broker delivered between t0 and t1, those of them healthwatch has not counted)."""
    states = HealthStore(redis).read(devices)
    delivered = missed = 0
    with rec.cond:
        for d in devices:
            st, _ = states[d]
            for seq, at in rec.rec.heartbeats.get(d, {}).items():
                if not t0 < at <= t1:
                    continue
                delivered += 1
                behind = st.seq - seq if st is not None else -1
                if not 0 <= behind < SEQ_WINDOW or not st.win >> behind & 1:  # type: ignore[union-attr]
                    missed += 1
    return delivered, missed
