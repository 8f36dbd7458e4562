"""SIGTERM drains and exits 0; what was received is applied before the daemon goes."""

from __future__ import annotations

import json
import signal

from daemons.registry import device_key


def test_sigterm_drains_then_exits_zero(daemon, probe, prefixes, redis):
    p, _ = prefixes
    sync = daemon("shadowsync")
    s = f"{p}/term-1/shadow"
    dev = probe(f"{s}/update/accepted")
    for seq in range(1, 201):
        dev.publish(f"{s}/update", {"state": {"reported": {"n": seq}}, "seq": seq})
    dev.wait(f"{s}/update/accepted", lambda m: m.body["version"] >= 20)
    assert sync.terminate() == 0
    version = json.loads(redis.hget(device_key("fleet", "term-1"), "sh:"))["version"]
    # Restarted, the daemon gets whatever it had not acknowledged: nothing is lost.
    sync.start()
    dev.wait(f"{s}/update/accepted", lambda m: m.body["version"] == 200, timeout=30)
    assert version >= 20


def test_second_signal_exits_at_once(daemon):
    sync = daemon("shadowsync")
    assert sync.process is not None
    sync.process.send_signal(signal.SIGTERM)
    sync.process.send_signal(signal.SIGTERM)
    assert sync.process.wait(10) in (0, 128 + signal.SIGTERM)
