"""Load tools shared by the benchmarks, each run in a process of its own.

- `relay`: the baseline, a paho client that republishes every message to another topic.
- `publish`: offers N messages (at full speed or at a fixed rate), each carrying its send time.
- `collect`: counts the answers and measures throughput and latency.
Inside one Python process the interpreter lock is what would be measured, hence the processes.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import statistics
import time
from typing import Any

import paho.mqtt.client as paho

from daemons.runtime.mqtt import make_client

CTX = mp.get_context("fork")


def _client(url: str, client_id: str = "") -> paho.Client:
    # As the daemons: paho scans its whole in-flight window on every PUBACK, so keep it modest.
    c, addr = make_client(url, client_id, max_inflight=100)
    c.connect(addr.host, addr.port, keepalive=60)
    return c


def _relay(url: str, ready: Any) -> None:
    c = _client(url, "bench-relay")

    def on_message(client: paho.Client, userdata: Any, m: paho.MQTTMessage) -> None:
        client.publish("bench/out/" + m.topic[9:], m.payload, qos=1)

    c.on_message = on_message
    c.on_subscribe = lambda *a: ready.set()
    c.on_connect = lambda client, *a: client.subscribe("bench/in/#", qos=1)
    c.loop_forever()


def start_relay(url: str) -> mp.Process:
    ready = CTX.Event()
    proc = CTX.Process(target=_relay, args=(url, ready), daemon=True)
    proc.start()
    ready.wait(10)
    return proc


def _publish(url: str, topics: list[str], n: int, rate: float | None, body: dict[str, Any],
             go: Any) -> None:
    c = _client(url)
    c.loop_start()
    go.wait()
    start = time.perf_counter()
    for i in range(n):
        if rate:
            due = start + i / rate
            while time.perf_counter() < due:
                time.sleep(max(0.0, min(0.001, due - time.perf_counter())))
        payload = dict(body)
        payload["clientToken"] = f"{time.time():.6f}"
        last = c.publish(topics[i % len(topics)], json.dumps(payload, separators=(",", ":")), qos=1)
    if n:
        last.wait_for_publish(120)  # everything before it has left too (in order, QoS 1)
    c.loop_stop()


def _collect(url: str, pattern: str, n: int, ready: Any, out: Any, timeout: float) -> None:
    c = _client(url)
    stamps: list[float] = []
    lat: list[float] = []

    def on_message(client: paho.Client, userdata: Any, m: paho.MQTTMessage) -> None:
        now = time.time()
        stamps.append(time.perf_counter())
        with contextlib.suppress(ValueError, KeyError, TypeError):
            lat.append(now - float(json.loads(m.payload)["clientToken"]))

    c.on_message = on_message
    c.on_subscribe = lambda *a: ready.set()
    c.subscribe(pattern, qos=1)
    c.loop_start()
    deadline = time.monotonic() + timeout
    while len(stamps) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    c.loop_stop()
    out.put({"count": len(stamps), "first": stamps[0] if stamps else 0.0,
             "last": stamps[-1] if stamps else 0.0, "latencies": lat})


def offer(url: str, topics: list[str], answer_pattern: str, n: int, rate: float | None = None,
          body: dict[str, Any] | None = None, timeout: float = 120.0) -> dict[str, float]:
    """Publish n messages from one process; count answers in another. Returns msgs/s and latency."""
    ready, go, out = CTX.Event(), CTX.Event(), CTX.Queue()
    collector = CTX.Process(target=_collect, args=(url, answer_pattern, n, ready, out, timeout))
    collector.start()
    ready.wait(10)
    publisher = CTX.Process(target=_publish, args=(url, topics, n, rate, body or {}, go))
    publisher.start()
    time.sleep(0.3)
    t0 = time.perf_counter()
    go.set()
    result = out.get(timeout=timeout + 30)
    collector.join()
    publisher.join(30)
    elapsed = max(result["last"] - t0, 1e-9)
    lat = sorted(result["latencies"]) or [float("nan")]
    return {
        "count": result["count"],
        "rate": result["count"] / elapsed,
        "p50_ms": 1000 * statistics.median(lat),
        "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))],
    }


def measure_relay(broker_url: str, messages: int = 20000, rate: float | None = None) -> float:
    """Messages per second through the bare relay (the baseline every ratio is against)."""
    proc = start_relay(broker_url)
    try:
        topics = [f"bench/in/d{i}" for i in range(100)]
        return offer(broker_url, topics, "bench/out/#", messages, rate)["rate"]
    finally:
        proc.terminate()
