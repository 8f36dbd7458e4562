"""Fleet-wide desired by selector, tags, replicas behind $share, and a crash mid-stream."""

from __future__ import annotations

import json
import threading

from daemons.registry import device_key


def _heartbeat(hw: str, fw: str) -> dict:
    return {"ts": 1, "seq": 1, "uptime_s": 10, "fw": fw, "slot": 0, "hw": hw}


def test_bulk_desired_by_selector(daemon, probe, prefixes):
    p, o = prefixes
    daemon("shadowsync")
    ops = probe(f"{p}/+/shadow/update/delta", f"{o}/shadow/bulk/+")
    fleet = {"a1": ("c3", "1.2.0"), "a2": ("c3", "1.3.0"), "a3": ("s3", "1.2.5"), "a4": ("c3", "2.0.0")}
    for dev, (hw, fw) in fleet.items():
        ops.publish(f"{p}/{dev}/heartbeat", _heartbeat(hw, fw))
    ops.publish(f"{o}/devices/a1/tags", {"site": "north"}, retain=True)
    ops.publish(f"{o}/devices/a2/tags", {"site": "south"}, retain=True)
    ops.publish(f"{o}/devices/a3/tags", {"site": "north"}, retain=True)

    r = ops.request(f"{o}/shadow/bulk", {"selector": {"hw": "c3", "fw": "1.*"},
                                         "state": {"desired": {"interval": 30}}, "clientToken": "b1"})
    assert r.topic.endswith("/accepted") and r.body == {**r.body, "matched": 2, "clientToken": "b1"}
    got = {ops.wait(f"{p}/*/shadow/update/delta").topic.split("/")[1] for _ in range(2)}
    assert got == {"a1", "a2"}

    r = ops.request(f"{o}/shadow/bulk", {"selector": {"tags": {"site": "north"}},
                                         "state": {"desired": {"led": "blue"}}})
    assert r.body["matched"] == 2
    got = {ops.wait(f"{p}/*/shadow/update/delta").topic.split("/")[1] for _ in range(2)}
    assert got == {"a1", "a3"}
    # Tags replaced: a1 leaves "north".
    ops.publish(f"{o}/devices/a1/tags", {"site": "east"}, retain=True)
    r = ops.request(f"{o}/shadow/bulk", {"selector": {"tags": {"site": "north"}, "ids": ["a1", "a3", "zz"]},
                                         "state": {"desired": {"led": "red"}}})
    assert r.body["matched"] == 1

    bad = ops.request(f"{o}/shadow/bulk", {"selector": {"hw": 5}, "state": {"desired": {"x": 1}}})
    assert bad.topic.endswith("/rejected") and bad.body["code"] == 400
    bad = ops.request(f"{o}/shadow/bulk", {"selector": {}, "state": {"reported": {"x": 1}}})
    assert bad.body["code"] == 400


def test_two_replicas_behind_shared_subscription(daemon, probe, prefixes, redis):
    p, _ = prefixes
    replicas = [daemon("shadowsync", FLEET_SHARED_SUBSCRIPTIONS="auto") for _ in range(2)]
    for d in replicas:
        started = d.event("started")
        assert started["shared"] is True and started["protocol"] == 5
    s = f"{p}/hot-1/shadow"
    observer = probe(f"{s}/update/accepted", f"{s}/update/rejected")
    per_client, clients = 500, 4
    senders = [probe() for _ in range(clients)]

    def send(k: int) -> None:
        for i in range(per_client):
            senders[k].publish(f"{s}/update", {"state": {"reported": {f"c{k}": i, "last": k}}})

    threads = [threading.Thread(target=send, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    accepted: dict[int, dict] = {}
    for _ in range(per_client * clients):
        m = observer.wait(f"{s}/update/*", timeout=60)
        assert m.topic.endswith("/accepted"), m.body
        accepted[m.body["version"]] = m.body["state"]["reported"]
    assert sorted(accepted) == list(range(1, per_client * clients + 1)), "each update got its own version"
    doc = json.loads(redis.hget(device_key("fleet", "hot-1"), "sh:"))
    assert doc["version"] == per_client * clients
    # Replaying the accepted updates in version order gives the stored document: no write was lost.
    replay: dict = {}
    for version in sorted(accepted):
        replay.update(accepted[version])
    assert doc["state"]["reported"] == replay
    assert set(replay) == {"last", *(f"c{k}" for k in range(clients))}


def test_kill_9_mid_stream_applies_every_report_exactly_once(daemon, probe, prefixes, redis):
    p, _ = prefixes
    sync = daemon("shadowsync")
    s = f"{p}/crash-1/shadow"
    observer = probe(f"{s}/update/accepted", f"{s}/update/rejected")
    device = probe()
    total = 1500

    def stream() -> None:
        for seq in range(1, total + 1):
            device.publish(f"{s}/update", {"state": {"reported": {"n": seq}}, "seq": seq,
                                           "clientToken": str(seq)})

    sender = threading.Thread(target=stream)
    sender.start()
    first = observer.wait(f"{s}/update/accepted", lambda m: m.body["version"] >= total // 4, timeout=60)
    sync.kill()  # SIGKILL: no drain, no acks for what was in hand
    sender.join()
    sync.start()
    # Every report is answered: accepted, or (a redelivery of one applied before the kill) 409
    # stale. An answer lost behind an early PUBACK would leave a report unanswered.
    answered: dict[str, list[str]] = {first.body["clientToken"]: ["accepted"]}
    while len(answered) < total:
        m = observer.wait(f"{s}/update/*", timeout=60)
        answered.setdefault(m.body["clientToken"], []).append(m.topic.rsplit("/", 1)[1])
    doc = json.loads(redis.hget(device_key("fleet", "crash-1"), "sh:"))
    assert doc["version"] == total, "every report applied exactly once: no loss, no double apply"
    assert doc["state"]["reported"] == {"n": total}
    assert redis.hget(device_key("fleet", "crash-1"), "seq") == str(total)
