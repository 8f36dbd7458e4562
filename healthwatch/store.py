"""healthwatch's Redis layout: one batch read and one batch write per batch of heartbeats.

- `fleet:hw:{<id>}` hash: `st` (the streaming state, JSON), `status`, `score`, `hw`, `fw`. Hash-tagged by
  device, so it works on Redis Cluster; other daemons (ota-planner) may read `status` and `score`.
- `fleet:hw:{idx}:seen` sorted set: wall clock of the last heartbeat of every device not offline (the
  offline timer reads its oldest members); `:scores` sorted set: latest score (the worst devices);
  `:status:<status>` sets: the devices in each status;
  `:counts` hash: devices per status and per active reason.
- `fleet:hw:{cohorts}:levels:<hw>|<fw>` hash: each device's current levels, for the cohort baselines of
  every replica; `fleet:hw:{cohorts}:names` set: the cohorts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from healthwatch.cohort import Levels
from healthwatch.device import DeviceState


def _fmt(levels: Levels) -> str:
    return ",".join("" if v is None else f"{v:.6g}" for v in levels)


def _parse(text: str) -> Levels | None:
    parts = text.split(",")
    if len(parts) != 4:
        return None
    try:
        a, b, c, d = (float(p) if p else None for p in parts)
    except ValueError:
        return None
    return (a, b, c, d)


@dataclass
class DeviceWrite:
    device_id: str
    state: DeviceState
    cohort: str
    old_cohort: str | None = None
    # Changes to the fleet-wide counters (status:<s> and reason:<code>), +1 / -1.
    counts: dict[str, int] = field(default_factory=dict)


class HealthStore:
    def __init__(self, redis: Any, namespace: str = "fleet") -> None:
        self.redis = redis
        self.ns = namespace
        self.seen_key = f"{namespace}:hw:{{idx}}:seen"
        self.scores_key = f"{namespace}:hw:{{idx}}:scores"
        self.counts_key = f"{namespace}:hw:{{idx}}:counts"
        self.cohorts_key = f"{namespace}:hw:{{cohorts}}:names"

    def key(self, device_id: str) -> str:
        return f"{self.ns}:hw:{{{device_id}}}"

    def status_key(self, status: str) -> str:
        return f"{self.ns}:hw:{{idx}}:status:{status}"

    def levels_key(self, cohort: str) -> str:
        return f"{self.ns}:hw:{{cohorts}}:levels:{cohort}"

    def read(self, device_ids: list[str]) -> dict[str, DeviceState | None]:
        pipe = self.redis.pipeline(transaction=False)
        for device_id in device_ids:
            pipe.hget(self.key(device_id), "st")
        out: dict[str, DeviceState | None] = {}
        for device_id, raw in zip(device_ids, pipe.execute(), strict=True):
            state = None
            if raw:
                try:
                    state = DeviceState.from_json(json.loads(raw))
                except (ValueError, TypeError, KeyError, IndexError):
                    state = None  # unreadable (older layout): start afresh rather than stall
            out[device_id] = state
        return out

    def write(self, writes: list[DeviceWrite], offline: bool = False) -> None:
        if not writes:
            return
        pipe = self.redis.pipeline(transaction=False)
        seen: dict[str, float] = {}
        scores: dict[str, float] = {}
        for w in writes:
            st = w.state
            pipe.hset(self.key(w.device_id), mapping={
                "st": json.dumps(st.to_json(), separators=(",", ":")),
                "status": ("ok", "watch", "critical", "offline")[st.status], "score": st.score,
                "hw": st.hw or "", "fw": st.fw or ""})
            scores[w.device_id] = st.score
            # One set per status, for the operator API's `health=` filter (daemons.api.fleetindex).
            status = ("ok", "watch", "critical", "offline")[st.status]
            for other in ("ok", "watch", "critical", "offline"):
                (pipe.sadd if other == status else pipe.srem)(self.status_key(other), w.device_id)
            if offline:
                pipe.zrem(self.seen_key, w.device_id)
            else:
                seen[w.device_id] = st.wall
                if w.old_cohort is None or w.old_cohort != w.cohort:
                    pipe.sadd(self.cohorts_key, w.cohort)
                    if w.old_cohort is not None:
                        pipe.hdel(self.levels_key(w.old_cohort), w.device_id)
                pipe.hset(self.levels_key(w.cohort), w.device_id, _fmt(st.levels()))
            for name, delta in w.counts.items():
                if delta:
                    pipe.hincrby(self.counts_key, name, delta)
        if seen:
            pipe.zadd(self.seen_key, seen)
        pipe.zadd(self.scores_key, scores)
        pipe.execute()

    def overdue(self, cutoff: float, limit: int = 1000) -> list[str]:
        """Devices whose last heartbeat is older than `cutoff`, claimed by this replica (ZREM wins)."""
        ids = self.redis.zrangebyscore(self.seen_key, "-inf", cutoff, start=0, num=limit)
        if not ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for device_id in ids:
            pipe.zrem(self.seen_key, device_id)
        return [i for i, won in zip(ids, pipe.execute(), strict=True) if won]

    def cohorts(self) -> dict[str, dict[str, Levels]]:
        names = sorted(self.redis.smembers(self.cohorts_key))
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(self.levels_key(name))
        out: dict[str, dict[str, Levels]] = {}
        for name, members in zip(names, pipe.execute(), strict=True):
            parsed = {k: lv for k, v in members.items() if (lv := _parse(v)) is not None}
            out[name] = parsed
        return out

    def summary(self, worst: int = 10) -> tuple[dict[str, int], list[tuple[str, float]]]:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.counts_key)
        pipe.zrange(self.scores_key, 0, worst - 1, withscores=True)
        counts, low = pipe.execute()
        return {k: int(v) for k, v in counts.items()}, [(k, float(s)) for k, s in low]
