"""RolloutStore on one redis-server and on a Redis Cluster: what spans slots survives a crash."""

from __future__ import annotations

from typing import Any

from otaplanner.rollout_store import RolloutStore
from tests.support import on_both_backends


@on_both_backends
def test_a_create_redelivered_after_a_crash_lists_the_rollout(redis: Any) -> None:
    store = RolloutStore(redis)
    event = {"rollout_id": "r1", "seq": 1, "event": "created"}
    assert store.create("r1", {"config": "{}", "state": "running"}, event)
    redis.srem("ota:rollouts", "r1")  # the process died after CREATE, before listing it
    redis.srem("ota:active", "r1")
    assert not store.create("r1", {"config": "{}", "state": "running"}, event)  # the redelivery
    assert store.active() == ["r1"] and store.states() == {"r1": "running"}
    assert [e["event"] for e in store.events("r1")] == ["created"]  # stored once


def test_a_conflicting_create_lists_nothing(redis: Any) -> None:
    """Found by `make fuzz`: a create answered 409 (another configuration) put a finished rollout
    back into `ota:active`."""
    store = RolloutStore(redis)
    event = {"rollout_id": "r1", "seq": 1, "event": "created"}
    assert store.create("r1", {"config": '{"a": 1}', "state": "completed"}, event)
    redis.srem("ota:active", "r1")  # finished: the tick dropped it
    assert not store.create("r1", {"config": '{"a": 2}', "state": "running"}, event)
    assert store.active() == [] and store.meta("r1")["config"] == '{"a": 1}'
