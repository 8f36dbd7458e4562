"""Every daemon running against real Redis and mosquitto, with some traffic, and its /metrics text."""

from __future__ import annotations

import hashlib
import re
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import redis as redis_lib

from tests.support import Daemon, Probe, Server, env_for, free_port, iter_unique

MASTER_KEY = "8d1f6a0e4b2c79d35f60a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6"
DAEMONS = ("shadowsync", "otaplanner", "healthwatch")
_names = iter_unique("m")


def exported(text: str) -> set[str]:
    """Every sample name a /metrics text can hold, children or not (from its TYPE lines)."""
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
                "gauge": ("",), "summary": ("_sum", "_count", "_created")}
    names: set[str] = set()
    for m in re.finditer(r"^# TYPE (\S+) (\S+)$", text, re.M):
        base = m.group(1).removesuffix("_total") if m.group(2) == "counter" else m.group(1)
        names.update(base + suffix for suffix in suffixes.get(m.group(2), ("",)))
    return names


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return str(r.read().decode())


def wait_metric(port: int, check: Callable[[str], bool], timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = scrape(port)
        if check(text):
            return text
        if time.monotonic() > deadline:
            raise TimeoutError(f"metrics on {port} never satisfied the check:\n{text[-3000:]}")
        time.sleep(0.1)


def run_fleet(redis: Server, broker: Server, workdir: Path) -> Iterator[dict[str, str]]:
    """Start every daemon, drive a device, a shadow, a heartbeat and a rollout; yield the scrapes."""
    name = next(_names)
    # The figures read from Redis are fleet-wide (namespace "fleet"): start from an empty Redis.
    flush = redis_lib.Redis.from_url(redis.url)
    flush.flushall()
    flush.close()
    p, o = f"fl{name}", f"ops{name}"
    artifacts = workdir / "artifacts"
    artifacts.mkdir(parents=True)
    ports = {module: free_port() for module in DAEMONS}
    extra = {"FLEET_OTA_MASTER_KEY": MASTER_KEY, "FLEET_ARTIFACT_STORE": f"local:{artifacts}",
             "FLEET_ARTIFACT_HTTP_PORT": str(free_port())}
    daemons = [Daemon(module, env_for(redis, broker, p, o, FLEET_METRICS_PORT=str(port),
                                      FLEET_MQTT_CLIENT_ID=f"{module}-{name}", **extra))
               for module, port in ports.items()]
    probe = Probe(broker.url).connect().subscribe(f"{o}/ota/#", f"{p}/+/shadow/update/+")
    try:
        for d in daemons:
            d.start()
        now = int(time.time())
        probe.publish(f"{p}/m-1/status", {"online": True, "hw": "c3", "fw": "1.0.0", "ts": now})
        probe.publish(f"{p}/m-1/heartbeat", {"ts": now, "seq": 1, "uptime_s": 10, "fw": "1.0.0",
                                             "slot": "ota_0", "hw": "c3"})
        probe.request(f"{p}/m-1/shadow/update", {"state": {"desired": {"led": "on"}}})
        data = b"firmware 2.0.0" * 100
        (artifacts / "fw.bin").write_bytes(data)
        r = probe.request(f"{o}/ota/releases/register", {
            "version": "2.0.0", "hw": ["c3"], "object": "fw.bin", "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data), "secure_version": 1})
        assert r.topic.endswith("/accepted"), r.body
        r = probe.request(f"{o}/ota/rollouts/r1/command", {
            "action": "create", "version": "2.0.0", "stages": [100], "soak_s": 0, "success_pct": 95,
            "max_failure_pct": 2, "min_devices_for_gate": 20, "timeout_s": 600})
        assert r.topic.endswith("/accepted"), r.body
        texts = {
            "shadowsync": wait_metric(ports["shadowsync"], lambda t: "fleet_devices_online 1.0" in t
                                      and "fleet_shadow_delta_backlog{presence=\"online\"} 1.0" in t),
            "otaplanner": wait_metric(ports["otaplanner"], lambda t: 'fleet_ota_rollouts{state="running"} 1.0'
                                      in t and 'rollout="r1"' in t and "fleet_broker_rtt_seconds_count" in t),
            "healthwatch": wait_metric(ports["healthwatch"], lambda t: "fleet_health_devices{" in t
                                       and "fleet_heartbeat_lag_seconds_count 1.0" in t),
        }
        yield texts
    finally:
        probe.close()
        for d in daemons:
            d.kill()
