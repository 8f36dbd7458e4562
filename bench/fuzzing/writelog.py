"""Which Redis keys were written, from Redis itself: keyspace notifications up to a barrier.

`notify-keyspace-events KA` makes redis-server publish one message per write on
`__keyspace@<db>__:<key>`. Redis runs commands one at a time and delivers a subscriber's messages
in order, so once a message PUBLISHed on a barrier channel arrives, every write made before it
has been reported: `drain()` returns exactly the keys written since the previous drain, by
anyone (the handler under test, a daemon in another process, a Lua script). That is how a fuzz
case proves a rejected input stored nothing at all, not only nothing in the keys it expected.
"""

from __future__ import annotations

from typing import Any

import redis as redis_lib

# Not writes of a request: a key's TTL running out, or memory pressure.
NOT_WRITES = frozenset({"expired", "evicted"})
BARRIER = "fuzz:barrier"


class WriteLog:
    def __init__(self, url: str) -> None:
        self.redis = redis_lib.Redis.from_url(url, decode_responses=True)
        self.redis.config_set("notify-keyspace-events", "KA")
        self.pubsub = self.redis.pubsub()
        self.pubsub.psubscribe("__keyspace@*__:*")
        self.pubsub.subscribe(BARRIER)
        self._n = 0
        self.drain()

    def drain(self, timeout: float = 10.0) -> dict[str, set[str]]:
        """Keys written since the last drain, each with its events (`hset`, `del`, `zadd`, ...)."""
        self._n += 1
        token = f"barrier-{self._n}"
        self.redis.publish(BARRIER, token)
        written: dict[str, set[str]] = {}
        while True:
            message: Any = self.pubsub.get_message(timeout=timeout)
            if message is None:
                raise TimeoutError("the barrier message did not come back")
            kind = message["type"]
            if kind == "message" and message["data"] == token:
                return written
            if kind == "pmessage" and message["data"] not in NOT_WRITES:
                key = message["channel"].split("__:", 1)[1]
                written.setdefault(key, set()).add(message["data"])

    def close(self) -> None:
        self.pubsub.close()
        self.redis.config_set("notify-keyspace-events", "")
        self.redis.close()
