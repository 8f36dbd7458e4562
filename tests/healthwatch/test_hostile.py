"""Hostile heartbeats (issue 11), property-tested: decoded or dropped, never an exception, and the
state written to Redis always plain JSON (no NaN, no number Redis readers would round)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemons.protocol.codec import CodecError, decode
from healthwatch.device import DeviceState
from healthwatch.engine import HealthEngine
from healthwatch.validate import FIELDS
from tests.shadowsync.hostile import Pairs, deep, scalars, to_json, to_msgpack, values


@st.composite
def heartbeats(draw: Any) -> bytes:
    names = draw(st.lists(st.sampled_from([*FIELDS, "x"]), max_size=8))
    body = Pairs(tuple((n, draw(scalars | values | deep())) for n in names))
    return to_json(body) if draw(st.booleans()) else to_msgpack(body)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(heartbeats(), min_size=1, max_size=4))
def test_hostile_heartbeats_never_break_the_engine(payloads: list[bytes]) -> None:
    engine, st_ = HealthEngine(), DeviceState()
    for i, payload in enumerate(payloads):
        try:
            body, _ = decode(payload, exact_numbers=False)
        except CodecError as exc:
            assert exc.code in (400, 415)
            continue
        engine.score(st_, "d1", body, 1_700_000_000.0 + i)
        text = json.dumps(st_.to_json(), allow_nan=False)
        assert DeviceState.from_json(json.loads(text)).to_json() == json.loads(text)


def test_a_huge_seq_jump_costs_no_memory() -> None:
    """Found by `make fuzz`: the seq window was shifted by the whole jump before being masked."""
    engine, st_ = HealthEngine(), DeviceState()
    engine.score(st_, "d1", {"ts": 1_700_000_000, "seq": 1, "uptime_s": 10}, 1_700_000_000.0)
    engine.score(st_, "d1", {"ts": 1_700_000_060, "seq": 2**62, "uptime_s": 70}, 1_700_000_060.0)
    assert st_.seq == 2**62 and st_.win == 1
