"""healthwatch on a real Redis Cluster, two replicas: the per-device CAS and the counters still hold."""

from __future__ import annotations

import json
import time

from healthwatch.device import DeviceState
from healthwatch.store import HealthStore
from tests.healthwatch.test_replicas import all_scored, beat
from tests.support import Daemon, env_for, redis_client

DEVICES, BEATS = 24, 25


def test_two_replicas_on_redis_cluster(redis_cluster, broker, probe, prefixes):
    p, o = prefixes
    replicas = [Daemon("healthwatch", env_for(redis_cluster, broker, p, o,
                                              FLEET_MQTT_CLIENT_ID=f"hw-cluster-{n}-{p}")) for n in range(2)]
    client = redis_client(redis_cluster)
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
        client.close()
        for d in replicas:
            d.kill()
