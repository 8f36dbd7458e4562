"""A mosquitto restart (persistence on) loses nothing a device sent before the daemon is back.

The daemon's persistent session keeps its plain subscriptions in mosquitto's persistence file, so
what devices publish between the broker's start and the daemon's reconnect is queued for it.
mosquitto 2.0 does not save shared subscriptions (`persist__subs_save` walks plain subscribers
only), which is why FLEET_SHARED_SUBSCRIPTIONS defaults to off: the `auto` case below shows the loss.
"""

from __future__ import annotations

import signal

import pytest

from daemons.cli.localstack import start_mosquitto
from tests.support import Daemon, Probe, env_for


def answered(dev: Probe, topic: str, token: str) -> bool:
    return any(m.topic.startswith(topic) and m.body.get("clientToken") == token for m in dev.seen)


@pytest.mark.parametrize(("mode", "kept"), [("off", True), ("auto", False)])
def test_broker_restart_keeps_what_devices_sent_before_the_daemon_is_back(
        tmp_path, redis, redis_server, prefixes, mode, kept):
    p, o = prefixes
    broker = start_mosquitto(tmp_path / "m", persistence=True)
    env = env_for(redis_server, broker, p, o, FLEET_MQTT_CLIENT_ID=f"ss-br-{mode}-{p}",
                  FLEET_SHARED_SUBSCRIPTIONS=mode)
    sync = Daemon("shadowsync", env).start()
    dev: Probe | None = None
    try:
        assert sync.event("started")["shared"] is (mode == "auto")
        assert sync.process is not None
        topic = f"{p}/b1/shadow/update"
        sync.process.send_signal(signal.SIGSTOP)  # the daemon cannot reconnect before the device sends
        try:
            port = broker.port
            broker.stop()  # saves the sessions
            broker = start_mosquitto(tmp_path / "m", port, persistence=True)
            dev = Probe(broker.url).connect().subscribe(f"{topic}/+", f"{p}/b1/shadow/get/+")
            dev.publish(topic, {"state": {"reported": {"a": 1}}, "clientToken": "before"})  # PUBACKed
        finally:
            sync.process.send_signal(signal.SIGCONT)
        # Once the daemon answers a later request, it has had every message the broker kept for it.
        for n in range(40):
            dev.publish(topic, {"state": {"reported": {"b": n}}, "clientToken": f"after-{n}"})
            try:
                dev.wait(f"{topic}/accepted", lambda m: m.body.get("clientToken", "").startswith("after"),
                         1.0)
                break
            except TimeoutError:
                continue
        else:
            raise AssertionError("shadow-sync did not come back after the broker restart")
        if kept:
            before = dev.wait(f"{topic}/accepted", lambda m: m.body.get("clientToken") == "before")
            assert before.body["version"] == 1
        else:
            assert not answered(dev, f"{topic}/", "before"), "mosquitto kept a shared subscription"
        reported = dev.request(f"{p}/b1/shadow/get", {}).body["state"]["reported"]
        assert ("a" in reported) is kept, reported
    finally:
        if dev is not None:
            dev.close()
        sync.kill()
        broker.stop()
