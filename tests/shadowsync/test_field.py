"""Issue 11's field reports against a real shadow-sync: each input as the user sent it, and its kind."""

from __future__ import annotations

import msgpack
import pytest

from daemons.registry import device_key


@pytest.fixture
def shadow(daemon, probe, prefixes):
    daemon("shadowsync")
    p, _ = prefixes
    return probe(f"{p}/#")


def _led(shadow, s):
    assert shadow.request(f"{s}/update", {"state": {"desired": {"led": "blue"}}}).body["version"] == 1
    assert shadow.request(f"{s}/update", {"state": {"reported": {"led": "red"}}}).body["version"] == 2


def test_null_state_is_accepted_and_clears_the_document(shadow, prefixes):
    p, _ = prefixes
    s = f"{p}/aws-1/shadow"
    _led(shadow, s)
    r = shadow.request(f"{s}/update", {"state": None, "clientToken": "t-null"})
    assert r.topic == f"{s}/update/accepted", r.body
    assert r.body["version"] == 3 and r.body["clientToken"] == "t-null" and r.body["state"] is None
    g = shadow.request(f"{s}/get").body
    assert g["state"] == {"desired": {}, "reported": {}} and g["version"] == 3 and g["metadata"] == {}


def test_empty_state_is_accepted_and_changes_only_the_version(shadow, prefixes):
    p, _ = prefixes
    s = f"{p}/aws-2/shadow"
    _led(shadow, s)
    r = shadow.request(f"{s}/update", {"state": {}, "clientToken": "t-empty"})
    assert r.topic == f"{s}/update/accepted" and r.body["version"] == 3
    g = shadow.request(f"{s}/get").body
    assert g["state"]["desired"] == {"led": "blue"} and g["state"]["reported"] == {"led": "red"}
    assert g["state"]["delta"] == {"led": "blue"}


@pytest.mark.parametrize(("body", "code"), [
    ({"clientToken": "x"}, 400),  # AWS: "Missing required node: state"
    ({"state": 5, "clientToken": "x"}, 400),
    ({"state": {"desired": [1]}, "clientToken": "x"}, 400),
    ({"state": {"delta": {}}, "clientToken": "x"}, 400),
    ({"state": {"reported": {"a": 1}}, "version": "1", "clientToken": "x"}, 400),
])
def test_documents_aws_refuses_are_refused_with_the_same_code(shadow, prefixes, body, code):
    p, _ = prefixes
    r = shadow.request(f"{p}/aws-3/shadow/update", body)
    assert r.body["code"] == code and r.body["clientToken"] == "x"


def test_emptied_object_is_kept(shadow, prefixes):
    p, _ = prefixes
    s = f"{p}/aws-4/shadow"
    shadow.request(f"{s}/update", {"state": {"reported": {"a": {"b": 1}}}})
    shadow.request(f"{s}/update", {"state": {"reported": {"a": {"b": None}}}})
    assert shadow.request(f"{s}/get").body["state"]["reported"] == {"a": {}}


HOSTILE = [
    # (payload, what it is); each an update with clientToken "h"
    (b'{"clientToken":"h","state":{"reported":{"a":' + b"[" * 300 + b"1" + b"]" * 300 + b"}}}", "300 arrays"),
    (b'{"clientToken":"h","state":{"reported":' + b'{"a":' * 600 + b"1" + b"}" * 600 + b"}}", "600 objects"),
    (b"\x82\xabclientToken\xa1h\xa5state" + b"\x81\xa1a" * 600 + b"\x01", "600 msgpack maps"),
    (b'{"clientToken":"h","state":{"reported":{"a":[{"b":[{"c":[{"d":1}]}]}]}}}', "depth 7"),
    (b'{"clientToken":"h","state":{"reported":{"n":18446744073709551616}}}', "int past u64 (orjson rounds)"),
    (b'{"clientToken":"h","state":{"reported":{"n":9223372036854775808}}}', "int64 max + 1"),
    (msgpack.packb({"clientToken": "h", "state": {"reported": {"t": float("nan")}}}), "NaN"),
    (msgpack.packb({"clientToken": "h", "state": {"reported": {"t": float("inf")}}}), "Infinity"),
    (b'{"clientToken":"h","state":{"reported":{"a":1,"a":2}}}', "duplicate keys"),
    (b'{"clientToken":"h","state":{"reported":{"s":"\xc3\x28"}}}', "invalid UTF-8"),
    (msgpack.packb({"clientToken": "h", "state": {"reported": {"b": b"\x00"}}}, use_bin_type=True), "bin"),
]


def test_hostile_payloads_get_a_rejected_answer_with_their_token(shadow, prefixes, redis):
    p, _ = prefixes
    s = f"{p}/hx-1/shadow"
    shadow.request(f"{s}/update", {"state": {"reported": {"ok": 1}}})
    stored = redis.hget(device_key("fleet", "hx-1"), "sh:")
    for payload, what in HOSTILE:
        r = shadow.request(f"{s}/update", raw=payload)
        assert r.topic == f"{s}/update/rejected", what
        assert r.body["code"] == 400 and r.body["clientToken"] == "h", (what, r.body)
    big = {"clientToken": "h", "state": {"reported": {"s": "x" * 60_000}}}
    r = shadow.request(f"{s}/update", big)
    assert r.body["code"] == 413 and r.body["clientToken"] == "h"
    huge = {"clientToken": "h", "state": {"reported": {"s": "x" * 100_000}}}  # past the payload limit
    r = shadow.request(f"{s}/update", huge, "msgpack")
    assert r.body["code"] == 413 and r.body["clientToken"] == "h" and r.payload[0] >= 0x80
    assert redis.hget(device_key("fleet", "hx-1"), "sh:") == stored, "nothing partial stored"
    assert shadow.request(f"{s}/get").body["version"] == 1


def test_hostile_bulk_requests_are_answered(shadow, probe, prefixes):
    _, o = prefixes
    shadow = probe(f"{o}/shadow/bulk/+")
    deep = b'{"clientToken":"b","selector":{},"state":{"desired":' + b'{"a":' * 600 + b"1" + b"}" * 601 + b"}"
    r = shadow.request(f"{o}/shadow/bulk", raw=deep)
    assert r.topic == f"{o}/shadow/bulk/rejected" and r.body["code"] == 400 and r.body["clientToken"] == "b"
    r = shadow.request(f"{o}/shadow/bulk", raw=b'{"clientToken":"b","selector":{"hw":"x","hw":"y"}}')
    assert r.body["code"] == 400 and r.body["clientToken"] == "b"


def test_operator_reads_are_not_device_activity(shadow, prefixes, redis):
    p, _ = prefixes
    s = f"{p}/quiet-1/shadow"
    key = device_key("fleet", "quiet-1")
    r = shadow.request(f"{s}/update", {"state": {"reported": {"led": "red"}}}, "msgpack")
    assert r.topic == f"{s}/update/accepted"
    redis.hset(key, "last_seen_at", "1000")  # the report was long ago
    for _ in range(2):
        g = shadow.request(f"{s}/get", {"clientToken": "op"})
        assert g.body["last_seen_at"] == 1000
    shadow.request(f"{s}/update", {"state": {"desired": {"led": "blue"}}})
    delta = shadow.wait(f"{s}/update/delta")
    assert delta.payload[0] in range(0x80, 0x90), "the delta goes in the device's encoding"
    assert msgpack.unpackb(delta.payload)["state"] == {"led": "blue"}
    assert redis.hget(key, "last_seen_at") == "1000" and redis.hget(key, "enc") == "msgpack"


def test_get_before_the_device_ever_spoke(shadow, prefixes):
    p, _ = prefixes
    s = f"{p}/never-1/shadow"
    shadow.request(f"{s}/update", {"state": {"desired": {"a": 1}}})
    g = shadow.request(f"{s}/get").body
    assert g["last_seen_at"] is None and g["connected"] is False


def test_the_last_will_is_not_device_activity(shadow, prefixes, redis):
    p, _ = prefixes
    key = device_key("fleet", "will-1")
    shadow.publish(f"{p}/will-1/status", {"online": True, "fw": "1.0", "ts": 7}, "msgpack", retain=True)
    shadow.request(f"{p}/will-1/shadow/update", {"state": {"reported": {"a": 1}}}, "msgpack")
    redis.hset(key, "last_seen_at", "1000")
    shadow.publish(f"{p}/will-1/status", {"online": False}, retain=True)  # the broker, in JSON
    g = shadow.request(f"{p}/will-1/shadow/get").body
    assert g["connected"] is False and g["last_seen_at"] == 1000
    assert redis.hget(key, "enc") == "msgpack"
