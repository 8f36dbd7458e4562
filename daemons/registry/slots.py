"""One Redis or a Redis Cluster: the one place for what differs between them.

Every store writes per device or per rollout with a Lua script whose keys share one hash tag,
many calls per batch in one round trip (`run_scripts`). redis-py's cluster pipeline refuses
scripts (EVALSHA is in its `PIPELINE_BLOCKED_COMMANDS` up to redis-py 8.1, issue redis/redis-py#2914),
so on a cluster the calls are grouped by the node that owns each call's slot and sent in a plain
pipeline on that node's connection (the pipeline loads the script there first). The same list
blocks multi-key commands (SUNIONSTORE, SDIFFSTORE, DEL of several keys) even when their keys
share a hash tag: `slot_pipeline` is a plain pipeline, or MULTI, on the node of one slot.
Whether a client is a cluster client is decided once, by its type (`is_cluster`):
daemons.runtime.redisclient's `connect_redis` makes one when `FLEET_REDIS_CLUSTER` is on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import redis as redis_lib

# One script call: its keys (all in one slot: one hash tag) and its arguments.
ScriptCall = tuple[Sequence[str], Sequence[Any]]


def is_cluster(redis: Any) -> bool:
    """True for a Redis Cluster client: a redis.RedisCluster, or a client that says `is_cluster`
    (daemons.runtime.redisclient.LazyCluster, which makes its RedisCluster at first use)."""
    return isinstance(redis, redis_lib.RedisCluster) or getattr(type(redis), "is_cluster", False) is True


def run_scripts(redis: Any, script: Any, calls: Sequence[ScriptCall],
                extra: Callable[[Any], None] | None = None) -> list[Any]:
    """Run `script` (a `register_script` object) once per call, pipelined; the results in call order.

    `extra(pipe)` may queue further plain commands (index updates) after the scripts: in the same
    round trip on one Redis, in one cluster pipeline after the scripts on a cluster. Errors are
    redis-py's (a ResponseError from a script is raised by the pipeline). On a cluster being
    resharded, a call sent to a node that no longer owns its slot (MOVED or ASK) makes this refresh
    the client's slot map and raise `redis.exceptions.TryAgainError`, which the run loop retries
    like any transient error: the scripts of a batch are idempotent or compare-and-set, so the
    calls that did apply before it do no harm when sent again.
    """
    if not is_cluster(redis):
        pipe = redis.pipeline(transaction=False)
        for keys, args in calls:
            script(keys=keys, args=args, client=pipe)
        if extra is not None:
            extra(pipe)
        return list(pipe.execute())[: len(calls)]
    by_node: dict[str, tuple[Any, list[int]]] = {}
    for i, (keys, _) in enumerate(calls):
        node = redis.get_node_from_key(keys[0])
        by_node.setdefault(node.name, (node, []))[1].append(i)
    results: list[Any] = [None] * len(calls)
    for node, indexes in by_node.values():
        pipe = redis.get_redis_connection(node).pipeline(transaction=False)
        for i in indexes:
            script(keys=calls[i][0], args=calls[i][1], client=pipe)
        try:
            answers = pipe.execute()
        except (redis_lib.exceptions.MovedError, redis_lib.exceptions.AskError) as exc:
            redis.nodes_manager.initialize()
            raise redis_lib.exceptions.TryAgainError(f"slot moved, slot map refreshed: {exc}") from exc
        for i, result in zip(indexes, answers, strict=True):
            results[i] = result
    if extra is not None:
        pipe = redis.pipeline(transaction=False)
        extra(pipe)
        pipe.execute()
    return results


def slot_pipeline(redis: Any, key: str, transaction: bool = False) -> Any:
    """A pipeline (MULTI/EXEC when `transaction`) whose every key must be in `key`'s slot (one hash
    tag): on a cluster, a plain pipeline on the node that owns that slot, so multi-key commands
    and transactions work as on one Redis."""
    if not is_cluster(redis):
        return redis.pipeline(transaction=transaction)
    return redis.get_redis_connection(redis.get_node_from_key(key)).pipeline(transaction=transaction)
