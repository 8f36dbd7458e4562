"""Rollout state in Redis. Every decision is written here (atomically, by a script) before the
planner publishes it, so a restarted planner carries on and two replicas never issue twice.

Keys of one rollout share the hash tag `{ro:<rid>}` (one slot on Redis Cluster):
  meta      hash: config, state, stage, opened_at, reason, rev, created_at, tokens, tokens_at
  dev       hash: device id -> JSON record {s: state, j: job id, b: bucket, h: hw, f: fw before,
            t: issued at, p: in progress since, d: decided at, a: 1 when already on the version}
  cnt       hash: device state -> count, `_v` bumped by every change
  pending   zset: devices waiting for the rate limit, scored by bucket (lowest first)
  deadline  zset: in-progress devices, scored by their timeout
  jobs      hash: device id -> the job as published, {"job": ..., "enc": ...}
  events    list: every transition, as published on .../events
  lease     string: the replica that runs this rollout's periodic work
  rb:*      dev, cnt, pending, deadline, jobs again for the rollback jobs (job ids end in `#rb`)
Other keys: `ota:releases` (version -> JSON), `ota:rollouts`/`ota:active`/`ota:trailing` (sets of ids),
`ota:cur:{<device>}` (the device's one job slot: rollout and job id), `ota:health` (device -> score).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from otaplanner.rollout import Counts

ASSIGN = """
local n = 0
for i = 1, #ARGV, 3 do
  if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) == 1 then
    redis.call('HINCRBY', KEYS[2], ARGV[i + 2], 1)
    if ARGV[i + 2] == 'pending' then
      redis.call('ZADD', KEYS[3], cjson.decode(ARGV[i + 1]).b, ARGV[i])
    end
    n = n + 1
  end
end
if n > 0 then redis.call('HINCRBY', KEYS[2], '_v', 1) end
return n
"""

# A job goes out only for a device that is still pending: the one check that keeps two
# replicas (or a replayed tick) from ever issuing it twice.
ISSUE = """
local now = tonumber(ARGV[1])
local out = {}
for i = 2, #ARGV, 3 do
  local raw = redis.call('HGET', KEYS[1], ARGV[i])
  local ok = 0
  if raw then
    local rec = cjson.decode(raw)
    if rec.s == 'pending' then
      rec.s = 'issued'; rec.j = ARGV[i + 1]; rec.t = now
      redis.call('HSET', KEYS[1], ARGV[i], cjson.encode(rec))
      redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 2])
      redis.call('HINCRBY', KEYS[2], 'pending', -1)
      redis.call('HINCRBY', KEYS[2], 'issued', 1)
      ok = 1
    end
  end
  redis.call('ZREM', KEYS[3], ARGV[i])
  out[#out + 1] = ok
end
redis.call('HINCRBY', KEYS[2], '_v', 1)
return out
"""

# A job not started yet gets a fresh manifest (same job id) before its expiry passes.
REFRESH = """
local now = tonumber(ARGV[1])
local out = {}
for i = 2, #ARGV, 3 do
  local raw = redis.call('HGET', KEYS[1], ARGV[i])
  local ok = 0
  if raw then
    local rec = cjson.decode(raw)
    if rec.s == 'issued' and rec.j == ARGV[i + 1] then
      rec.t = now
      redis.call('HSET', KEYS[1], ARGV[i], cjson.encode(rec))
      redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 2])
      ok = 1
    end
  end
  out[#out + 1] = ok
end
return out
"""

TERMINAL_LUA = "{succeeded=1, failed=1, rolled_back=1, rejected=1, timed_out=1, withdrawn=1}"

# A device's progress report: applied only to its current job, never after a terminal state.
REPORT = """
local terminal = TERMINAL_LUA
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 'nojob' end
local rec = cjson.decode(raw)
if rec.j ~= ARGV[2] then return 'nojob' end
local old, new, now = rec.s, ARGV[3], tonumber(ARGV[4])
if terminal[old] then return 'terminal' end
if old == new then return 'same' end
rec.s = new
if new == 'in_progress' then
  rec.p = now
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[5]), ARGV[1])
else
  rec.d = now
  redis.call('ZREM', KEYS[3], ARGV[1])
end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(rec))
redis.call('HINCRBY', KEYS[2], old, -1)
redis.call('HINCRBY', KEYS[2], new, 1)
redis.call('HINCRBY', KEYS[2], '_v', 1)
return old
""".replace("TERMINAL_LUA", TERMINAL_LUA)

EXPIRE = """
local now = tonumber(ARGV[1])
local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
local out = {}
for _, dev in ipairs(due) do
  redis.call('ZREM', KEYS[3], dev)
  local raw = redis.call('HGET', KEYS[1], dev)
  if raw then
    local rec = cjson.decode(raw)
    if rec.s == 'in_progress' then
      rec.s = 'timed_out'; rec.d = now
      redis.call('HSET', KEYS[1], dev, cjson.encode(rec))
      redis.call('HINCRBY', KEYS[2], 'in_progress', -1)
      redis.call('HINCRBY', KEYS[2], 'timed_out', 1)
      out[#out + 1] = dev; out[#out + 1] = rec.j
    end
  end
end
if #out > 0 then redis.call('HINCRBY', KEYS[2], '_v', 1) end
return out
"""

# Halt/abort: nothing more goes out; jobs not started yet are withdrawn. Returns every device
# that ever had a job and its job id (flat pairs), so the planner clears each retained job topic.
WITHDRAW = """
local now = tonumber(ARGV[1])
local all = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #all, 2 do
  local rec = cjson.decode(all[i + 1])
  if rec.s == 'pending' or rec.s == 'issued' then
    redis.call('HINCRBY', KEYS[2], rec.s, -1)
    redis.call('HINCRBY', KEYS[2], 'withdrawn', 1)
    rec.s = 'withdrawn'; rec.d = now
    redis.call('HSET', KEYS[1], all[i], cjson.encode(rec))
  end
  if rec.j then out[#out + 1] = all[i]; out[#out + 1] = rec.j end
end
redis.call('DEL', KEYS[3])
redis.call('HINCRBY', KEYS[2], '_v', 1)
return out
"""

CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[1], 'rev', 1)
redis.call('RPUSH', KEYS[2], ARGV[1])
return 1
"""

# Compare-and-set on the rollout's meta: a transition decided on stale state is recomputed.
TRANSITION = """
if redis.call('HGET', KEYS[1], 'rev') ~= ARGV[1] then return 0 end
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
local rev = redis.call('HINCRBY', KEYS[1], 'rev', 1)
if ARGV[2] ~= '' then redis.call('RPUSH', KEYS[2], ARGV[2]) end
return rev
"""

# The highest event seq known to be published: a replica taking a rollout over sends the rest again.
MARK_SENT = """
local seq = tonumber(ARGV[1])
if (tonumber(redis.call('HGET', KEYS[1], 'evpub')) or 0) < seq then
  redis.call('HSET', KEYS[1], 'evpub', seq)
end
return 1
"""

LEASE = """
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
elseif v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# One job slot per device (the retained job topic): taken by one rollout at a time.
CLAIM = """
local rid = redis.call('HGET', KEYS[1], 'rid')
if rid and rid ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'rid', ARGV[1], 'job', ARGV[2])
return 1
"""

RELEASE = """
if redis.call('HGET', KEYS[1], 'job') == ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end
return 0
"""


class RolloutStore:
    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self._assign = redis.register_script(ASSIGN)
        self._issue = redis.register_script(ISSUE)
        self._refresh = redis.register_script(REFRESH)
        self._report = redis.register_script(REPORT)
        self._expire = redis.register_script(EXPIRE)
        self._withdraw = redis.register_script(WITHDRAW)
        self._create = redis.register_script(CREATE)
        self._transition = redis.register_script(TRANSITION)
        self._lease = redis.register_script(LEASE)
        self._mark_sent = redis.register_script(MARK_SENT)
        self._claim = redis.register_script(CLAIM)
        self._release = redis.register_script(RELEASE)

    @staticmethod
    def key(rid: str, part: str) -> str:
        return f"ota:{{ro:{rid}}}:{part}"

    def _keys(self, rid: str, *parts: str) -> list[str]:
        return [self.key(rid, p) for p in parts]

    # -- releases -------------------------------------------------------------------------

    def release(self, version: str) -> dict[str, Any] | None:
        raw = self.redis.hget("ota:releases", version)
        return json.loads(raw) if raw else None

    def add_release(self, version: str, release: dict[str, Any]) -> bool:
        return bool(self.redis.hsetnx("ota:releases", version, json.dumps(release, sort_keys=True)))

    # -- rollout meta -----------------------------------------------------------------------

    def meta(self, rid: str) -> dict[str, str]:
        return dict(self.redis.hgetall(self.key(rid, "meta")))

    def create(self, rid: str, fields: dict[str, str], event: dict[str, Any]) -> bool:
        args: list[str] = [json.dumps(event)]
        for k, v in fields.items():
            args.extend((k, v))
        ok = bool(self._create(keys=self._keys(rid, "meta", "events"), args=args))
        if ok:
            self.redis.sadd("ota:rollouts", rid)
            self.redis.sadd("ota:active", rid)
        return ok

    def transition(self, rid: str, rev: str, fields: dict[str, str], event: dict[str, Any] | None) -> int:
        """Write `fields` if the meta is still at `rev`; 0 when someone else moved it first."""
        args: list[str] = [rev, json.dumps(event) if event else ""]
        for k, v in fields.items():
            args.extend((k, v))
        return int(self._transition(keys=self._keys(rid, "meta", "events"), args=args))

    def set_active(self, rid: str, active: bool) -> None:
        (self.redis.sadd if active else self.redis.srem)("ota:active", rid)

    def active(self) -> list[str]:
        return sorted(self.redis.smembers("ota:active"))

    # Rollouts with device news or jobs in progress although no longer active: their timeouts
    # and status still need the periodic pass.
    def trail(self, rids: Iterable[str]) -> None:
        rids = list(rids)
        if rids:
            self.redis.sadd("ota:trailing", *rids)

    def trailing(self) -> list[str]:
        return sorted(self.redis.smembers("ota:trailing"))

    def untrail(self, rid: str) -> None:
        self.redis.srem("ota:trailing", rid)

    def in_progress(self, rid: str) -> int:
        return sum(int(self.redis.zcard(self.key(rid, k))) for k in ("deadline", "rb:deadline"))

    def events(self, rid: str) -> list[dict[str, Any]]:
        return [json.loads(e) for e in self.redis.lrange(self.key(rid, "events"), 0, -1)]

    def mark_sent(self, sent: dict[str, int]) -> None:
        if not sent:
            return
        pipe = self.redis.pipeline(transaction=False)
        for rid, seq in sent.items():
            self._mark_sent(keys=[self.key(rid, "meta")], args=[seq], client=pipe)
        pipe.execute()

    def unsent_events(self, rid: str) -> list[str]:
        """Events (as stored, JSON) after the last one marked as published."""
        sent = int(self.redis.hget(self.key(rid, "meta"), "evpub") or 0)
        return list(self.redis.lrange(self.key(rid, "events"), sent, -1))

    def lease(self, rid: str, owner: str, ttl_ms: int) -> bool:
        return bool(self._lease(keys=[self.key(rid, "lease")], args=[owner, ttl_ms]))

    def set_tokens(self, rid: str, tokens: float, at: float) -> None:
        self.redis.hset(self.key(rid, "meta"), mapping={"tokens": repr(tokens), "tokens_at": repr(at)})

    # -- devices ----------------------------------------------------------------------------

    def counts(self, rid: str, kind: str = "") -> tuple[Counts, int]:
        raw = self.redis.hgetall(self.key(rid, kind + "cnt"))
        version = int(raw.pop("_v", 0))
        return Counts({k: int(v) for k, v in raw.items()}), version

    def device_ids(self, rid: str) -> set[str]:
        return set(self.redis.hkeys(self.key(rid, "dev")))

    def records(self, rid: str) -> dict[str, dict[str, Any]]:
        return {k: json.loads(v) for k, v in self.redis.hgetall(self.key(rid, "dev")).items()}

    def assign(self, rid: str, records: dict[str, dict[str, Any]], kind: str = "") -> int:
        """Take devices in (pending, or succeeded when already on the version); never twice."""
        if not records:
            return 0
        args: list[Any] = []
        for device_id, rec in records.items():
            args.extend((device_id, json.dumps(rec, separators=(",", ":")), rec["s"]))
        keys = self._keys(rid, kind + "dev", kind + "cnt", kind + "pending")
        return int(self._assign(keys=keys, args=args))

    def pending(self, rid: str, limit: int, kind: str = "") -> list[str]:
        return list(self.redis.zrange(self.key(rid, kind + "pending"), 0, limit - 1))

    def claim(self, rid: str, jobs: dict[str, str]) -> dict[str, bool]:
        pipe = self.redis.pipeline(transaction=False)
        for device_id, job_id in jobs.items():
            self._claim(keys=[f"ota:cur:{{{device_id}}}"], args=[rid, job_id], client=pipe)
        return {d: bool(ok) for d, ok in zip(jobs, pipe.execute(), strict=True)}

    def current(self, device_ids: Iterable[str]) -> dict[str, tuple[str, str] | None]:
        ids = list(device_ids)
        pipe = self.redis.pipeline(transaction=False)
        for device_id in ids:
            pipe.hmget(f"ota:cur:{{{device_id}}}", "rid", "job")
        out: dict[str, tuple[str, str] | None] = {}
        for device_id, (rid, job) in zip(ids, pipe.execute(), strict=True):
            out[device_id] = (rid, job) if rid and job else None
        return out

    def free(self, slots: dict[str, str]) -> None:
        """Give back the device's job slot (device -> job id) once its job is over."""
        if not slots:
            return
        pipe = self.redis.pipeline(transaction=False)
        for device_id, job_id in slots.items():
            self._release(keys=[f"ota:cur:{{{device_id}}}"], args=[job_id], client=pipe)
        pipe.execute()

    def issue(self, rid: str, now: float, jobs: dict[str, tuple[str, str]],
              kind: str = "") -> dict[str, bool]:
        """Mark pending devices issued with (job id, stored job); True where this call issued it."""
        if not jobs:
            return {}
        args: list[Any] = [int(now)]
        for device_id, (job_id, stored) in jobs.items():
            args.extend((device_id, job_id, stored))
        keys = self._keys(rid, kind + "dev", kind + "cnt", kind + "pending", kind + "jobs")
        flags = self._issue(keys=keys, args=args)
        return {d: bool(f) for d, f in zip(jobs, flags, strict=True)}

    def refresh(self, rid: str, now: float, jobs: dict[str, tuple[str, str]]) -> dict[str, bool]:
        """Replace the stored job of devices still `issued` under that job id; True where done."""
        if not jobs:
            return {}
        args: list[Any] = [int(now)]
        for device_id, (job_id, stored) in jobs.items():
            args.extend((device_id, job_id, stored))
        flags = self._refresh(keys=self._keys(rid, "dev", "jobs"), args=args)
        return {d: bool(f) for d, f in zip(jobs, flags, strict=True)}

    def report(self, rid: str, device_id: str, job_id: str, state: str, now: float, timeout_s: int,
               kind: str = "") -> str:
        return str(self._report(keys=self._keys(rid, kind + "dev", kind + "cnt", kind + "deadline"),
                                args=[device_id, job_id, state, int(now), timeout_s]))

    def expire(self, rid: str, now: float, kind: str = "") -> dict[str, str]:
        """Time out in-progress jobs past their deadline; returns device -> job id."""
        keys = self._keys(rid, kind + "dev", kind + "cnt", kind + "deadline")
        flat = list(self._expire(keys=keys, args=[int(now)]))
        return dict(zip(flat[::2], flat[1::2], strict=True))

    def withdraw(self, rid: str, now: float) -> dict[str, str]:
        flat = list(self._withdraw(keys=self._keys(rid, "dev", "cnt", "pending"), args=[int(now)]))
        return dict(zip(flat[::2], flat[1::2], strict=True))

    def jobs(self, rid: str, device_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        ids = list(device_ids)
        if not ids:
            return {}
        rows = self.redis.hmget(self.key(rid, "jobs"), ids)
        return {d: json.loads(r) for d, r in zip(ids, rows, strict=True) if r}

    # -- health -----------------------------------------------------------------------------

    def put_health(self, scores: dict[str, tuple[float, float]]) -> None:
        if scores:
            self.redis.hset("ota:health", mapping={d: f"{s}|{at}" for d, (s, at) in scores.items()})

    def health(self) -> dict[str, tuple[float, float]]:
        out: dict[str, tuple[float, float]] = {}
        for device_id, raw in self.redis.hgetall("ota:health").items():
            score, _, at = raw.partition("|")
            out[device_id] = (float(score), float(at))
        return out
