"""healthwatch on a real Redis Cluster, two replicas: the per-device CAS and the counters still hold."""

from __future__ import annotations

import json
import time

from healthwatch.device import DeviceState
from healthwatch.store import HealthStore
from tests.healthwatch.test_replicas import all_scored, beat
from tests.support import Daemon, env_for, on_cluster

DEVICES, BEATS = 24, 25


@on_cluster
def test_two_replicas_on_redis_cluster(redis, redis_target, broker, probe, prefixes):
    p, o = prefixes
    replicas = [Daemon("healthwatch", env_for(redis_target, broker, p, o,
                                              FLEET_MQTT_CLIENT_ID=f"hw-cluster-{n}-{p}",
                                              FLEET_SHARED_SUBSCRIPTIONS="auto")) for n in range(2)]
    client = redis
    store = HealthStore(client)
    try:
        for d in replicas:
            d.start()
        sender = probe()
        for i in range(BEATS):  # devices spread over every node's slots, all in flight at once
            for n in range(DEVICES):
                sender.client.publish(f"{p}/cl-{n}/heartbeat", json.dumps(beat(i)), qos=1)

        def states() -> list[DeviceState | None]:
            raws = [client.hget(store.key(f"cl-{n}"), "st") for n in range(DEVICES)]
            return [DeviceState.from_json(json.loads(r)) if r else None for r in raws]

        deadline = time.monotonic() + 60
        while not all(all_scored(s, BEATS) for s in states()):
            assert time.monotonic() < deadline, [(s.seq, bin(s.win)) if s else None for s in states()]
            time.sleep(0.1)
        counts = {k: int(v) for k, v in client.hgetall(store.counts_key).items()}
        assert sum(v for k, v in counts.items() if k.startswith("status:")) == DEVICES, counts
    finally:
        for d in replicas:
            d.kill()
