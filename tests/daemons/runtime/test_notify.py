"""sd_notify: READY=1 once subscribed, WATCHDOG=1 from the run loop (silent when it stalls), STOPPING=1."""

from __future__ import annotations

import os
import signal
import socket
import time

import pytest

from daemons.runtime.notify import Notifier, ReadinessListener
from tests.support import Daemon, Probe, env_for, start_redis


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_notifier_without_socket_does_nothing():
    n = Notifier({"WATCHDOG_USEC": "1000000"})
    assert not n.enabled
    assert n.ready() is False and n.watchdog() is False and n.stopping() is False


def test_notifier_writes_datagrams_to_a_path_socket(tmp_path):
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        n = Notifier({"NOTIFY_SOCKET": path})
        assert n.ready("subscribed")
        assert server.recv(4096) == b"READY=1\nSTATUS=subscribed\n"
        assert n.stopping()
        assert server.recv(4096) == b"STOPPING=1\n"
        n.close()


def test_abstract_namespace_and_a_gone_manager():
    listener = ReadinessListener()
    assert listener.name.startswith("@")
    n = Notifier(listener.env())
    assert n.ready()
    assert listener.wait_ready(5)
    listener.close()
    assert n.ready() is False  # the manager went away: reported, never raised
    n.close()


def test_watchdog_pings_at_half_the_period():
    listener = ReadinessListener(watchdog_s=2.0)
    clock = Clock()
    n = Notifier(listener.env(), clock=clock)
    assert n.ping_interval_s == 1.0
    sent = []
    for _ in range(50):  # 5 s of a loop turning every 0.1 s
        sent.append(n.watchdog())
        clock.now += 0.1
    assert sent.count(True) == 5 and sent[0] is True
    assert listener.wait_for("WATCHDOG", timeout=5)
    n.close()
    listener.close()


def test_watchdog_is_for_the_named_process_only():
    assert Notifier({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}
                    ).ping_interval_s is None
    assert Notifier({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1000",
                     "WATCHDOG_PID": str(os.getpid())}).ping_interval_s == 0.0005
    assert Notifier({"NOTIFY_SOCKET": "@x"}).ping_interval_s is None


def test_ready_means_subscribed(daemon, probe, prefixes):
    """A request sent the moment READY=1 arrives is answered: the subscriptions were granted."""
    p, _ = prefixes
    for n in range(3):
        sync = daemon("shadowsync", FLEET_MQTT_CLIENT_ID=f"ready-{p}")  # restarts of one replica
        assert sync.notify is not None and sync.notify.count("READY") == 1
        dev = probe(f"{p}/r{n}/shadow/update/accepted")
        dev.publish(f"{p}/r{n}/shadow/update", {"state": {"reported": {"n": n}}})
        assert dev.wait(f"{p}/r{n}/shadow/update/accepted", timeout=10).body["version"] == 1
        assert sync.terminate() == 0
        assert sync.notify.count("STOPPING") == 1


def test_stalled_loop_stops_pinging_the_watchdog(tmp_path, broker, prefixes):
    """Redis frozen (SIGSTOP) mid-batch: the loop blocks, pings stop; thawed, they resume."""
    p, o = prefixes
    redis = start_redis(tmp_path / "redis")
    sync = Daemon("shadowsync", env_for(redis, broker, p, o, FLEET_MQTT_CLIENT_ID=f"wd-{p}"),
                  watchdog_s=0.4)
    dev = Probe(broker.url).connect().subscribe(f"{p}/w1/shadow/update/accepted")
    try:
        sync.start()
        listener = sync.notify
        assert listener is not None
        deadline = time.monotonic() + 5
        while listener.count("WATCHDOG") < 3:  # pinging every 0.2 s while idle
            assert time.monotonic() < deadline, "no watchdog pings"
            time.sleep(0.05)
        redis.process.send_signal(signal.SIGSTOP)
        try:
            dev.publish(f"{p}/w1/shadow/update", {"state": {"reported": {"x": 1}}})
            time.sleep(0.5)  # the batch reaches the loop, which blocks on Redis
            frozen = listener.count("WATCHDOG")
            time.sleep(1.5)  # several watchdog periods of silence: systemd would restart it here
            assert listener.count("WATCHDOG") == frozen
        finally:
            redis.process.send_signal(signal.SIGCONT)
        assert dev.wait(f"{p}/w1/shadow/update/accepted", timeout=10).body["version"] == 1
        deadline = time.monotonic() + 5
        while listener.count("WATCHDOG") <= frozen:
            assert time.monotonic() < deadline, "pings did not resume"
            time.sleep(0.05)
    finally:
        dev.close()
        sync.kill()
        redis.stop()


@pytest.mark.parametrize("module", ["healthwatch", "daemons.api"])
def test_every_daemon_notifies_ready(daemon, module, tmp_path):
    from tests.support import free_port

    d = daemon(module, FLEET_API_PORT=str(free_port()))
    assert d.notify is not None and d.notify.count("READY") == 1
