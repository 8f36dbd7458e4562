"""shadow-sync end to end: real mosquitto, real Redis, the daemon as its own process."""

from __future__ import annotations

import msgpack
import pytest

from daemons.registry import device_key


@pytest.fixture
def shadow(daemon, probe, prefixes):
    daemon("shadowsync")
    p, _ = prefixes
    return probe(f"{p}/#")


def test_update_get_delete_json(shadow, prefixes, redis):
    p, _ = prefixes
    s = f"{p}/dev-1/shadow"
    r = shadow.request(f"{s}/update", {"state": {"desired": {"led": "on", "cfg": {"rate": 5}}},
                                       "clientToken": "t1"})
    assert r.topic == f"{s}/update/accepted"
    assert r.body["version"] == 1 and r.body["clientToken"] == "t1"
    assert r.body["state"] == {"desired": {"led": "on", "cfg": {"rate": 5}}}
    assert r.body["metadata"]["desired"]["cfg"]["rate"]["timestamp"] == r.body["timestamp"]
    delta = shadow.wait(f"{s}/update/delta")
    assert delta.body["state"] == {"led": "on", "cfg": {"rate": 5}} and delta.body["version"] == 1
    docs = shadow.wait(f"{s}/update/documents")
    assert "previous" not in docs.body and docs.body["current"]["version"] == 1

    r = shadow.request(f"{s}/update", {"state": {"reported": {"led": "on", "cfg": {"rate": 5}}}})
    assert r.body["version"] == 2
    docs = shadow.wait(f"{s}/update/documents", lambda m: m.body["current"]["version"] == 2)
    assert docs.body["previous"]["version"] == 1
    g = shadow.request(f"{s}/get", {"clientToken": "g"})
    assert g.topic == f"{s}/get/accepted"
    assert g.body["state"]["reported"] == {"led": "on", "cfg": {"rate": 5}}
    assert "delta" not in g.body["state"], "an empty delta is omitted"
    assert g.body["version"] == 2 and g.body["clientToken"] == "g"
    assert isinstance(g.body["last_seen_at"], int) and g.body["connected"] is False

    d = shadow.request(f"{s}/delete", raw=b"")
    assert d.topic == f"{s}/delete/accepted" and d.body["version"] == 2
    assert shadow.request(f"{s}/get", raw=b"").body["code"] == 404
    assert not redis.hexists(device_key("fleet", "dev-1"), "sh:")
    # The version continues after a delete (AWS IoT behaviour).
    assert shadow.request(f"{s}/update", {"state": {"reported": {"x": 1}}}).body["version"] == 3


def test_msgpack_requests_get_msgpack_replies(shadow, prefixes):
    p, _ = prefixes
    s = f"{p}/mp-1/shadow"
    r = shadow.request(f"{s}/update", {"state": {"reported": {"v": 1}}, "clientToken": "m"}, "msgpack")
    assert r.payload[0] in range(0x80, 0x90) or r.payload[0] in (0xDE, 0xDF)
    assert msgpack.unpackb(r.payload)["version"] == 1
    # A delta the daemon starts goes in the encoding the device last used: MessagePack here.
    shadow.request(f"{s}/update", {"state": {"desired": {"v": 2}}})
    delta = shadow.wait(f"{s}/update/delta")
    assert msgpack.unpackb(delta.payload)["state"] == {"v": 2}
    g = shadow.request(f"{s}/get", {}, "msgpack")
    assert msgpack.unpackb(g.payload)["state"]["delta"] == {"v": 2}


def test_version_conflict_is_409_and_stores_nothing(shadow, prefixes):
    p, _ = prefixes
    s = f"{p}/v-1/shadow"
    shadow.request(f"{s}/update", {"state": {"reported": {"a": 1}}})
    r = shadow.request(f"{s}/update", {"state": {"reported": {"a": 2}}, "version": 5, "clientToken": "c"})
    assert r.topic == f"{s}/update/rejected"
    assert r.body["code"] == 409 and r.body["clientToken"] == "c"
    ok = shadow.request(f"{s}/update", {"state": {"reported": {"a": 3}}, "version": 1})
    assert ok.body["version"] == 2
    assert shadow.request(f"{s}/get").body["state"]["reported"] == {"a": 3}


def test_stale_seq_is_409_and_stores_nothing(shadow, prefixes):
    p, _ = prefixes
    s = f"{p}/seq-1/shadow"
    assert shadow.request(f"{s}/update", {"state": {"reported": {"n": 1}}, "seq": 10}).body["version"] == 1
    r = shadow.request(f"{s}/update", {"state": {"reported": {"n": 2}}, "seq": 10})
    assert r.body["code"] == 409 and "stale" in r.body["message"]
    r = shadow.request(f"{s}/update", {"state": {"reported": {"n": 2}}, "seq": 9})
    assert r.body["code"] == 409
    # seq is per device: a named shadow shares it.
    r = shadow.request(f"{p}/seq-1/shadow/name/cfg/update", {"state": {"reported": {"n": 2}}, "seq": 3})
    assert r.body["code"] == 409
    assert shadow.request(f"{s}/update", {"state": {"reported": {"n": 3}}, "seq": 11}).body["version"] == 2
    assert shadow.request(f"{s}/get").body["state"]["reported"] == {"n": 3}


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b'{"state": {"reported": ', 400),  # malformed JSON
        (b"\x81\xa5state\xc1", 400),  # malformed MessagePack
        (b"[1, 2]", 415),  # not an object
        (b"hello", 415),
        (b'{"state": {"reported": {"a": 1}}, "version": "7"}', 400),
        (b'{"state": {"reported": {"a": 1}}, "seq": true}', 400),
        (b'{"state": {"reported": [1]}}', 400),
        (b'{"state": "on"}', 400),
        (b'{"state": {"reported": {"a": 1}}, "clientToken": 5}', 400),
        (b'{"state": {"reported": {"a": {"b": {"c": {"d": {"e": {"f": {"g": 1}}}}}}}}}', 400),
        (b'{"state": {"reported": {"' + b"k" * 65 + b'": 1}}}', 400),
        (b'{"state": {"reported": {"blob": "' + b"x" * 9000 + b'"}}}', 413),
        (b'{"state": {"reported": {"blob": "' + b"x" * 70000 + b'"}}}', 413),
    ],
)
def test_bad_updates_rejected_and_nothing_stored(shadow, prefixes, redis, raw, code):
    p, _ = prefixes
    s = f"{p}/bad-1/shadow"
    r = shadow.request(f"{s}/update", raw=raw)
    assert r.topic == f"{s}/update/rejected"
    assert r.body["code"] == code, r.body
    assert isinstance(r.body["message"], str) and isinstance(r.body["timestamp"], int)
    assert not redis.hexists(device_key("fleet", "bad-1"), "sh:")


def test_bad_device_ids_and_names_are_dropped_and_daemon_survives(shadow, prefixes, redis):
    p, _ = prefixes
    shadow.publish(f"{p}/bad$id/shadow/update", {"state": {"reported": {"a": 1}}})
    shadow.publish(f"{p}/{'x' * 70}/shadow/update", {"state": {"reported": {"a": 1}}})
    r = shadow.request(f"{p}/okdev/shadow/name/bad.name/update", {"state": {"reported": {"a": 1}}})
    assert r.body["code"] == 400
    # Still serving, and nothing stored for the bad ids.
    assert shadow.request(f"{p}/okdev/shadow/update", {"state": {"reported": {"a": 1}}}).body["version"] == 1
    assert set(redis.scan_iter(match="fleet:dev:*")) == {device_key("fleet", "okdev")}  # every master


def test_named_shadows_are_independent(shadow, prefixes):
    p, _ = prefixes
    a = shadow.request(f"{p}/n-1/shadow/name/config/update", {"state": {"desired": {"x": 1}}})
    assert a.topic == f"{p}/n-1/shadow/name/config/update/accepted" and a.body["version"] == 1
    assert shadow.wait(f"{p}/n-1/shadow/name/config/update/delta").body["state"] == {"x": 1}
    assert shadow.request(f"{p}/n-1/shadow/get").body["code"] == 404
    assert shadow.request(f"{p}/n-1/shadow/name/config/get").body["state"]["desired"] == {"x": 1}


def test_delta_on_every_update_that_carries_desired(shadow, prefixes):
    p, _ = prefixes
    s = f"{p}/d-1/shadow"
    shadow.request(f"{s}/update", {"state": {"desired": {"a": 1}}})
    shadow.wait(f"{s}/update/delta")
    shadow.request(f"{s}/update", {"state": {"reported": {"b": 1}}})  # no desired: no delta
    # The same desired again (the device drifted): the delta goes out again (PROTOCOL §1).
    shadow.request(f"{s}/update", {"state": {"desired": {"a": 1}}})
    delta = shadow.wait(f"{s}/update/delta")
    assert delta.body["state"] == {"a": 1} and delta.body["version"] == 3
    shadow.request(f"{s}/update", {"state": {"desired": {"c": 2}}})
    delta = shadow.wait(f"{s}/update/delta")
    assert delta.body["state"] == {"a": 1, "c": 2} and delta.body["version"] == 4
    shadow.request(f"{s}/update", {"state": {"reported": {"a": 1, "c": 2}}})
    shadow.request(f"{s}/update", {"state": {"desired": {"c": 2}}})  # desired = reported: empty delta
    assert not [m for m in shadow.drain() if m.topic == f"{s}/update/delta"]


def test_offline_device_gets_delta_on_reconnect(daemon, probe, prefixes):
    p, _ = prefixes
    daemon("shadowsync")
    s = f"{p}/car-7/shadow"
    operator = probe(f"{p}/+/shadow/update/accepted")
    # The device subscribes with a persistent session, then goes away.
    device = probe(f"{s}/update/delta", f"{s}/get/accepted", client_id="car-7", clean=False)
    device.publish(f"{p}/car-7/status", {"online": True, "fw": "1.0.0", "ts": 1}, retain=True)
    device.close()
    operator.request(f"{s}/update", {"state": {"desired": {"mode": "eco"}}})
    # Back online: the queued delta arrives, and the reconnect delta is published too.
    back = probe(client_id="car-7", clean=False)
    assert back.wait(f"{s}/update/delta").body["state"] == {"mode": "eco"}
    back.subscribe(f"{s}/update/delta", f"{s}/get/accepted")
    back.publish(f"{p}/car-7/status", {"online": True, "fw": "1.0.0", "ts": 2}, retain=True)
    assert back.wait(f"{s}/update/delta").body["state"] == {"mode": "eco"}
    back.publish(f"{s}/get", {})
    g = back.wait(f"{s}/get/accepted")
    assert g.body["state"]["delta"] == {"mode": "eco"} and g.body["connected"] is True


def test_status_and_heartbeat_set_presence(shadow, prefixes):
    p, _ = prefixes
    shadow.request(f"{p}/pr-1/shadow/update", {"state": {"desired": {"a": 1}}})
    shadow.publish(f"{p}/pr-1/status", {"online": True, "fw": "2.0", "ts": 5}, retain=True)
    # Going online with a non-empty delta publishes it (extension: delta on reconnect).
    shadow.wait(f"{p}/pr-1/shadow/update/delta", lambda m: m.body["version"] == 1)
    shadow.wait(f"{p}/pr-1/shadow/update/delta", lambda m: m.body["version"] == 1)
    assert shadow.request(f"{p}/pr-1/shadow/get").body["connected"] is True
    shadow.publish(f"{p}/pr-1/status", {"online": False}, retain=True)
    shadow.publish(f"{p}/pr-1/heartbeat", {"ts": 9, "seq": 1, "uptime_s": 3, "fw": "2.0", "slot": 0,
                                           "hw": "esp32c3"})
    g = shadow.request(f"{p}/pr-1/shadow/get")
    assert g.body["connected"] is False and g.body["last_seen_at"] > 0
