"""Capacity figures for large fleets, without simulating every connection.

1. Redis memory per device: N devices (default 100,000) each with a status, a classic shadow
   (desired + reported, ten realistic fields), a named shadow and three heartbeats, all through the
   real daemons (shadow-sync, healthwatch, ota-planner); `used_memory` grows by this much per device.
2. A 100,000-device fleet's heartbeat rate (1,667/s at 60 s) offered to healthwatch for a window:
   healthwatch's CPU as a share of one core, and what is left.
3. The embedded amqtt broker: heartbeats offered at rising rates through it (one publisher, one
   subscriber, QoS 1, MQTT 3.1.1); the highest rate at which every message arrives with p99 latency
   under 1 s, said as devices at a 60 s heartbeat. Baseline: mosquitto with the same load.

`FLEET_BENCH_SHADOWS` (default 100,000), `FLEET_BENCH_HB_RATE` (default 1667), `FLEET_BENCH_WINDOW_S`
(default 60).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import psutil
import redis as redis_lib

from daemons.runtime.mqtt import make_client
from tests.support import Daemon, env_for, free_port, start_amqtt, start_mosquitto, start_redis

CTX = mp.get_context("fork")
SHADOWS = int(os.environ.get("FLEET_BENCH_SHADOWS", "100000"))
HB_RATE = float(os.environ.get("FLEET_BENCH_HB_RATE", "1667"))
WINDOW_S = float(os.environ.get("FLEET_BENCH_WINDOW_S", "60"))
PUBLISHERS = 2
T0 = 1_700_000_000


def _client(url: str, account: tuple[str, str] | None = None) -> paho.Client:
    user, password = account if account is not None else (None, None)
    c, addr = make_client(url, protocol="3.1.1", username=user, password=password, max_inflight=200)
    c.connect(addr.host, addr.port, keepalive=60)
    return c


def _heartbeat(d: int, k: int) -> dict[str, Any]:
    return {"ts": T0 + 60 * k, "seq": k + 1, "uptime_s": 600 + 60 * k, "fw": "1.4.2", "slot": "ota_0",
            "hw": ("esp32-c3", "esp32-s3")[d % 2], "battery_pct": round(90 - 0.01 * k, 1),
            "battery_mv": 4000,
            "rssi_dbm": -60 - d % 20, "temp_c": round(35 + (d * k) % 5 * 0.1, 1),
            "heap_free": 150_000 + (d * 37 + k * 11) % 2000, "heap_min_free": 140_000,
            "reset_reason": "poweron"}


def _populate(url: str, devices: range) -> None:
    """Everything a device leaves in Redis: presence, shadows, registry entry, health state."""
    c = _client(url)
    c.loop_start()
    info = None
    for d in devices:
        base = f"fleet/sim-{d:06d}"
        c.publish(f"{base}/status", json.dumps({"online": True, "fw": "1.4.2", "ts": T0}), qos=1, retain=True)
        reported = {"fw": "1.4.2", "hw": "esp32-c3", "sample_rate_s": 60, "led": "off", "mode": "auto",
                    "threshold_c": 42.5, "wifi": {"ssid": "plant-3", "channel": 6}, "tz": "Europe/Paris",
                    "relay": False, "debug": {"enabled": False}}
        c.publish(f"{base}/shadow/update", json.dumps({"state": {"reported": reported}, "seq": 1}), qos=1)
        c.publish(f"{base}/shadow/update", json.dumps({"state": {"desired": {"sample_rate_s": 30}}}), qos=1)
        c.publish(f"{base}/shadow/name/config/update",
                  json.dumps({"state": {"reported": {"interval_s": 60, "unit": "C"}}, "seq": 2}), qos=1)
        for k in range(3):
            info = c.publish(f"{base}/heartbeat", json.dumps(_heartbeat(d, k)), qos=1)
        if d % 2000 == 0:  # paho's message ids wrap at 65,535: keep fewer than that outstanding
            info.wait_for_publish(300)
    if info is not None:
        info.wait_for_publish(300)
    c.loop_stop()


def _offer_heartbeats(url: str, devices: int, first: int, rate: float, seconds: float) -> None:
    c = _client(url)
    c.loop_start()
    start = time.perf_counter()
    n = int(rate * seconds)
    info = None
    for i in range(n):
        due = start + i / rate
        while time.perf_counter() < due:
            time.sleep(max(0.0, min(0.002, due - time.perf_counter())))
        d, k = first + i % devices, 10 + i // devices
        info = c.publish(f"fleet/sim-{d:06d}/heartbeat", json.dumps(_heartbeat(d, k)), qos=1)
    if info is not None:
        info.wait_for_publish(120)
    c.loop_stop()


def redis_memory(url: str, redis: Any, broker: Any, work: Path) -> tuple[float, int]:
    """Bytes of Redis memory per device, and the keys per device."""
    r = redis_lib.Redis.from_url(redis.url)
    before = int(r.info("memory")["used_memory"])
    share = SHADOWS // PUBLISHERS
    procs = [CTX.Process(target=_populate, args=(url, range(i * share, (i + 1) * share)))
             for i in range(PUBLISHERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    last, stable = -1, 0
    while stable < 5:  # the daemons have written everything: memory stops growing (within 0.1 %:
        time.sleep(1)   # healthwatch and the metrics readers keep a little churn going)
        now = int(r.info("memory")["used_memory"])
        stable = stable + 1 if abs(now - last) <= 0.001 * now else 0
        last = now
    return (last - before) / SHADOWS, int(r.dbsize())


def healthwatch_cpu(url: str, hw_pid: int) -> dict[str, float]:
    share = SHADOWS // PUBLISHERS
    procs = [CTX.Process(target=_offer_heartbeats, args=(url, share, i * share, HB_RATE / PUBLISHERS,
                                                         WINDOW_S + 5)) for i in range(PUBLISHERS)]
    for p in procs:
        p.start()
    proc = psutil.Process(hw_pid)
    time.sleep(3)
    a = sum(proc.cpu_times()[:2])
    time.sleep(WINDOW_S)
    b = sum(proc.cpu_times()[:2])
    for p in procs:
        p.join()
    return {"cpu_pct": 100.0 * (b - a) / WINDOW_S}


def _latency(url: str, rate: float, account: tuple[str, str] | None, seconds: float = 10.0
             ) -> dict[str, float]:
    got: list[float] = []
    sub = _client(url, account)
    sub.on_message = lambda _c, _u, m: got.append(time.time() - float(json.loads(m.payload)["sent"]))
    sub.subscribe("fleetops/lat/#", qos=1)  # the operator account's own subtree (the amqtt ACL)
    sub.loop_start()
    time.sleep(0.5)
    pub = _client(url, account)
    pub.loop_start()
    n = int(rate * seconds)
    start = time.perf_counter()
    for i in range(n):
        due = start + i / rate
        while time.perf_counter() < due:
            time.sleep(max(0.0, min(0.002, due - time.perf_counter())))
        body = json.dumps({"sent": time.time(), **_heartbeat(i, 1)})
        pub.publish(f"fleetops/lat/d{i % 1000}/heartbeat", body, qos=1)
    deadline = time.monotonic() + 30
    while len(got) < n and time.monotonic() < deadline:
        time.sleep(0.1)
    pub.loop_stop()
    sub.loop_stop()
    lat = sorted(got) or [float("inf")]
    return {"rate": rate, "delivered": len(got) / n, "p50_ms": 1000 * statistics.median(lat),
            "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))]}


def broker_capacity(start: Any, work: Path) -> list[dict[str, float]]:
    rows = []
    for rate in (250.0, 500.0, 1000.0, 2000.0, 4000.0):
        broker = start(work / f"cap-{start.__name__}-{int(rate)}")
        accounts = getattr(broker, "accounts", None)  # the embedded broker authenticates
        try:
            row = _latency(broker.url, rate, ("operator", accounts["operator"]) if accounts else None)
        finally:
            broker.stop()
        rows.append(row)
        if row["delivered"] < 1.0 or row["p99_ms"] > 1000:
            break
    return rows


def main() -> str:
    work = Path(tempfile.mkdtemp(prefix="bench-capacity-"))
    redis, broker = start_redis(work / "redis"), start_mosquitto(work / "mqtt")
    extra = {"FLEET_OTA_MASTER_KEY": "ab" * 32, "FLEET_ARTIFACT_STORE": f"local:{work / 'artifacts'}",
             "FLEET_ARTIFACT_HTTP_PORT": str(free_port()), "FLEET_METRICS_PORT": "0"}
    daemons = [Daemon(n, env_for(redis, broker, "fleet", "fleetops", FLEET_MQTT_CLIENT_ID=f"cap-{n}",
                                 **extra)) for n in ("shadowsync", "healthwatch", "otaplanner")]
    try:
        for d in daemons:
            d.start()
        per_device, keys = redis_memory(broker.url, redis, broker, work)
        assert daemons[1].process is not None
        hw = healthwatch_cpu(broker.url, daemons[1].process.pid)
    finally:
        for d in daemons:
            d.kill()
        broker.stop()
        redis.stop()
    amqtt = broker_capacity(start_amqtt, work)
    mosq = broker_capacity(start_mosquitto, work)

    def carried(rows: list[dict[str, float]]) -> float:
        ok = [r["rate"] for r in rows if r["delivered"] >= 1.0 and r["p99_ms"] <= 1000]
        return max(ok) if ok else 0.0

    lines = [
        "| measure | result | target |",
        "|---|---:|---:|",
        f"| Redis memory per device ({SHADOWS:,} devices: status, shadow, named shadow, registry, health) | "
        f"{per_device / 1024:.2f} KiB ({keys / SHADOWS:.1f} keys per device) | <= 2 KiB |",
        f"| healthwatch at {HB_RATE:,.0f} heartbeats/s ({HB_RATE * 60:,.0f} devices at 60 s) | "
        f"{hw['cpu_pct']:.0f} % of one core used, {100 - hw['cpu_pct']:.0f} % to spare | |",
        "",
        "Brokers, heartbeats offered at a fixed rate for 10 s (QoS 1, MQTT 3.1.1, one publisher and one "
        "subscriber; the first rate at which a message is lost or p99 exceeds 1 s ends the series):",
        "",
        "| broker | rate offered /s | delivered | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|",
        *(f"| {name} | {r['rate']:.0f} | {r['delivered']:.1%} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} |"
          for name, rows in (("amqtt", amqtt), ("mosquitto", mosq)) for r in rows),
        "",
        f"The embedded amqtt broker carried {carried(amqtt):,.0f} heartbeats/s on time, that is "
        f"{carried(amqtt) * 60:,.0f} devices at a 60 s heartbeat (mosquitto in the same run: at least "
        f"{carried(mosq):,.0f}/s; ratio {carried(amqtt) / max(carried(mosq), 1):.2f}). Connections are not "
        "counted here: amqtt holds one asyncio task per connection.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(main())
