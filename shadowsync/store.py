"""Shadow state in Redis: one hash per device, written by a compare-and-set script.

`{ns}:dev:{<id>}` holds `rev` (bumped by every write), `seq`, `enc`, `last_seen_at`,
`connected`, `status_ts`, `hw`, `fw`, `tags`, `sh:<name>` (a shadow document as JSON, the
classic shadow under `sh:`) and `ver:<name>` (its last version, kept after a delete).
A batch reads every device it touches in one pipeline, computes the new state in Python,
then writes each device with one CAS script call in a second pipeline. A device whose `rev`
moved meanwhile (another replica) is re-read and recomputed, so updates stay atomic per device
on Redis and on Redis Cluster (one key per device, hash-tagged).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from daemons.registry import device_key, run_scripts

CAS_SCRIPT = """
local rev = redis.call('HGET', KEYS[1], 'rev')
if (rev or '') ~= ARGV[1] then return 0 end
local n = tonumber(ARGV[2])
for i = 3, 2 + n do redis.call('HDEL', KEYS[1], ARGV[i]) end
redis.call('HSET', KEYS[1], 'rev', (tonumber(rev) or 0) + 1)
for i = 3 + n, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"""


@dataclass
class DeviceWrite:
    device_id: str
    expected_rev: str
    sets: dict[str, str] = field(default_factory=dict)
    deletes: set[str] = field(default_factory=set)

    def args(self) -> list[str]:
        out = [self.expected_rev, str(len(self.deletes)), *sorted(self.deletes)]
        for k, v in self.sets.items():
            out.extend((k, v))
        return out


class ShadowStore:
    def __init__(self, redis: Any, namespace: str = "fleet") -> None:
        self.redis = redis
        self.ns = namespace
        self._cas = redis.register_script(CAS_SCRIPT)

    def key(self, device_id: str) -> str:
        return device_key(self.ns, device_id)

    @property
    def delta_index(self) -> str:
        """zset: devices with a non-empty delta, scored by when it appeared (epoch s)."""
        return f"{self.ns}:{{idx}}:delta"

    def mark_delta(self, pipe: Any, device_id: str, pending: bool, now: float) -> None:
        if pending:
            pipe.zadd(self.delta_index, {device_id: now}, nx=True)  # keeps the first time
        else:
            pipe.zrem(self.delta_index, device_id)

    def backlog(self, online_index: str) -> tuple[int, int, float | None]:
        """(devices with a pending delta, those of them online, epoch s of the oldest pending delta
        of an online device or None). An offline device waits for its next connection: no lag yet.

        `online_index` is the registry's set of online devices (same `{idx}` slot).
        """
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(self.delta_index)
        pipe.zinter({self.delta_index: 1, online_index: 0}, withscores=True)
        count, online = pipe.execute()
        return int(count), len(online), (min(float(score) for _, score in online) if online else None)

    def read(self, device_ids: Iterable[str]) -> dict[str, dict[str, str]]:
        ids = list(dict.fromkeys(device_ids))
        if not ids:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for device_id in ids:
            pipe.hgetall(self.key(device_id))
        return dict(zip(ids, pipe.execute(), strict=True))

    def commit(self, writes: list[DeviceWrite], extra: Any = None) -> list[bool]:
        """Apply each write if its device's `rev` is unchanged; return which ones applied.

        `extra(pipe)` may queue further commands (index updates) in the same round trip
        (daemons.registry.run_scripts: after the scripts on Redis Cluster).
        """
        if not writes:
            return []
        calls = [([self.key(w.device_id)], w.args()) for w in writes]
        return [bool(r) for r in run_scripts(self.redis, self._cas, calls, extra)]
