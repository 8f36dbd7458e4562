"""A local run's credentials (daemons.cli.localauth) on the shipped mosquitto, with a real daemon."""

from __future__ import annotations

from pathlib import Path

from daemons.cli import localauth
from daemons.cli.localstack import start_mosquitto_shipped
from tests.identity.matrix import Client, Identity
from tests.support import Daemon, env_for


def test_prepare_is_stable_and_private(tmp_path: Path) -> None:
    first = localauth.prepare(tmp_path)
    again = localauth.prepare(tmp_path)
    assert (first.secret, first.accounts) == (again.secret, again.accounts)
    accounts = {"shadowsync", "otaplanner", "healthwatch", "operator", "api"}
    assert accounts <= set(first.accounts)
    for name in ("fleet-secret", "accounts.json", "operator.password"):
        assert (tmp_path / name).stat().st_mode & 0o077 == 0
    assert first.secret not in repr(first) and first.accounts["operator"] not in repr(first)


def test_a_daemon_and_simulated_devices_log_in_on_the_shipped_mosquitto(
        tmp_path: Path, redis, redis_server) -> None:
    auth = localauth.prepare(tmp_path)
    devices = localauth.sim_device_ids(3)
    assert devices == ["sim-00000", "sim-00001", "sim-00002"]
    broker = start_mosquitto_shipped(tmp_path / "broker", auth.pki(), auth.mosquitto_passwd(devices))
    try:
        env = env_for(redis_server, broker, "fleet", "fleetops", FLEET_MQTT_USERNAME="shadowsync",
                      FLEET_MQTT_PASSWORD=auth.accounts["shadowsync"], FLEET_MQTT_CLIENT_ID="ss-localauth")
        sync = Daemon("shadowsync", env).start()
        try:
            dev = Client(Identity("sim-00001", broker.port, "sim-00001", auth.device_password("sim-00001")))
            dev.connect().subscribe("fleet/sim-00001/shadow/#")
            dev.publish("fleet/sim-00001/shadow/update", b'{"state": {"reported": {"x": 1}}}')
            assert dev.received_until("fleet/sim-00001/shadow/update/accepted", None)
            dev.close()
            other = Identity("sim-00009", broker.port, "sim-00009", auth.device_password("sim-00009"))
            assert Client(other).try_connect() != "ok"  # not a device of this run
        finally:
            sync.kill()
    finally:
        broker.stop()


def test_start_broker_runs_either_broker_with_authentication(tmp_path: Path) -> None:
    auth = localauth.prepare(tmp_path)
    for kind in ("mosquitto", "amqtt"):
        broker = localauth.start_broker(kind, tmp_path / kind, 0, auth, ["sim-00000"])
        try:
            device = Identity("sim-00000", broker.port, "sim-00000", auth.device_password("sim-00000"))
            for who in (device, Identity("operator", broker.port, *auth.operator)):
                Client(who).connect().close()
            assert Client(Identity("anon", broker.port)).try_connect() != "ok", kind
        finally:
            broker.stop()


def test_the_simulators_device_ids() -> None:
    """mosquitto's password file lists the ids the simulator will use (daemons.sim.fleet's rule)."""
    from daemons.sim.fleet import device_id, parser

    args = parser().parse_args([])
    assert localauth.sim_device_ids(3) == [device_id(args, i) for i in range(3)]
