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
`ota:cur:{<device>}` (`slot_key`: the device's one job slot, rollout and job id; same hash tag as the
device's registry hash, which CLAIM reads), `ota:health` (device -> score).
On Redis Cluster every script touches one slot: a rollout's own keys, or one device's. The fleet-wide
keys above are only ever used one key per command, so they need no common tag; a rollout's id is
listed in `ota:rollouts`/`ota:active` right after CREATE (see `create`), and in `ota:active` after
each write of an active state (see `transition`, `drop_inactive`). Scripts are pipelined by
daemons.registry.run_scripts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, cast

from daemons.registry import device_key, run_scripts
from otaplanner.records import DeviceRecord, Release
from otaplanner.rollout import ACTIVE, Counts
from otaplanner.rollout_scripts import (
    ASSIGN,
    CLAIM,
    CREATE,
    EXPIRE,
    ISSUE,
    LEASE,
    MARK_SENT,
    REFRESH,
    RELEASE,
    REPORT,
    TRANSITION,
    WITHDRAW,
)


class RolloutStore:
    def __init__(self, redis: Any, device_ns: str = "fleet") -> None:
        self.redis = redis
        self.device_ns = device_ns  # the registry's namespace (daemons.registry)
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

    @staticmethod
    def slot_key(device_id: str) -> str:
        """The device's one job slot (hash: rid, job); its hash tag is the device's registry hash's."""
        return f"ota:cur:{{{device_id}}}"

    def _keys(self, rid: str, *parts: str) -> list[str]:
        return [self.key(rid, p) for p in parts]

    # -- releases -------------------------------------------------------------------------

    def release(self, version: str) -> Release | None:
        raw = self.redis.hget("ota:releases", version)
        return cast(Release, json.loads(raw)) if raw else None

    def add_release(self, version: str, release: Release) -> bool:
        return bool(self.redis.hsetnx("ota:releases", version, json.dumps(release, sort_keys=True)))

    # -- rollout meta -----------------------------------------------------------------------

    def meta(self, rid: str) -> dict[str, str]:
        return dict(self.redis.hgetall(self.key(rid, "meta")))

    def create(self, rid: str, fields: dict[str, str], event: dict[str, Any]) -> bool:
        """Store a new rollout's meta and `created` event unless the id exists; True when created.

        The id is then listed in `ota:rollouts` and `ota:active` (other slots, so not in the script),
        also when the rollout existed with this very configuration: a create redelivered after a
        crash between the two lists it. A create that conflicts (another configuration, answered
        409) lists nothing: a refused request stores nothing (found by `make fuzz`). An id listed
        active whose rollout is not is dropped by the next tick (control.tick).
        """
        args: list[str] = [json.dumps(event)]
        for k, v in fields.items():
            args.extend((k, v))
        ok = bool(self._create(keys=self._keys(rid, "meta", "events"), args=args))
        if ok or self.redis.hget(self.key(rid, "meta"), "config") == fields.get("config"):
            self.redis.sadd("ota:rollouts", rid)
            self.redis.sadd("ota:active", rid)
        return ok

    def transition(self, rid: str, rev: str, fields: dict[str, str], event: dict[str, Any] | None) -> int:
        """Write `fields` if the meta is still at `rev`; 0 when someone else moved it first.

        A written `state` is then mirrored in `ota:active` (another slot, so after the script): an
        active state lists the rollout, any other drops it (`drop_inactive`). Listing after the
        state says active is what lets a drop decided on an older state not lose the rollout; it
        is listed before as well, so a crash between the two cannot leave it un-ticked.
        """
        args: list[str] = [rev, json.dumps(event) if event else ""]
        for k, v in fields.items():
            args.extend((k, v))
        state = fields.get("state")
        if state in ACTIVE:
            self.list_active(rid)
        new_rev = int(self._transition(keys=self._keys(rid, "meta", "events"), args=args))
        if new_rev and state is not None:
            if state in ACTIVE:
                self.list_active(rid)
            else:
                self.drop_inactive(rid)
        return new_rev

    def list_active(self, rid: str) -> None:
        self.redis.sadd("ota:active", rid)

    def drop_inactive(self, rid: str) -> None:
        """Unlist the rollout from `ota:active` unless its stored state is active.

        The set and the meta are in different slots on Redis Cluster, so no script can check and
        remove at once: remove, then read the state and list it again if active. A transition into
        an active state writes the state before listing the rollout, so either this read sees that
        state or that listing comes after this removal; a caller's older read cannot lose it.
        """
        self.redis.srem("ota:active", rid)
        if self.redis.hget(self.key(rid, "meta"), "state") in ACTIVE:
            self.list_active(rid)

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

    def states(self) -> dict[str, str]:
        """Every rollout id -> its state (one pipelined read of each meta)."""
        rids = sorted(self.redis.smembers("ota:rollouts"))
        pipe = self.redis.pipeline(transaction=False)
        for rid in rids:
            pipe.hget(self.key(rid, "meta"), "state")
        return {rid: state or "" for rid, state in zip(rids, pipe.execute() if rids else [], strict=True)}

    def in_progress(self, rid: str) -> int:
        return sum(int(self.redis.zcard(self.key(rid, k))) for k in ("deadline", "rb:deadline"))

    def events(self, rid: str) -> list[dict[str, Any]]:
        return [json.loads(e) for e in self.redis.lrange(self.key(rid, "events"), 0, -1)]

    def mark_sent(self, sent: dict[str, int]) -> None:
        if not sent:
            return
        calls = [([self.key(rid, "meta")], [seq]) for rid, seq in sent.items()]
        run_scripts(self.redis, self._mark_sent, calls)

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

    def records(self, rid: str) -> dict[str, DeviceRecord]:
        return {k: DeviceRecord.from_json(json.loads(v))
                for k, v in self.redis.hgetall(self.key(rid, "dev")).items()}

    def records_of(self, rid: str, device_ids: Iterable[str], kind: str = "") -> dict[str, DeviceRecord]:
        """The records of these devices (those the rollout has taken in)."""
        ids = list(device_ids)
        if not ids:
            return {}
        rows = self.redis.hmget(self.key(rid, kind + "dev"), ids)
        return {d: DeviceRecord.from_json(json.loads(r)) for d, r in zip(ids, rows, strict=True) if r}

    def assign(self, rid: str, records: dict[str, DeviceRecord], kind: str = "") -> int:
        """Take devices in (pending, or succeeded when already on the version); never twice."""
        if not records:
            return 0
        args: list[Any] = []
        for device_id, rec in records.items():
            args.extend((device_id, json.dumps(rec.to_json(), separators=(",", ":")), str(rec.state)))
        keys = self._keys(rid, kind + "dev", kind + "cnt", kind + "pending")
        return int(self._assign(keys=keys, args=args))

    def pending(self, rid: str, limit: int, kind: str = "") -> list[str]:
        return list(self.redis.zrange(self.key(rid, kind + "pending"), 0, limit - 1))

    def claim(self, rid: str, jobs: dict[str, str]) -> dict[str, str]:
        """Take each device's job slot for (rollout, job id); the devices taken, with their encoding."""
        calls = [([self.slot_key(d), device_key(self.device_ns, d)], [rid, job_id])
                 for d, job_id in jobs.items()]
        got = zip(jobs, run_scripts(self.redis, self._claim, calls), strict=True)
        return {d: ("msgpack" if enc == "msgpack" else "json") for d, enc in got if enc}

    def current(self, device_id: str) -> str | None:
        """The job id in the device's one job slot, if it holds one."""
        job = self.redis.hget(self.slot_key(device_id), "job")
        return str(job) if job else None

    def free(self, slots: dict[str, str]) -> None:
        """Give back the device's job slot (device -> job id) once its job is over."""
        if not slots:
            return
        calls = [([self.slot_key(d)], [job_id]) for d, job_id in slots.items()]
        run_scripts(self.redis, self._release, calls)

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
        """Apply a device's report. Returns the state it replaced, `nojob`, `terminal` or `same`;
        or, for a terminal report replacing `timed_out`, the stored `late` event as JSON."""
        late_event = {"rollout_id": rid, "event": "late_report", "device_id": device_id, "job_id": job_id,
                      "job_state": state, "replaces": "timed_out", "late": True,
                      "reason": f"{state} reported after the job timed out", "timestamp": int(now)}
        keys = self._keys(rid, kind + "dev", kind + "cnt", kind + "deadline", "meta", "events")
        return str(self._report(keys=keys, args=[device_id, job_id, state, int(now), timeout_s,
                                                 json.dumps(late_event)]))

    def expire(self, rid: str, now: float, kind: str = "") -> dict[str, str]:
        """Time out in-progress jobs past their deadline; returns device -> job id."""
        keys = self._keys(rid, kind + "dev", kind + "cnt", kind + "deadline")
        flat = list(self._expire(keys=keys, args=[int(now)]))
        return dict(zip(flat[::2], flat[1::2], strict=True))

    def withdraw(self, rid: str, now: float) -> dict[str, str]:
        flat = list(self._withdraw(keys=self._keys(rid, "dev", "cnt", "pending"), args=[int(now)]))
        return dict(zip(flat[::2], flat[1::2], strict=True))

    def jobs(self, rid: str, device_ids: Iterable[str], kind: str = "") -> dict[str, dict[str, Any]]:
        ids = list(device_ids)
        if not ids:
            return {}
        rows = self.redis.hmget(self.key(rid, kind + "jobs"), ids)
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
