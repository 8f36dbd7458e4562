"""shadow-sync on a real Redis Cluster: per-device atomicity and the selector indexes still hold."""

from __future__ import annotations

from tests.support import Daemon, env_for, on_cluster


@on_cluster
def test_shadowsync_on_redis_cluster(redis, redis_target, broker, probe, prefixes):
    p, o = prefixes
    env = env_for(redis_target, broker, p, o, FLEET_MQTT_CLIENT_ID="ss-cluster")
    sync = Daemon("shadowsync", env).start()
    try:
        ops = probe(f"{p}/+/shadow/#", f"{o}/shadow/bulk/+")
        devices = [f"c{i}" for i in range(30)]  # spread over every node's slots
        for i, dev in enumerate(devices):
            ops.publish(f"{p}/{dev}/heartbeat", {"ts": 1, "seq": 1, "uptime_s": 1, "slot": 0,
                                                 "hw": "c3", "fw": "1.0" if i % 2 else "2.0"})
        for dev in devices:
            r = ops.request(f"{p}/{dev}/shadow/update", {"state": {"reported": {"v": dev}}})
            assert r.body["version"] == 1, r.body
        r = ops.request(f"{p}/c1/shadow/update", {"state": {"reported": {"v": 2}}, "version": 7})
        assert r.body["code"] == 409
        r = ops.request(f"{o}/shadow/bulk", {"selector": {"fw": "1.*"}, "state": {"desired": {"k": 1}}})
        assert r.body["matched"] == 15
        g = ops.request(f"{p}/c3/shadow/get")
        assert g.body["state"]["delta"] == {"k": 1} and g.body["version"] == 2
    finally:
        sync.kill()
