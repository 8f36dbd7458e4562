"""healthwatch's keys moved from `fleet:hw:` to `fleet:health:`; what an older version stored moves too."""

from __future__ import annotations

from typing import Any

from healthwatch.store import HealthStore


def test_legacy_keys_are_renamed_once_and_never_over_newer_ones(redis: Any) -> None:
    redis.hset("fleet:hw:{d-1}", mapping={"status": "ok", "score": 90})
    redis.zadd("fleet:hw:{idx}:seen", {"d-1": 5.0})
    redis.hset("fleet:hw:{cohorts}:levels:c3|1.0", "d-1", "1,2,3,4")
    redis.hset("fleet:hw:{d-2}", "status", "old")
    redis.hset("fleet:health:{d-2}", "status", "new")  # already written by the new version: kept
    redis.sadd("fleet:{idx}:hw:c3", "d-1")  # the registry's hardware index is not healthwatch's
    store = HealthStore(redis)
    assert store.migrate_legacy_keys() == 3
    assert redis.hget(store.key("d-1"), "score") == "90"
    assert redis.zscore(store.seen_key, "d-1") == 5.0
    assert redis.hget(store.levels_key("c3|1.0"), "d-1") == "1,2,3,4"
    assert redis.hget(store.key("d-2"), "status") == "new"
    assert redis.exists("fleet:{idx}:hw:c3")
    assert store.migrate_legacy_keys() == 0
