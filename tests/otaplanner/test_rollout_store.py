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


def _halted(store: RolloutStore) -> str:
    """A rollout `r1` stored halted and unlisted; its rev."""
    assert store.create("r1", {"config": "{}", "state": "running"}, {"rollout_id": "r1", "seq": 1})
    rev = store.transition("r1", "1", {"state": "halted"}, None)
    store.redis.srem("ota:active", "r1")  # as the transition's drop did (asserted below)
    return str(rev)


# A periodic pass (control.tick) drops a listed rollout it read as not active. Another replica may
# make the rollout active again in between (a transition into an active state from one that is
# not): the drop must not leave it active but unlisted, never ticked again. The state machine has
# no such edge today (resume is paused -> running, both active), so these drive the store directly.
@on_both_backends
def test_a_drop_between_listing_and_the_write_leaves_an_activated_rollout_listed(redis: Any) -> None:
    store = RolloutStore(redis)
    rev = _halted(store)
    assert store.meta("r1")["state"] == "halted"  # replica B's tick reads it: not active
    store.list_active("r1")  # replica A starts a transition into running: listed first
    store.drop_inactive("r1")  # B drops it, on what it read
    assert store.transition("r1", rev, {"state": "running"}, None)  # A's write
    assert store.active() == ["r1"]


@on_both_backends
def test_a_drop_after_the_write_leaves_an_activated_rollout_listed(redis: Any) -> None:
    store = RolloutStore(redis)
    rev = _halted(store)
    assert store.meta("r1")["state"] == "halted"  # replica B's tick reads it: not active
    assert store.transition("r1", rev, {"state": "running"}, None)  # replica A's transition
    store.drop_inactive("r1")  # B drops it, on what it read
    assert store.active() == ["r1"]
    assert store.transition("r1", str(int(rev) + 1), {"state": "aborted"}, None)
    assert store.active() == []  # a transition out of the active states still unlists it
def test_a_conflicting_create_lists_nothing(redis: Any) -> None:
    """Found by `make fuzz`: a create answered 409 (another configuration) put a finished rollout
    back into `ota:active`."""
    store = RolloutStore(redis)
    event = {"rollout_id": "r1", "seq": 1, "event": "created"}
    assert store.create("r1", {"config": '{"a": 1}', "state": "completed"}, event)
    redis.srem("ota:active", "r1")  # finished: the tick dropped it
    assert not store.create("r1", {"config": '{"a": 2}', "state": "running"}, event)
    assert store.active() == [] and store.meta("r1")["config"] == '{"a": 1}'
