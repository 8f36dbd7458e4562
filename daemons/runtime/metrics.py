"""Prometheus metrics shared by every daemon. Labels are bounded: never a device id.

Domain figures that live in Redis (devices known/online, delta backlog, rollouts by state) are
read at scrape time by a `RedisReadings` collector, so every replica reports the fleet's current
value and nothing is counted twice in memory. Queries over replicas use max(), not sum().
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from daemons.runtime.logs import get_logger

RTT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)


class DaemonMetrics:
    def __init__(self, daemon: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.daemon = daemon
        self.messages = Counter(
            "fleet_messages_total", "Messages handled, by kind and result",
            ["daemon", "kind", "result"], registry=self.registry)
        self.batches = Histogram(
            "fleet_batch_seconds", "Time to handle one batch (decode, Redis, publish)",
            ["daemon"], registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0))
        self.batch_size = Histogram(
            "fleet_batch_size", "Messages per batch", ["daemon"], registry=self.registry,
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000))
        self.failures = Counter(
            "fleet_batch_failures_total", "Batches retried after an infrastructure error",
            ["daemon", "error"], registry=self.registry)
        self.connected = Gauge(
            "fleet_mqtt_connected", "1 while the broker connection is up", ["daemon"],
            registry=self.registry)

        self.redis_rtt = Histogram(
            "fleet_redis_rtt_seconds", "Redis round trip (PING), measured every few seconds",
            ["daemon"], registry=self.registry, buckets=RTT_BUCKETS)
        self.broker_rtt = Histogram(
            "fleet_broker_rtt_seconds", "Broker round trip: a QoS 1 publish until its PUBACK",
            ["daemon"], registry=self.registry, buckets=RTT_BUCKETS)
        self.scrape_errors = Counter(
            "fleet_metrics_read_errors_total", "Scrape-time Redis readings that failed", ["daemon"],
            registry=self.registry)

    def count(self, kind: str, result: str, n: int = 1) -> None:
        self.messages.labels(self.daemon, kind, result).inc(n)

    def serve(self, port: int, resources: ExitStack | None = None) -> None:
        """Serve /metrics on `port` (none when not positive); `resources` stops the server."""
        if port > 0:
            server, _thread = start_http_server(port, registry=self.registry)
            if resources is not None:
                resources.callback(server.server_close)
                resources.callback(server.shutdown)


def gauge(name: str, doc: str, labels: Iterable[str] = (),
          samples: dict[tuple[str, ...], float] | float = 0.0) -> GaugeMetricFamily:
    """A gauge family for a `RedisReadings` function: one value, or values by label tuple."""
    family = GaugeMetricFamily(name, doc, labels=list(labels))
    if isinstance(samples, dict):
        for values, value in sorted(samples.items()):
            family.add_metric(list(values), value)
    else:
        family.add_metric([], samples)
    return family


class RedisReadings(Collector):
    """Gauges computed at scrape time by `read()` (a few Redis reads); a failure yields nothing.

    `describe()` returns nothing so registering does not call Redis; the families' names are
    fixed by `read` and documented in deploy/prometheus.
    """

    def __init__(self, metrics: DaemonMetrics, read: Callable[[], Iterable[GaugeMetricFamily]]) -> None:
        self.metrics = metrics
        self.read = read
        self.log = get_logger("metrics", daemon=metrics.daemon)
        metrics.registry.register(self)

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            families = list(self.read())
        except Exception as exc:  # Redis away or a bug: the scrape still answers
            self.metrics.scrape_errors.labels(self.metrics.daemon).inc()
            self.log.warning("metrics_read_failed", error=str(exc))
            return
        yield from families


def time_redis(metrics: DaemonMetrics, redis: Any) -> float:
    """One PING, observed into fleet_redis_rtt_seconds; its duration in seconds."""
    started = time.perf_counter()
    redis.ping()
    elapsed = time.perf_counter() - started
    metrics.redis_rtt.labels(metrics.daemon).observe(elapsed)
    return elapsed
