"""The embedded broker (daemons.broker: amqtt + the fleet plugin): authentication, ACL, presence."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from daemons.cli.localstack import AmqttServer, start_amqtt
from daemons.protocol.keys import device_password, parse_hex_key
from tests.identity.matrix import (
    Client,
    Identity,
    Roles,
    retained_leak_on_connect,
    run_matrix,
    takeover_leaks,
    will_breaches,
)
from tests.support import Daemon, env_for


@pytest.fixture(scope="module")
def amqtt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AmqttServer]:
    server = start_amqtt(tmp_path_factory.mktemp("amqtt"))
    yield server
    server.stop()


def device(server: AmqttServer, device_id: str) -> Identity:
    password = device_password(parse_hex_key(server.secret), device_id)
    return Identity(device_id, server.port, device_id, password)


def account(server: AmqttServer, name: str) -> Identity:
    return Identity(name, server.port, name, server.accounts[name])


def test_acl_matrix_on_the_embedded_broker(amqtt: AmqttServer) -> None:
    roles = Roles(device_a=device(amqtt, "dev-a"), device_b=device(amqtt, "dev-b"),
                  operator=account(amqtt, "operator"), feeder=account(amqtt, "otaplanner"),
                  observer=account(amqtt, "healthwatch"), daemon=account(amqtt, "shadowsync"))
    tally = run_matrix(roles, "amqtt 0.12 + fleet plugin")
    assert tally.breaches == []
    assert tally.denied_jobs == []


def test_wildcards_beyond_its_subtree_are_refused_to_a_device(amqtt: AmqttServer) -> None:
    a = Client(device(amqtt, "dev-a")).connect()
    assert a.subscribe("fleet/dev-a/#", "#", "fleet/+/status", "fleet/dev-b/#", "fleetops/#") == [
        1, 0x80, 0x80, 0x80, 0x80]
    a.close()


@pytest.mark.parametrize("case", ["no credentials", "wrong device password", "wrong account password",
                                  "unknown account", "account name with a device password",
                                  "invalid device id"])
def test_refused(amqtt: AmqttServer, case: str) -> None:
    secret = parse_hex_key(amqtt.secret)
    who = {
        "no credentials": Identity("anon", amqtt.port),
        "wrong device password": Identity("dev-b", amqtt.port, "dev-b", device_password(secret, "dev-a")),
        "wrong account password": Identity("operator", amqtt.port, "operator", "nope"),
        "unknown account": Identity("x", amqtt.port, "mallory@ops", "x"),
        "account name with a device password": Identity("op", amqtt.port, "operator",
                                                        device_password(secret, "operator")),
        "invalid device id": Identity("bad", amqtt.port, "a/b", device_password(secret, "a/b")),
    }[case]
    assert Client(who).try_connect().startswith("refused")  # a CONNACK refusal, not a timeout


def test_a_device_dying_without_a_will_is_seen_offline(amqtt: AmqttServer, redis, redis_server) -> None:
    """Presence: the broker publishes the status a vanished device could not (PROTOCOL §4)."""
    sync = Daemon("shadowsync", env_for(
        redis_server, amqtt, "fleet", "fleetops", FLEET_MQTT_USERNAME="shadowsync",
        FLEET_MQTT_PASSWORD=amqtt.accounts["shadowsync"], FLEET_MQTT_CLIENT_ID="ss-presence",
        # 3.1.1 at once: "auto" would wait 3 s for the MQTT 5 CONNACK amqtt never sends (that fallback
        # has its own test, tests/shadowsync/test_amqtt.py).
        FLEET_MQTT_PROTOCOL="3.1.1")).start()
    try:
        op = Client(account(amqtt, "operator")).connect()
        op.subscribe("fleet/dev-p/shadow/get/accepted", "fleet/dev-p/shadow/update/accepted",
                      "fleet/dev-p/status")
        dev = Client(device(amqtt, "dev-p")).connect()  # no Last Will
        dev.publish("fleet/dev-p/status", b'{"online": true, "fw": "1.0.0", "ts": 1}', retain=True)
        dev.publish("fleet/dev-p/shadow/update", b'{"state": {"reported": {"led": 1}}}')
        op.received_until("fleet/dev-p/shadow/update/accepted", None)

        def connected() -> bool:
            op.publish("fleet/dev-p/shadow/get", b"{}")
            return bool(json.loads(op.received_until("fleet/dev-p/shadow/get/accepted", None)[-1][1])
                        ["connected"])

        assert connected()
        dev.kill()  # the connection dies: no DISCONNECT, no Last Will
        status = op.received_until("fleet/dev-p/status", None, match=lambda p: b'"online":false' in p)
        assert json.loads(status[-1][1])["online"] is False
        deadline = time.monotonic() + 10
        while connected():
            assert time.monotonic() < deadline, "shadow still says connected"
        op.close()
    finally:
        sync.kill()


def test_another_device_cannot_take_over_a_persistent_session(amqtt: AmqttServer) -> None:
    returned, stolen = takeover_leaks(amqtt.port, device(amqtt, "dev-v"), device(amqtt, "dev-t"),
                                      account(amqtt, "otaplanner"))
    assert not stolen
    assert returned  # the thief was refused, so the victim's queue is intact


def test_connecting_never_sends_retained_messages_of_other_clients_filters(amqtt: AmqttServer) -> None:
    """amqtt 0.12 would; daemons.broker.server.FleetBroker does not."""
    got = retained_leak_on_connect(device(amqtt, "dev-a"), "dev-b", account(amqtt, "operator"),
                                   account(amqtt, "otaplanner"))
    assert got == []


def test_a_last_will_cannot_write_what_the_device_may_not(amqtt: AmqttServer) -> None:
    tried, breaches = will_breaches(device(amqtt, "dev-a"), "dev-b", account(amqtt, "healthwatch"))
    print(f"Last Will on amqtt: {tried} forbidden topics tried, breaches: {len(breaches)}")
    assert breaches == []
