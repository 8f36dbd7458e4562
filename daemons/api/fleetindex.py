"""Filtered, sorted pages of the fleet, computed inside Redis from the indexes.

A page never walks the devices in Python: the filters are index sets (the registry's hw, fw and
tag sets, its `connected` set, healthwatch's per-status sets), the sort key a sorted set (`ids`,
`seen`, healthwatch's `scores`), and one ZINTERSTORE combines them into a result set kept a few
seconds (so the next pages of the same query are a ZRANGE). Every key involved carries the `{idx}`
hash tag, so this works on Redis Cluster too. Only the page's devices are then read.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from daemons.registry import Registry, slot_pipeline
from healthwatch.store import HealthStore

RESULT_TTL_S = 5
SORTS = ("id", "-id", "last_seen_at", "-last_seen_at", "health_score", "-health_score")
HEALTH = ("ok", "watch", "critical", "offline")
NO_SCORE = 1000  # devices with no health yet sort after every scored one
DEVICE_FIELDS = ("hw", "fw", "tags", "last_seen_at", "connected")


@dataclass(frozen=True)
class DeviceQuery:
    hw: str | None = None
    fw: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    connected: bool | None = None
    health: str | None = None
    q: str | None = None
    sort: str = "id"

    def fingerprint(self) -> str:
        raw = json.dumps([self.hw, self.fw, sorted(self.tags.items()), self.connected, self.health, self.q,
                          self.sort])
        return hashlib.sha1(raw.encode()).hexdigest()[:20]


class FleetIndex:
    def __init__(self, redis: Any, namespace: str = "fleet") -> None:
        self.redis = redis
        self.ns = namespace
        self.registry = Registry(redis, namespace)
        self.health = HealthStore(redis, namespace)

    def idx(self, name: str) -> str:
        return f"{self.ns}:{{idx}}:{name}"

    def backfill(self) -> None:
        """Fill the `ids` sorted set from the registry's `all` set when it lags (an older layout)."""
        if self.redis.zcard(self.idx("ids")) < self.redis.scard(self.idx("all")):
            members = list(self.redis.smembers(self.idx("all")))
            for i in range(0, len(members), 5000):
                self.redis.zadd(self.idx("ids"), dict.fromkeys(members[i:i + 5000], 0))

    def _result(self, query: DeviceQuery) -> str:
        """The key of the query's result set (member: device id, score: the sort key)."""
        key = self.idx(f"api:q:{query.fingerprint()}")
        if self.redis.exists(key):
            return key
        tmp = self.idx(f"api:t:{query.fingerprint()}")
        keys: list[str] = [self.idx("ids")]
        weights: list[float] = [0]
        # One MULTI on the `{idx}` slot: atomic (two API processes building the same query share
        # its temporary keys), and multi-key commands work on Redis Cluster too.
        pipe = slot_pipeline(self.redis, key, transaction=True)
        if query.hw is not None:
            keys.append(self.idx(f"hw:{query.hw}"))
        keys.extend(self.idx(f"tag:{k}={v}") for k, v in sorted(query.tags.items()))
        if query.health is not None:
            keys.append(self.health.status_key(query.health))
        if query.connected is True:
            keys.append(self.idx("connected"))
        elif query.connected is False:
            pipe.sdiffstore(tmp + ":off", [self.idx("all"), self.idx("connected")])
            keys.append(tmp + ":off")
        if query.fw is not None:
            values = [v for v in self.redis.smembers(self.idx("fwvals")) if fnmatch.fnmatchcase(v, query.fw)]
            pipe.delete(tmp + ":fw")
            if values:
                pipe.sunionstore(tmp + ":fw", [self.idx(f"fw:{v}") for v in values])
            keys.append(tmp + ":fw")
        if query.q:
            pipe.delete(tmp + ":q")
            pipe.zrangestore(tmp + ":q", self.idx("ids"), "[" + query.q, "[" + query.q + "\xff",
                             bylex=True)
            keys.append(tmp + ":q")
        weights.extend([0] * (len(keys) - 1))
        by = query.sort.lstrip("-")
        if by == "last_seen_at":
            pipe.zunionstore(tmp + ":s", {self.idx("all"): 0, self.idx("seen"): 1}, aggregate="MAX")
        elif by == "health_score":
            pipe.zunionstore(tmp + ":s", {self.idx("all"): NO_SCORE, self.health.scores_key: 1},
                             aggregate="MIN")
        if by != "id":
            keys.append(tmp + ":s")
            weights.append(1)
        pipe.zinterstore(key, dict(zip(keys, weights, strict=True)))
        pipe.expire(key, RESULT_TTL_S)
        pipe.delete(tmp + ":off", tmp + ":fw", tmp + ":q", tmp + ":s")
        pipe.execute()
        return key

    def page(self, query: DeviceQuery, offset: int, limit: int) -> tuple[list[str], int]:
        """(device ids of the page, total matching)."""
        key = self._result(query)
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(key)
        pipe.zrange(key, offset, offset + limit - 1, desc=query.sort.startswith("-"))
        total, ids = pipe.execute()
        return list(ids), int(total)

    def known(self, device_id: str) -> bool:
        return bool(self.redis.sismember(self.idx("all"), device_id))

    def items(self, ids: list[str]) -> list[dict[str, Any]]:
        """The list item of API.md §1 for each id: `{id, hw, fw, connected, last_seen_at, health, tags}`."""
        if not ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for device_id in ids:
            pipe.hmget(self.registry.key(device_id), *DEVICE_FIELDS)
            pipe.hmget(self.health.key(device_id), "score", "status")
        rows = pipe.execute()
        out = []
        for i, device_id in enumerate(ids):
            hw, fw, tags, seen, connected = rows[2 * i]
            score, status = rows[2 * i + 1]
            try:
                parsed = json.loads(tags) if tags else {}
            except ValueError:
                parsed = {}
            out.append({
                "id": device_id, "hw": hw or None, "fw": fw or None, "connected": connected == "1",
                "last_seen_at": int(seen) if seen else None,
                "health": {"score": int(float(score)) if score else None, "status": status or None},
                "tags": parsed if isinstance(parsed, dict) else {},
            })
        return out

    def summary(self) -> dict[str, Any]:
        """Counts by connected, health status, hw and fw (API.md §1 `GET /fleet/summary`)."""
        hws = sorted(self.redis.smembers(self.idx("hwvals")))
        fws = sorted(self.redis.smembers(self.idx("fwvals")))
        pipe = self.redis.pipeline(transaction=False)
        pipe.scard(self.idx("all"))
        pipe.scard(self.idx("connected"))
        for status in HEALTH:
            pipe.scard(self.health.status_key(status))
        for hw in hws:
            pipe.scard(self.idx(f"hw:{hw}"))
        for fw in fws:
            pipe.scard(self.idx(f"fw:{fw}"))
        rows = pipe.execute()
        total, connected = int(rows[0]), int(rows[1])
        health = dict(zip(HEALTH, map(int, rows[2:6]), strict=True))
        by_hw = {h: int(n) for h, n in zip(hws, rows[6:6 + len(hws)], strict=True) if n}
        by_fw = {f: int(n) for f, n in zip(fws, rows[6 + len(hws):], strict=True) if n}
        return {"devices": total, "connected": {"true": connected, "false": max(0, total - connected)},
                "health": health, "hw": by_hw, "fw": by_fw}
