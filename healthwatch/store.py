"""healthwatch's Redis layout: one batch read and one batch write per batch of heartbeats.

- `fleet:health:{<id>}` hash: `st` (the streaming state, JSON), `status`, `score`, `hw`, `fw`, `rev`.
  Hash-tagged by device, so it works on Redis Cluster; other daemons (ota-planner) may read `status`
  and `score`. Written by a compare-and-set script on `rev` (bumped by every write): two replicas
  behind `$share` may get heartbeats of one device at once; the one whose write loses re-reads and
  scores again, so no heartbeat's effect is lost and no counter moves twice.
- `fleet:health:{idx}:seen` sorted set: wall clock of the last heartbeat of every device not offline (the
  offline timer reads its oldest members); `:scores` sorted set: latest score (the worst devices);
  `:status:<status>` sets: the devices in each status;
  `:counts` hash: devices per status and per active reason.
- `fleet:health:{cohorts}:levels:<hw>|<fw>` hash: each device's current levels, for the cohort baselines of
  every replica; `fleet:health:{cohorts}:names` set: the cohorts.
The prefix was `fleet:hw:` before (where `hw` means hardware everywhere else); `migrate_legacy_keys`
renames what an older healthwatch stored, once, at start.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis as redis_lib

from daemons.registry import run_scripts
from healthwatch.cohort import Levels
from healthwatch.device import DeviceState
from healthwatch.status import STATUSES, HealthStatus

# KEYS[1] the device hash; ARGV[1] the `rev` read, then field/value pairs. 1 applied, 0 raced.
CAS_SCRIPT = """
local rev = redis.call('HGET', KEYS[1], 'rev')
if (rev or '') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'rev', (tonumber(rev) or 0) + 1, unpack(ARGV, 2))
return 1
"""


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
    rev: str = ""  # the device's `rev` when its state was read ("" for a new device)


class HealthStates(Protocol):
    """What the health service needs of its store (HealthStore is the Redis one)."""

    def read(self, device_ids: list[str]) -> dict[str, tuple[DeviceState | None, str]]: ...

    def write(self, writes: list[DeviceWrite], offline: bool = False) -> set[str]: ...

    def requeue(self, device_ids: list[str]) -> None: ...

    def overdue(self, cutoff: float, limit: int = 1000) -> list[str]: ...

    def cohorts(self) -> dict[str, dict[str, Levels]]: ...

    def summary(self, worst: int = 10) -> tuple[dict[str, int], list[tuple[str, float]]]: ...


class HealthStore:
    def __init__(self, redis: Any, namespace: str = "fleet") -> None:
        self.redis = redis
        self.ns = namespace
        self.seen_key = f"{namespace}:health:{{idx}}:seen"
        self.scores_key = f"{namespace}:health:{{idx}}:scores"
        self.counts_key = f"{namespace}:health:{{idx}}:counts"
        self.cohorts_key = f"{namespace}:health:{{cohorts}}:names"
        self._cas = redis.register_script(CAS_SCRIPT)

    def migrate_legacy_keys(self) -> int:
        """Rename keys stored under the old `{ns}:hw:` prefix to `{ns}:health:`; how many moved.

        The hash tag is kept, so each rename stays within its slot (Redis Cluster). RENAMENX never
        overwrites a key the new code already wrote; a key another replica moved first is skipped.
        """
        moved = 0
        old = f"{self.ns}:hw:"
        for key in list(self.redis.scan_iter(match=old + "*", count=1000)):
            try:
                moved += int(self.redis.renamenx(key, f"{self.ns}:health:{key[len(old):]}"))
            except redis_lib.ResponseError:  # gone meanwhile (another replica renamed it)
                continue
        return moved

    def key(self, device_id: str) -> str:
        return f"{self.ns}:health:{{{device_id}}}"

    def status_key(self, status: str) -> str:
        return f"{self.ns}:health:{{idx}}:status:{status}"

    def levels_key(self, cohort: str) -> str:
        return f"{self.ns}:health:{{cohorts}}:levels:{cohort}"

    def read(self, device_ids: list[str]) -> dict[str, tuple[DeviceState | None, str]]:
        """Each device's state (None: new or unreadable) and its `rev`, for `DeviceWrite.rev`."""
        pipe = self.redis.pipeline(transaction=False)
        for device_id in device_ids:
            pipe.hmget(self.key(device_id), "st", "rev")
        out: dict[str, tuple[DeviceState | None, str]] = {}
        for device_id, (raw, rev) in zip(device_ids, pipe.execute(), strict=True):
            state = None
            if raw:
                try:
                    state = DeviceState.from_json(json.loads(raw))
                except (ValueError, TypeError, KeyError, IndexError):
                    state = None  # unreadable (older layout): start afresh rather than stall
            out[device_id] = (state, rev or "")
        return out

    def write(self, writes: list[DeviceWrite], offline: bool = False) -> set[str]:
        """CAS each device's hash, then update the indexes and counters of those applied.

        Returns the devices whose `rev` moved since they were read (nothing of theirs written):
        the caller re-reads and recomputes them.
        """
        if not writes:
            return set()
        applied = self._commit(writes)
        raced = {w.device_id for w, ok in zip(writes, applied, strict=True) if not ok}
        pipe = self.redis.pipeline(transaction=False)
        seen: dict[str, float] = {}
        scores: dict[str, float] = {}
        for w in writes:
            if w.device_id in raced:
                continue
            st = w.state
            scores[w.device_id] = st.score
            # One set per status, for the operator API's `health=` filter (daemons.api.fleetindex).
            for other in STATUSES:
                member_op = pipe.sadd if other == STATUSES[st.status] else pipe.srem
                member_op(self.status_key(other), w.device_id)
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
        if not scores:  # every write raced
            return raced
        if seen:
            pipe.zadd(self.seen_key, seen)
        pipe.zadd(self.scores_key, scores)
        pipe.execute()
        return raced

    def _commit(self, writes: list[DeviceWrite]) -> list[bool]:
        def args(w: DeviceWrite) -> list[Any]:
            st = w.state
            return [w.rev, "st", json.dumps(st.to_json(), separators=(",", ":")),
                    "status", STATUSES[st.status], "score", st.score,
                    "hw", st.hw or "", "fw", st.fw or ""]

        calls = [([self.key(w.device_id)], args(w)) for w in writes]
        return [bool(r) for r in run_scripts(self.redis, self._cas, calls)]

    def requeue(self, device_ids: list[str]) -> None:
        """Put devices back on the offline timer at their last heartbeat (an offline claim lost)."""
        states = self.read(device_ids)
        walls = {i: st.wall for i, (st, _) in states.items()
                 if st is not None and st.status != HealthStatus.OFFLINE}
        if walls:
            self.redis.zadd(self.seen_key, walls, gt=True)

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
