"""Hostile payloads on every ota-planner request topic (issue 11), property-tested with hypothesis:
an answer on `/accepted` or `/rejected` for every request, never a 500 nor an exception, device
topics dropped and counted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemons.protocol.codec import decode
from daemons.protocol.messages import Inbound
from tests.otaplanner.test_planner_clock import Clock, make, send
from tests.shadowsync.hostile import TOKEN, Pairs, deep, scalars, to_json, to_msgpack, values

FIELDS = ["action", "version", "hw", "object", "sha256", "size", "secure_version", "notes", "selector",
          "stages", "soak_s", "success_pct", "max_failure_pct", "min_devices_for_gate", "timeout_s",
          "rate_per_min", "job_id", "state", "fw", "ts", "seq", "uptime_s"]
GOOD = {"action": st.sampled_from(["create", "pause", "resume", "abort", "advance", "rollback", "x"]),
        "version": st.just("2.0.0"), "hw": st.just(["c3"]), "object": st.just("fw.bin"),
        "state": st.sampled_from(["downloading", "succeeded", "failed", "nope"]),
        "stages": st.just([10, 100])}


@st.composite
def bodies(draw: Any) -> bytes:
    names = draw(st.lists(st.sampled_from(FIELDS), max_size=6))
    items = [("clientToken", TOKEN)]
    for name in names:
        hostile = draw(st.booleans())
        strategy = GOOD.get(name, scalars) | values | deep() if hostile else GOOD.get(name, values)
        items.append((name, draw(strategy)))
    body = Pairs(tuple(items))
    return to_json(body) if draw(st.booleans()) else to_msgpack(body)


TOPICS = ["o/ota/releases/register", "o/ota/rollouts/r/command", "o/ota/rollouts/r2/command",
          "p/d01/ota/status", "p/d02/heartbeat", "p/d03/status"]


def test_every_request_is_answered(redis: Any, tmp_path: Path) -> None:
    (tmp_path / "fw.bin").write_bytes(b"x" * 100)
    clock = Clock()
    planner = make(redis, tmp_path, clock)
    send(planner, "o/ota/releases/register", {
        "version": "2.0.0", "hw": ["c3"], "object": "fw.bin", "size": 100,
        "sha256": "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"})

    @settings(max_examples=300, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(st.sampled_from(TOPICS), bodies())
    def check(topic: str, payload: bytes) -> None:
        clock.t += 1
        out = planner.handle([Inbound(topic, payload)])
        planner.tick(clock.t)
        if not topic.startswith("o/"):
            return  # device topics: no answer topic; counted (never an exception)
        answers = [p for p in out.publishes if p.topic in (f"{topic}/accepted", f"{topic}/rejected")]
        assert len(answers) == 1, out.publishes
        body = decode(answers[0].payload)[0]
        if answers[0].topic.endswith("/rejected"):
            assert body["code"] in (400, 404, 409, 413, 415), body
            # The token is known unless the payload could not be read as far as it.
            assert body.get("clientToken") == TOKEN or body["message"].startswith("malformed"), body
        orjson.dumps(body)

    check()
