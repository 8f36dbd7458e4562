"""The audit trail (API.md §0): every write, kept in Redis (bounded) and published on `{o}/audit`.

An entry is `{ts, token, role, action, target, result}`: `token` is the token's name (never the
secret), `action` a fixed word per route (`shadow.update`, `rollout.pause`, ...), `target` what it
acted on, `result` the HTTP status answered. Redis holds the newest `MAX_ENTRIES` in a list,
newest first.
"""

from __future__ import annotations

import json
import time
from typing import Any

from daemons.api.auth import Principal

MAX_ENTRIES = 10_000


class Audit:
    def __init__(self, redis: Any, bridge: Any, ops_prefix: str, namespace: str = "fleet") -> None:
        self.redis = redis
        self.bridge = bridge
        self.topic = f"{ops_prefix}/audit"
        self.key = f"{namespace}:api:audit"

    def record(self, who: Principal | None, action: str, target: str, result: int,
               detail: str | None = None) -> dict[str, Any]:
        entry: dict[str, Any] = {"ts": int(time.time()), "token": who.name if who else None,
                                 "role": who.role if who else None, "action": action, "target": target,
                                 "result": result}
        if detail:
            entry["detail"] = detail[:300]
        pipe = self.redis.pipeline(transaction=False)
        pipe.lpush(self.key, json.dumps(entry, separators=(",", ":")))
        pipe.ltrim(self.key, 0, MAX_ENTRIES - 1)
        pipe.execute()
        if self.bridge is not None and self.bridge.connected:
            self.bridge.publish(self.topic, entry)
        return entry

    def page(self, offset: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        pipe = self.redis.pipeline(transaction=False)
        pipe.llen(self.key)
        pipe.lrange(self.key, offset, offset + limit - 1)
        total, rows = pipe.execute()
        return [json.loads(r) for r in rows], int(total)
