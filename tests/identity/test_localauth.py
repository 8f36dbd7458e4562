"""A local run's credentials (daemons.cli.localauth) on the shipped mosquitto, with a real daemon."""

from __future__ import annotations

from pathlib import Path

from daemons.cli import localauth
from daemons.cli.localstack import start_mosquitto_shipped
from daemons.runtime.config import load_settings
from tests.identity.matrix import Client, Identity
from tests.support import Daemon


def test_prepare_is_stable_and_private(tmp_path: Path) -> None:
    first = localauth.prepare(tmp_path)
    again = localauth.prepare(tmp_path)
    assert (first.secret, first.accounts) == (again.secret, again.accounts)
    assert {"shadowsync", "otaplanner", "healthwatch", "operator", "api"} <= set(first.accounts)
    for name in ("fleet-secret", "accounts.json", "operator.password"):
        assert (tmp_path / name).stat().st_mode & 0o077 == 0
    assert first.secret not in repr(first) and first.accounts["operator"] not in repr(first)


def test_settings_give_each_daemon_its_account(tmp_path: Path) -> None:
    auth = localauth.prepare(tmp_path)
    config = tmp_path / "fleet.toml"
    config.write_text('mqtt_url = "mqtt://127.0.0.1:1"\n' + auth.settings_toml())
    assert {"shadowsync", "otaplanner", "healthwatch"} <= set(localauth.daemon_accounts())
    for name in localauth.daemon_accounts():
        s = load_settings(name, str(config), environ={})
        assert (s.mqtt_username, s.mqtt_password) == (name, auth.accounts[name])
    s = load_settings("fleetctl", str(config), environ={})
    assert (s.mqtt_username, s.mqtt_password, s.secret) == (*auth.operator, auth.secret)


def test_a_daemon_and_simulated_devices_log_in_on_the_shipped_mosquitto(
        tmp_path: Path, redis, redis_server) -> None:
    auth = localauth.prepare(tmp_path)
    devices = localauth.sim_device_ids(3)
    assert devices == ["sim-00000", "sim-00001", "sim-00002"]
    broker = start_mosquitto_shipped(tmp_path / "broker", auth.pki(), auth.mosquitto_passwd(devices))
    try:
        config = tmp_path / "fleet.toml"
        config.write_text(f'mqtt_url = "{broker.url}"\nredis_url = "{redis_server.url}"\n'
                          + auth.settings_toml())
        sync = Daemon("shadowsync", {"FLEET_CONFIG": str(config), "FLEET_METRICS_PORT": "0",
                                     "FLEET_MQTT_CLIENT_ID": "ss-localauth"}).start()
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
