"""mosquitto with exactly the shipped mosquitto.conf and acl.conf (paths and ports substituted)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from daemons.cli import pki
from daemons.cli.localstack import ShippedMosquitto, start_mosquitto_shipped
from daemons.protocol.passwd import write_passwd
from tests.identity.conftest import Fleet
from tests.identity.matrix import (
    Client,
    Identity,
    Roles,
    accepted,
    retained_leak_on_connect,
    run_matrix,
    takeover_leaks,
    will_breaches,
)


@pytest.fixture(scope="module")
def mosquitto(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShippedMosquitto]:
    # The development listener's devices: their derived passwords, as `fleet up` writes them.
    write_passwd(fleet.passwd, [*fleet.accounts.items(), ("dev-b", fleet.device_password("dev-b"))])
    server = start_mosquitto_shipped(tmp_path_factory.mktemp("mosquitto"), fleet.dir / "pki", fleet.passwd)
    yield server
    server.stop()


def account(fleet: Fleet, m: ShippedMosquitto, name: str) -> Identity:
    return Identity(name, m.port, name, fleet.accounts[name])


def device_cert(fleet: Fleet, m: ShippedMosquitto, device: str) -> Identity:
    return Identity(device, m.mtls_port, cert=fleet.cert(device), cafile=fleet.ca)


def test_acl_matrix_on_shipped_mosquitto(fleet: Fleet, mosquitto: ShippedMosquitto) -> None:
    roles = Roles(
        device_a=device_cert(fleet, mosquitto, "dev-a"),  # production: mTLS, CN = id
        device_b=Identity("dev-b", mosquitto.port, "dev-b", fleet.device_password("dev-b")),
        # operators over the TLS password listener, daemons on the loopback one
        operator=Identity("operator", mosquitto.tls_port, "operator", fleet.accounts["operator"],
                          cafile=fleet.ca),
        feeder=account(fleet, mosquitto, "otaplanner"),
        observer=account(fleet, mosquitto, "healthwatch"),
        daemon=account(fleet, mosquitto, "shadowsync"),
    )
    tally = run_matrix(roles, "mosquitto 2.0 (shipped config)")
    assert tally.breaches == []
    assert tally.denied_jobs == []


def test_device_b_password_login_reads_and_writes_its_own(fleet: Fleet, mosquitto: ShippedMosquitto) -> None:
    b = Client(Identity("dev-b", mosquitto.port, "dev-b", fleet.device_password("dev-b"))).connect()
    assert b.subscribe("fleet/dev-b/#") == [1]
    b.publish("fleet/dev-b/status", b'{"online": true}')
    assert b.received_until("fleet/dev-b/status", b'{"online": true}')
    b.close()


@pytest.mark.parametrize("case", ["no credentials", "wrong device password", "wrong account password",
                                  "unknown user", "device not in the password file"])
def test_password_listener_refuses(fleet: Fleet, mosquitto: ShippedMosquitto, case: str) -> None:
    who = {
        "no credentials": Identity("anon", mosquitto.port),
        "wrong device password": Identity("dev-b", mosquitto.port, "dev-b", fleet.device_password("dev-a")),
        "wrong account password": Identity("operator", mosquitto.port, "operator", "nope"),
        "unknown user": Identity("x", mosquitto.port, "mallory", "x"),
        "device not in the password file": Identity("dev-c", mosquitto.port, "dev-c",
                                                    fleet.device_password("dev-c")),
    }[case]
    assert Client(who).try_connect().startswith("refused")  # a CONNACK refusal, not a timeout


def test_tls_listener_refuses_a_wrong_password(fleet: Fleet, mosquitto: ShippedMosquitto) -> None:
    who = Identity("operator", mosquitto.tls_port, "operator", "nope", cafile=fleet.ca)
    assert not accepted(who)


def test_mtls_refuses_no_certificate_another_ca_and_revoked(
        fleet: Fleet, mosquitto: ShippedMosquitto, tmp_path) -> None:
    port = mosquitto.mtls_port
    assert not accepted(Identity("dev-a", port, cafile=fleet.ca))
    # A certificate with the right CN from a CA the broker does not trust.
    pki.init(tmp_path / "rogue", ["localhost"])
    rogue = pki.issue(tmp_path / "rogue", "dev-a")
    assert not accepted(Identity("dev-a", port, cert=(str(rogue[0]), str(rogue[1])), cafile=fleet.ca))
    # Revoked: accepted before `pki revoke` and the broker's reload, refused after.
    cert = fleet.cert("dev-r")
    assert accepted(Identity("dev-r", port, cert=cert, cafile=fleet.ca))
    assert pki.revoke(fleet.dir / "pki", "dev-r") == 1
    mosquitto.reload()
    deadline = time.monotonic() + 10
    while accepted(Identity("dev-r", port, cert=cert, cafile=fleet.ca)):
        assert time.monotonic() < deadline, "revoked certificate still accepted after SIGHUP"
    assert accepted(Identity("dev-s", port, cert=fleet.cert("dev-s"), cafile=fleet.ca))


def test_the_matrix_sees_breaches_on_an_open_broker(broker) -> None:
    """Negative control: the anonymous test broker lets everything through, and the matrix says so."""
    def anyone(name: str) -> Identity:
        return Identity(name, broker.port)

    tally = run_matrix(Roles(anyone("dev-a"), anyone("dev-b"), anyone("operator"), anyone("otaplanner"),
                             anyone("healthwatch"), anyone("shadowsync")), "open mosquitto")
    assert "open mosquitto: device published on fleet/dev-b/shadow/update" in tally.breaches
    assert any("device received fleet/dev-b/" in b for b in tally.breaches)


def test_another_device_cannot_take_over_a_persistent_session(
        fleet: Fleet, mosquitto: ShippedMosquitto) -> None:
    victim = device_cert(fleet, mosquitto, "dev-v")
    thief = device_cert(fleet, mosquitto, "dev-t")
    feeder = account(fleet, mosquitto, "otaplanner")
    returned, stolen = takeover_leaks(mosquitto.mtls_port, victim, thief, feeder)
    assert not stolen
    assert returned  # use_username_as_clientid: the thief got a session of its own


def test_connecting_never_sends_retained_messages_of_other_clients_filters(
        fleet: Fleet, mosquitto: ShippedMosquitto) -> None:
    operator, feeder = account(fleet, mosquitto, "operator"), account(fleet, mosquitto, "otaplanner")
    got = retained_leak_on_connect(device_cert(fleet, mosquitto, "dev-a"), "dev-b", operator, feeder)
    assert got == []


def test_a_last_will_cannot_write_what_the_device_may_not(fleet: Fleet, mosquitto: ShippedMosquitto) -> None:
    tried, breaches = will_breaches(device_cert(fleet, mosquitto, "dev-a"), "dev-b",
                                    account(fleet, mosquitto, "healthwatch"))
    print(f"Last Will on mosquitto: {tried} forbidden topics tried, breaches: {len(breaches)}")
    assert breaches == []
