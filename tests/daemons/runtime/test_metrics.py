"""Prometheus /metrics: outcomes counted with bounded labels, never a device id."""

from __future__ import annotations

import urllib.request

from tests.support import free_port


def test_metrics_count_outcomes_without_device_ids(daemon, probe, prefixes):
    p, _ = prefixes
    port = free_port()
    daemon("shadowsync", FLEET_METRICS_PORT=str(port))
    dev = probe(f"{p}/+/shadow/update/+")
    dev.request(f"{p}/meter-dev-1/shadow/update", {"state": {"reported": {"a": 1}}})
    dev.request(f"{p}/meter-dev-2/shadow/update", raw=b"{broken")
    dev.publish(f"{p}/bad$dev/shadow/update", {"state": {"reported": {"a": 1}}})
    dev.request(f"{p}/meter-dev-1/shadow/update", {"state": {"reported": {"a": 2}}})  # after the bad id
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'fleet_messages_total{daemon="shadowsync",kind="update",result="accepted"} 2.0' in text
    assert 'fleet_messages_total{daemon="shadowsync",kind="update",result="rejected_400"} 1.0' in text
    assert 'fleet_messages_total{daemon="shadowsync",kind="message",result="bad_id"} 1.0' in text
    assert "fleet_batch_seconds_bucket" in text
    assert "meter-dev" not in text and "bad$dev" not in text


def test_a_failed_redis_reading_leaves_the_scrape_answering():
    import redis as redis_lib
    from prometheus_client import generate_latest

    from daemons.runtime.metrics import DaemonMetrics, RedisReadings, gauge

    metrics = DaemonMetrics("t")
    calls = []

    def read():
        calls.append(1)
        if len(calls) == 1:
            raise redis_lib.exceptions.ConnectionError("away")
        yield gauge("fleet_devices_known", "Devices", samples=3)

    RedisReadings(metrics, read)
    assert "fleet_devices_known" not in generate_latest(metrics.registry).decode()
    text = generate_latest(metrics.registry).decode()  # the failure is counted from the next scrape on
    assert 'fleet_metrics_read_errors_total{daemon="t"} 1.0' in text and "fleet_devices_known 3.0" in text
