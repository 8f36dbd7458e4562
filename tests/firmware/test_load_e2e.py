"""The host firmware under MQTT load with libmosquitto on its own thread: shadow deltas at QoS 1 as
fast as the broker takes them while the core publishes a report for each (and heartbeats from its
tick), so messages and PUBACKs arrive together for a while. Nothing is lost at QoS 1 and nothing
is dropped by the port's event queue; the core never runs on the network thread."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable

import pytest

from tests.firmware.device import Device
from tests.support import Probe

pytestmark = pytest.mark.timeout(120)
DELTAS = 20000


def test_deltas_and_pubacks_at_full_rate_lose_nothing(
        device: Callable[..., Device], probe: Callable[..., Probe], prefixes: tuple[str, str]) -> None:
    p = prefixes[0]
    dev = device("--shadow-key", "led", "--hb", "1")
    base = f"{p}/{dev.device_id}"
    reports = probe(f"{base}/shadow/update", f"{base}/heartbeat")
    dev.wait_log("mqtt: connected")
    # QoS 1 without waiting for each PUBACK: as fast as the client library and the broker go
    sent = [reports.client.publish(f"{base}/shadow/update/delta",
                                   json.dumps({"state": {"led": f"v{i}"}, "version": i}), qos=1)
            for i in range(1, DELTAS + 1)]
    seen: list[str] = []
    seqs: list[int] = []
    while len(seen) < DELTAS:
        m = reports.wait(f"{base}/shadow/update", timeout=20)
        seen.append(m.body["state"]["reported"]["led"])
        seqs.append(m.body["seq"])
    assert all(info.is_published() for info in sent)
    assert seen == [f"v{i}" for i in range(1, DELTAS + 1)]  # every delta, once, in order
    assert all(b > a for a, b in itertools.pairwise(seqs))
    reports.wait(f"{base}/heartbeat")  # the tick kept publishing through it
    assert not any("events dropped" in line for line in dev.lines)
