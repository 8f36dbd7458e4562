"""Prometheus metrics shared by every daemon. Labels are bounded: never a device id."""

from __future__ import annotations

from contextlib import ExitStack

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


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

    def count(self, kind: str, result: str, n: int = 1) -> None:
        self.messages.labels(self.daemon, kind, result).inc(n)

    def serve(self, port: int, resources: ExitStack | None = None) -> None:
        """Serve /metrics on `port` (none when not positive); `resources` stops the server."""
        if port > 0:
            server, _thread = start_http_server(port, registry=self.registry)
            if resources is not None:
                resources.callback(server.server_close)
                resources.callback(server.shutdown)
