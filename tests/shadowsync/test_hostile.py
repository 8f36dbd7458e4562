"""Property tests (hypothesis): a hostile update always gets an answer, never a 500, and nothing
partial is stored. The door and the document rules as fast pure tests, then a real shadow-sync."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemons.protocol.codec import CodecError, decode, encode
from daemons.protocol.messages import Inbound
from daemons.registry import device_key
from shadowsync import document as doc
from shadowsync.requests import Read, Refusal, Update, parse
from tests.shadowsync.hostile import TOKEN, update_payloads, values


def _exact(value: Any) -> bool:
    """Every number a JSON round trip keeps as it is."""
    return orjson.loads(orjson.dumps(value)) == value


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["shadow/update", "shadow/get", "shadow/delete", "shadow/name/n1/update"]),
       update_payloads())
def test_the_door_answers_every_request(operation: str, payload: bytes) -> None:
    request = parse(Inbound(f"p/dev/{operation}", payload), "p", "o")
    assert isinstance(request, Update | Read | Refusal)
    if isinstance(request, Read):
        assert request.reply.token == TOKEN
        return
    if isinstance(request, Refusal):
        assert request.reply is not None and request.reply.topic == f"p/dev/{operation}"
        assert request.error.code in (400, 413), request
        # The token is known unless the payload could not be read as far as it.
        assert request.reply.token == TOKEN or request.error.message.startswith("malformed"), request
        return
    assert request.reply.token == TOKEN
    try:
        new = doc.apply_update(doc.empty_document(), request.state, 1)
    except doc.ShadowError as exc:
        assert exc.code == 413
        return
    assert _exact(new), "the stored document is what was sent"
    assert decode(encode(new, "msgpack"))[0] == new


@settings(max_examples=400, deadline=None)
@given(values)
def test_decode_refuses_or_keeps_exactly(value: Any) -> None:
    from tests.shadowsync.hostile import Pairs, to_json, to_msgpack
    for payload in (to_json(Pairs((("v", value),))), to_msgpack(Pairs((("v", value),)))):
        try:
            decoded, _ = decode(payload)
        except CodecError as exc:
            assert exc.code == 400
            continue
        assert _exact(decoded)
        assert not any(isinstance(x, float) and not math.isfinite(x) for x in _leaves(decoded))


def _leaves(v: Any) -> list[Any]:
    out, stack = [], [v]
    while stack:
        x = stack.pop()
        if isinstance(x, dict):
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)
        else:
            out.append(x)
    return out


@pytest.fixture
def shadow(daemon, probe, prefixes):
    daemon("shadowsync")
    p, _ = prefixes
    return probe(f"{p}/#")


def test_a_real_shadow_sync_answers_every_hostile_update(shadow, prefixes, redis) -> None:
    p, _ = prefixes
    topic = f"{p}/hy-1/shadow/update"
    key = device_key("fleet", "hy-1")
    assert shadow.request(topic, {"state": {"reported": {"base": 1}}}).body["version"] == 1

    @settings(max_examples=40, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(update_payloads())
    def check(payload: bytes) -> None:
        before = redis.hget(key, "sh:")
        version = orjson.loads(before)["version"]
        answer = shadow.request(topic, raw=payload)
        body = answer.body
        if answer.topic.endswith("/rejected"):
            # 409 only for a well-formed update whose `version` is not the stored one (PROTOCOL §1).
            assert body["code"] in (400, 413) or (body["code"] == 409 and b"version" in payload), body
            assert redis.hget(key, "sh:") == before, "nothing partial stored"
        else:
            assert body["version"] == version + 1 and body["clientToken"] == TOKEN
            assert orjson.loads(redis.hget(key, "sh:"))["version"] == version + 1

    check()
