"""One tick of a rollout loads it once and reads its counts once when nothing changed them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from daemons.protocol.messages import Inbound
from daemons.registry import Registry
from otaplanner.artifacts import LocalStore
from otaplanner.jobs import JobFactory
from otaplanner.planner import Planner
from otaplanner.rollout import Counts
from otaplanner.rollout_store import RolloutStore
from otaplanner.signing import Signer


class CountingStore(RolloutStore):
    """The real store on real Redis, counting the reads a tick makes."""

    def __init__(self, redis: Any) -> None:
        super().__init__(redis)
        self.reads: dict[str, int] = {}

    def meta(self, rid: str) -> dict[str, str]:
        self.reads["meta"] = self.reads.get("meta", 0) + 1
        return super().meta(rid)

    def counts(self, rid: str, kind: str = "") -> tuple[Counts, int]:
        self.reads[f"counts{kind}"] = self.reads.get(f"counts{kind}", 0) + 1
        return super().counts(rid, kind)


def test_a_quiet_tick_loads_the_rollout_once_and_reads_the_counts_once(redis: Any, tmp_path: Path) -> None:
    data = b"x" * 100
    (tmp_path / "fw.bin").write_bytes(data)
    artifacts = LocalStore(tmp_path, "http://127.0.0.1:9", b"k" * 32)
    store = CountingStore(redis)
    now = [1_800_000_000.0]
    planner = Planner(store, Registry(redis), JobFactory(Signer(kid="k1", master_key=b"m" * 32), artifacts),
                      artifacts, "p", "o", "a", clock=lambda: now[0])

    def send(topic: str, body: dict[str, Any]) -> None:
        planner.handle([Inbound(topic, json.dumps(body).encode())])

    send("o/ota/releases/register", {"version": "2.0.0", "hw": ["c3"], "object": "fw.bin",
                                     "sha256": hashlib.sha256(data).hexdigest(), "size": 100})
    for i in range(5):
        send(f"p/d{i}/heartbeat", {"hw": "c3", "fw": "1.0.0", "ts": 1, "seq": 1})
    send("o/ota/rollouts/r/command", {"action": "create", "version": "2.0.0", "stages": [100],
                                      "soak_s": 3600})
    now[0] += 5
    planner.tick(now[0])  # takes the rest of the fleet in, if anything was left
    now[0] += 5
    store.reads.clear()
    out = planner.tick(now[0])
    assert store.reads == {"meta": 1, "counts": 1, "countsrb:": 1}, store.reads
    assert not [p for p in out.publishes if p.topic.endswith("/ota/job")]
