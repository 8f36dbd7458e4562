"""One replica per message on topics that must be handled once, where the broker cannot deal them.

With `$share` (MQTT 5) the broker hands each message to one replica. On a 3.1.1 broker (amqtt)
every replica subscribes plainly and gets every message: for operator commands that would mean
one answer per replica. There, the first replica to claim a message in Redis handles it; the
others acknowledge it and let it go. The claim is `SET NX` on a digest of topic and payload with
the claimer's id as value, so a batch retried after a Redis error still finds its own claims.

A command repeated byte for byte within `ttl_s` counts as the same command (answered once); an
operator who means to repeat one changes its `clientToken`.
"""

from __future__ import annotations

import hashlib
from typing import Any

from paho.mqtt.client import topic_matches_sub

from daemons.protocol.messages import Inbound


class ClaimOnce:
    """Claims in Redis (`{ns}:once:{<digest>}`, expiring after `ttl_s`) by `owner`, a replica id."""

    def __init__(self, redis: Any, owner: str, filters: list[str], ttl_s: int = 600,
                 namespace: str = "fleet") -> None:
        self.redis = redis
        self.owner = owner
        self.filters = filters
        self.ttl_ms = ttl_s * 1000
        self.ns = namespace

    def key(self, message: Inbound) -> str:
        digest = hashlib.sha256(message.topic.encode() + b"\0" + message.payload).hexdigest()
        return f"{self.ns}:once:{{{digest[:16]}}}:{digest}"

    def keep(self, batch: list[Inbound]) -> list[Inbound]:
        """The messages of `batch` this replica handles: every one not under a filter, and those
        under a filter that it claimed (now or on an earlier try of the same batch)."""
        claimed = [m for m in batch if any(topic_matches_sub(f, m.topic) for f in self.filters)]
        if not claimed:
            return batch
        contested = {id(m) for m in claimed}
        pipe = self.redis.pipeline(transaction=False)
        for m in claimed:
            pipe.set(self.key(m), self.owner, nx=True, px=self.ttl_ms)
            pipe.get(self.key(m))
        results = pipe.execute()
        mine = {id(m) for m, owner in zip(claimed, results[1::2], strict=True) if owner == self.owner}
        return [m for m in batch if id(m) not in contested or id(m) in mine]
