"""A redelivered update is answered again, not applied again (found by `make chaos`: kill -9 of
shadow-sync between its Redis write and its PUBACK applied 81 of 750 operator updates twice)."""

from __future__ import annotations

import json

from daemons.protocol.codec import decode
from daemons.protocol.messages import Inbound
from daemons.registry import Registry
from shadowsync.service import TOKENS_KEPT, ShadowService
from shadowsync.store import ShadowStore


def answers(service: ShadowService, topic: str, body: dict, dup: bool = False) -> list[tuple[str, dict]]:
    out = service.handle([Inbound(topic, json.dumps(body).encode(), dup=dup)])
    return [(p.topic.rsplit("/", 1)[-1], decode(p.payload)[0]) for p in out.publishes]


def stored(redis, device: str) -> dict:
    return json.loads(redis.hget(f"fleet:dev:{{{device}}}", "sh:"))


def test_the_same_update_twice_is_applied_once_and_answered_twice(redis):
    service = ShadowService(ShadowStore(redis), Registry(redis), "p", "o", clock=lambda: 1_800_000_000)
    update = {"state": {"desired": {"a": 1}}, "clientToken": "t-1"}
    first = answers(service, "p/d1/shadow/update", update)
    again = answers(service, "p/d1/shadow/update", update, dup=True)  # the broker's redelivery
    assert ("accepted", {**first[0][1]}) == again[0]
    assert again[0][1]["version"] == 1 and stored(redis, "d1")["version"] == 1
    assert "delta" in [t for t, _ in again]  # the device still gets its delta (it dedupes by version)
    assert "documents" not in [t for t, _ in again]  # nothing changed


def test_a_new_request_under_an_old_token_or_the_same_one_sent_again_is_applied(redis):
    service = ShadowService(ShadowStore(redis), Registry(redis), "p", "o")
    answers(service, "p/d2/shadow/update", {"state": {"desired": {"a": 1}}, "clientToken": "same"})
    other = answers(service, "p/d2/shadow/update", {"state": {"desired": {"a": 2}}, "clientToken": "same"},
                    dup=True)
    assert other[0][0] == "accepted" and other[0][1]["version"] == 2
    assert stored(redis, "d2")["state"]["desired"] == {"a": 2}
    # The client itself sending the very same request again (no DUP) makes a new update, as on AWS IoT.
    again = answers(service, "p/d2/shadow/update", {"state": {"desired": {"a": 2}}, "clientToken": "same"})
    assert again[0][1]["version"] == 3


def test_tokens_kept_are_bounded_and_reports_with_seq_need_none(redis):
    service = ShadowService(ShadowStore(redis), Registry(redis), "p", "o")
    for n in range(TOKENS_KEPT + 5):
        answers(service, "p/d3/shadow/update", {"state": {"desired": {"n": n}}, "clientToken": f"t{n}"})
    assert len(json.loads(redis.hget("fleet:dev:{d3}", "tok:"))) == TOKENS_KEPT
    report = {"state": {"reported": {"n": 1}}, "seq": 7, "clientToken": "r"}
    answers(service, "p/d4/shadow/update", report)
    assert redis.hget("fleet:dev:{d4}", "tok:") is None
    assert answers(service, "p/d4/shadow/update", report, dup=True)[0][0] == "rejected"  # stale, as before
