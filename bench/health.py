"""healthwatch end to end: heartbeats scored per second by one process through mosquitto and Redis.

Publishers run in processes of their own (each owns a slice of the devices, so every device's seq
and ts rise); completion is read from the daemon's own Prometheus counter, because healthwatch only
republishes a device's health when it changes. The bare relay of bench/relay.py is measured on the
same broker in the same run, and the ratio is reported against it.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from daemons.runtime.mqtt import make_client
from tests.support import Daemon, env_for, free_port, start_mosquitto, start_redis

CTX = mp.get_context("fork")
DEVICES = 1000
PUBLISHERS = 2
T0 = 1_700_000_000


def _publish(url: str, devices: range, rounds: int, go: Any) -> None:
    c, addr = make_client(url, max_inflight=1000)
    c.connect(addr.host, addr.port, keepalive=60)
    c.loop_start()
    go.wait()
    info = None
    for k in range(rounds):
        for d in devices:
            body = {"ts": T0 + 60 * k, "seq": k, "uptime_s": 600 + 60 * k, "fw": "1.4.2", "slot": "ota_0",
                    "hw": "esp32-s3", "battery_pct": round(90 - 0.0075 * k + (d % 7) * 0.1, 1),
                    "battery_mv": 4000, "rssi_dbm": -60 - d % 20, "temp_c": round(35 + (d * k) % 5 * 0.1, 1),
                    "heap_free": 150_000 + (d * 37 + k * 11) % 2000, "heap_min_free": 140_000,
                    "reset_reason": "poweron"}
            info = c.publish(f"bench/hb{d:05d}/heartbeat", json.dumps(body, separators=(",", ":")), qos=1)
    if info is not None:
        info.wait_for_publish(60)
    time.sleep(0.5)
    c.loop_stop()


def _scored(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith('fleet_messages_total{daemon="healthwatch",kind="heartbeat"'):
            total += float(line.split()[-1])
    return total


def measure_health(broker_url: str, redis: Any, broker: Any, messages: int) -> dict[str, float]:
    port = free_port()
    daemon = Daemon("healthwatch", env_for(redis, broker, "bench", "benchops", FLEET_METRICS_PORT=str(port),
                                           FLEET_MQTT_CLIENT_ID="bench-healthwatch")).start()
    try:
        rounds = max(1, messages // DEVICES)
        total = rounds * DEVICES
        go = CTX.Event()
        share = DEVICES // PUBLISHERS
        slices = [range(i * share, (i + 1) * share) for i in range(PUBLISHERS)]
        procs = [CTX.Process(target=_publish, args=(broker_url, s, rounds, go)) for s in slices]
        for p in procs:
            p.start()
        time.sleep(0.5)
        start = time.perf_counter()
        go.set()
        done = 0.0
        deadline = time.monotonic() + 300
        while done < total and time.monotonic() < deadline:
            time.sleep(0.05)
            done = _scored(port)
        elapsed = time.perf_counter() - start
        for p in procs:
            p.join(30)
        return {"count": done, "rate": done / elapsed, "seconds": elapsed}
    finally:
        daemon.terminate()


def main(messages: int = 30000) -> str:
    work = Path(tempfile.mkdtemp(prefix="bench-health-"))
    redis, broker = start_redis(work / "redis"), start_mosquitto(work / "mqtt")
    try:
        from bench.relay import measure_relay  # lazily: the baseline lives with the foundation bench

        relay = measure_relay(broker.url, messages)
        health = measure_health(broker.url, redis, broker, messages)
    finally:
        broker.stop()
        redis.stop()
    lines = [
        "| run | heartbeats | msg/s | vs bare relay |",
        "|---|---:|---:|---:|",
        f"| bare relay, full speed | {messages} | {relay:.0f} | 100% |",
        f"| healthwatch, scored end to end | {health['count']:.0f} | {health['rate']:.0f} "
        f"| {health['rate'] / relay:.0%} |",
        "",
        f"Target: healthwatch >= 70 % of the bare relay. {DEVICES} devices, {PUBLISHERS} publishers, "
        "QoS 1; one healthwatch process with one Redis pipeline read and one write per batch. Health is "
        "republished only when it changes, so the relay (one publish per message) does more MQTT work.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(main())
