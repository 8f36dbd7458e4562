"""healthwatch end to end: real mosquitto, real Redis, the daemon as its own process."""

from __future__ import annotations

import json
import time
import urllib.request

from tests.support import free_port

T0 = 1_700_000_000


def beat(i: int, uptime: int, **extra: object) -> dict[str, object]:
    return {"ts": T0 + 60 * i, "seq": i, "uptime_s": uptime, "fw": "1.0.0", "slot": "ota_0", "hw": "esp32",
            "temp_c": 31.5, "rssi_dbm": -60, "heap_free": 150_000, **extra}


def test_health_retained_and_alert_on_reboot_loop(daemon, probe, prefixes):
    p, o = prefixes
    daemon("healthwatch")
    dev = probe(f"{p}/+/health", f"{o}/health/alerts")
    dev.publish(f"{p}/loop-1/heartbeat", beat(0, 5000))
    h = dev.wait(f"{p}/loop-1/health")
    assert h.body["status"] == "ok" and h.body["score"] == 100 and h.body["reasons"] == []
    assert h.body["ts"] == T0
    for i in range(1, 6):  # five reboots in five minutes
        dev.publish(f"{p}/loop-1/heartbeat", beat(i, 10, reset_reason="panic"))
    alert = dev.wait(f"{o}/health/alerts").body
    assert alert["device_id"] == "loop-1" and alert["status"] == "critical" and alert["previous"] == "ok"
    assert alert["reasons"][0]["code"] == "reboot_loop" and "panic" in alert["reasons"][0]["detail"]
    # Each panic reboot is a bad heartbeat (crash_reboot); the third one in a row raises the alarm.
    assert alert["ts"] == T0 + 60 * 3, "3 bad heartbeats before the alarm (hysteresis)"
    retained = probe(f"{p}/loop-1/health").wait(f"{p}/loop-1/health", lambda m: m.retain)
    assert retained.body["status"] == "critical" and retained.body["score"] < 40


def test_bad_fields_are_dropped_one_by_one_and_bad_messages_counted(daemon, probe, prefixes, redis):
    p, _ = prefixes
    port = free_port()
    daemon("healthwatch", FLEET_METRICS_PORT=str(port))
    dev = probe(f"{p}/+/health")
    dev.publish(f"{p}/bad$id/heartbeat", beat(0, 100))
    dev.publish(f"{p}/list-1/heartbeat", raw=b"[1, 2, 3]")
    dev.publish(f"{p}/junk-1/heartbeat", raw=b"\x00\x01garbage")
    dev.publish(f"{p}/f-1/heartbeat", beat(0, 100, temp_c="hot", seq="x", custom={"k": 1}))
    h = dev.wait(f"{p}/f-1/health")
    assert h.body["status"] == "ok"
    st = json.loads(redis.hget("fleet:health:{f-1}", "st"))
    assert st[0][0] == 1 and st[0][3] == 100, "the heartbeat was scored: one heartbeat, its uptime kept"
    assert redis.hget("fleet:health:{f-1}", "status") == "ok"
    assert not redis.exists("fleet:health:{list-1}") and not redis.exists("fleet:health:{junk-1}")
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()

    def count(kind: str, result: str) -> float:
        needle = f'fleet_messages_total{{daemon="healthwatch",kind="{kind}",result="{result}"}} '
        line = next((x for x in metrics.splitlines() if x.startswith(needle)), needle + "0")
        return float(line.split()[-1])

    assert count("heartbeat", "bad_id") == 1
    assert count("heartbeat", "malformed") == 2
    assert count("heartbeat", "partial") == 1
    assert count("heartbeat_field", "bad_temp_c") == 1 and count("heartbeat_field", "bad_seq") == 1
    assert "device_id" not in metrics and "f-1" not in metrics


def test_offline_by_timer_without_traffic_and_summary(daemon, probe, prefixes):
    p, o = prefixes
    daemon("healthwatch", FLEET_HEARTBEAT_INTERVAL_S="1")
    dev = probe(f"{p}/+/health", f"{o}/health/alerts", f"{o}/health/summary")
    started = time.monotonic()
    dev.publish(f"{p}/quiet-1/heartbeat", beat(0, 100))
    assert dev.wait(f"{p}/quiet-1/health").body["status"] == "ok"
    alert = dev.wait(f"{o}/health/alerts", timeout=15).body
    assert alert["status"] == "offline" and alert["previous"] == "ok" and alert["device_id"] == "quiet-1"
    assert 2.5 <= time.monotonic() - started <= 10
    h = dev.wait(f"{p}/quiet-1/health", lambda m: m.body["status"] == "offline").body
    assert h["reasons"][0]["code"] == "missed_heartbeats" and h["score"] == 0
    summary = dev.wait(f"{o}/health/summary", lambda m: m.body["counts"]["offline"] == 1, timeout=20).body
    assert summary["devices"] == 1 and summary["worst"][0]["device_id"] == "quiet-1"
    # It comes back: recovered at once.
    dev.publish(f"{p}/quiet-1/heartbeat", beat(1, 160))
    back = dev.wait(f"{o}/health/alerts", lambda m: m.body["previous"] == "offline").body
    assert back["status"] == "ok"


def test_restart_keeps_per_device_state(daemon, probe, prefixes):
    p, o = prefixes
    client_id = f"healthwatch-{p}"  # the same persistent session across the restart
    first = daemon("healthwatch", FLEET_MQTT_CLIENT_ID=client_id)
    dev = probe(f"{p}/+/health", f"{o}/health/alerts")
    dev.publish(f"{p}/r-1/heartbeat", beat(0, 5000))
    for i in range(1, 4):  # three reboots: the loop is seen, one bad heartbeat so far
        dev.publish(f"{p}/r-1/heartbeat", beat(i, 10))
    dev.wait(f"{p}/r-1/health", lambda m: m.body["score"] < 100)
    assert first.terminate() == 0
    daemon("healthwatch", FLEET_MQTT_CLIENT_ID=client_id)
    for i in range(4, 6):  # two more: only counted as a loop if the first three were kept
        dev.publish(f"{p}/r-1/heartbeat", beat(i, 10))
    alert = dev.wait(f"{o}/health/alerts").body
    assert alert["status"] == "critical" and alert["reasons"][0]["code"] == "reboot_loop"


def test_out_of_order_and_redelivered_heartbeats_raise_no_alarm(daemon, probe, prefixes, redis):
    # Issue 11: QoS 1 redelivery after a reconnect delivers 20 heartbeats in this order.
    p, o = prefixes
    daemon("healthwatch")
    dev = probe(f"{p}/+/health", f"{o}/health/alerts")
    for i in [1, 2, 3, 4, 6, 5, 7, 8, 10, 9, 11, 12, 14, 13, *range(15, 21), 20]:
        dev.publish(f"{p}/ooo-1/heartbeat", beat(i, 1000 + 60 * i))
    dev.publish(f"{p}/marker-1/heartbeat", beat(0, 100))  # in order after the others
    dev.wait(f"{p}/marker-1/health")
    seen = dev.drain(quiet=0.2)
    assert not [m for m in seen if m.topic == f"{o}/health/alerts"], "no alert"
    assert all(m.body["status"] == "ok" and m.body["reasons"] == [] for m in seen
               if m.topic == f"{p}/ooo-1/health")
    assert redis.hmget("fleet:health:{ooo-1}", "status", "score") == ["ok", "100"]


def test_hostile_heartbeats_are_dropped_and_counted_or_judged_field_by_field(daemon, probe, prefixes, redis):
    import msgpack

    p, _ = prefixes
    port = free_port()
    daemon("healthwatch", FLEET_METRICS_PORT=str(port))
    dev = probe(f"{p}/+/health")
    hostile = [
        b'{"ts":1,"seq":1,"x":' + b"[" * 300 + b"1" + b"]" * 300 + b"}",  # deep arrays
        b"\x81\xa1x" + b"\x81\xa1a" * 600 + b"\x01",  # deep MessagePack maps
        b'{"ts":1,"seq":1,"seq":2}',  # duplicate keys
        b'{"ts":1,"hw":"\xff"}',  # invalid UTF-8
        b'{"ts":1,"seq":1,"temp_c":NaN}',  # not JSON
    ]
    for raw in hostile:
        dev.publish(f"{p}/hx-1/heartbeat", raw=raw)
    # MessagePack may carry NaN and integers past int64: those fields are dropped, the rest scored.
    dev.publish(f"{p}/hx-2/heartbeat", raw=msgpack.packb({**beat(0, 100), "temp_c": float("nan"),
                                                           "heap_free": 2**64 - 1}))
    h = dev.wait(f"{p}/hx-2/health")
    assert h.body["status"] == "ok"
    assert not redis.exists("fleet:health:{hx-1}")
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'kind="heartbeat",result="malformed"} 5.0' in metrics
    assert 'kind="heartbeat_field",result="bad_temp_c"} 1.0' in metrics
    assert 'kind="heartbeat_field",result="bad_heap_free"} 1.0' in metrics
