from __future__ import annotations


def test_update_then_get(daemon, probe, prefixes):
    p, _ = prefixes
    daemon("shadowsync")
    dev = probe(f"{p}/d1/shadow/#")
    r = dev.request(f"{p}/d1/shadow/update", {"state": {"reported": {"t": 1}}, "clientToken": "a"})
    assert r.topic.endswith("/accepted"), r.body
    assert r.body["version"] == 1
    g = dev.request(f"{p}/d1/shadow/get", {})
    assert g.body["state"]["reported"] == {"t": 1}
