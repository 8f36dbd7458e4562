"""shadow-sync throughput and latency against the bare relay, measured in the same run."""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench.relay import offer, start_relay
from tests.support import Daemon, env_for, start_mosquitto, start_redis

DEVICES = 1000


def main(messages: int = 20000, rate: float = 2000.0, seconds: float = 10.0) -> str:
    work = Path(tempfile.mkdtemp(prefix="bench-shadow-"))
    redis, broker = start_redis(work / "redis"), start_mosquitto(work / "mqtt")
    rows: list[tuple[str, dict[str, float]]] = []
    try:
        relay = start_relay(broker.url)
        relay_topics = [f"bench/in/d{i}" for i in range(DEVICES)]
        rows.append(("bare relay, full speed", offer(broker.url, relay_topics, "bench/out/#", messages)))
        rows.append((f"bare relay, {rate:.0f} msg/s offered",
                     offer(broker.url, relay_topics, "bench/out/#", int(rate * seconds), rate)))
        relay.terminate()

        sync = Daemon("shadowsync", env_for(redis, broker, "bench", "benchops",
                                            FLEET_MQTT_CLIENT_ID="bench-shadowsync")).start()
        topics = [f"bench/d{i}/shadow/update" for i in range(DEVICES)]
        body = {"state": {"reported": {"temp": 21.5, "fw": "1.0.0", "led": "on"}}}
        rows.append(("shadow-sync, full speed",
                     offer(broker.url, topics, "bench/+/shadow/update/accepted", messages, body=body)))
        rows.append((f"shadow-sync, {rate:.0f} msg/s offered",
                     offer(broker.url, topics, "bench/+/shadow/update/accepted", int(rate * seconds), rate,
                           body=body)))
        sync.terminate()
    finally:
        broker.stop()
        redis.stop()
    base = rows[0][1]["rate"]
    lines = [
        "| run | answered | msg/s | vs bare relay | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows:
        lines.append(f"| {name} | {r['count']:.0f} | {r['rate']:.0f} | {r['rate'] / base:.0%} "
                     f"| {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |")
    lines.append("")
    lines.append(f"Targets: shadow-sync full-speed throughput >= 50 % of the bare relay; p99 <= 10 ms at "
                 f"{rate:.0f} msg/s offered. Updates go to {DEVICES} devices; one publisher process, one "
                 "measuring subscriber process, QoS 1 throughout.")
    return "\n".join(lines)


if __name__ == "__main__":
    print(main())
