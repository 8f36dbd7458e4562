"""A daemon rides out a broker restart: it reconnects with backoff and subscribes again."""

from __future__ import annotations

from daemons.cli.localstack import start_mosquitto
from tests.support import Daemon, Probe, env_for


def test_daemon_reconnects_after_broker_restart(tmp_path, redis, redis_server, prefixes):
    p, o = prefixes
    broker = start_mosquitto(tmp_path / "m1")
    sync = Daemon("shadowsync", env_for(redis_server, broker, p, o, FLEET_MQTT_CLIENT_ID="ss-rc")).start()
    try:
        dev = Probe(broker.url).connect().subscribe(f"{p}/r1/shadow/update/+")
        assert dev.request(f"{p}/r1/shadow/update", {"state": {"reported": {"a": 1}}}).body["version"] == 1
        dev.close()
        broker.stop()  # no persistence: the daemon's session and subscriptions are gone too
        port = broker.port
        broker = start_mosquitto(tmp_path / "m2", port)
        assert broker.port == port
        dev = Probe(broker.url).connect().subscribe(f"{p}/r1/shadow/update/+")
        # Until the daemon is back, requests go unanswered; retry until one is answered.
        for _attempt in range(40):
            try:
                r = dev.request(f"{p}/r1/shadow/update", {"state": {"reported": {"a": 2}}}, timeout=1.0)
                break
            except TimeoutError:
                continue
        else:
            raise AssertionError("shadow-sync did not come back after the broker restart")
        assert r.body["version"] == 2
        assert sync.process is not None and sync.process.poll() is None
        dev.close()
    finally:
        sync.kill()
        broker.stop()
