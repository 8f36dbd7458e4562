"""fleetctl pki init/issue/revoke and fleetctl creds (daemons.cli.pki)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from daemons.cli import fleetctl
from daemons.protocol.keys import device_password


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_init_issue_revoke_through_fleetctl(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "pki"
    assert fleetctl.main(["pki", "init", "--dir", str(d), "--host", "mqtt.example.com",
                          "--host", "10.0.0.7", "--days", "30"]) == 0
    ca, server = load(d / "fleet-ca.crt"), load(d / "server.crt")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["mqtt.example.com"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.7")]
    assert ExtendedKeyUsageOID.SERVER_AUTH in server.extensions.get_extension_for_class(
        x509.ExtendedKeyUsage).value
    server.verify_directly_issued_by(ca)
    assert (d / "fleet-ca.key").stat().st_mode & 0o077 == 0

    assert fleetctl.main(["pki", "issue", "esp32-0001", "--dir", str(d), "--days", "10"]) == 0
    cert = load(d / "devices" / "esp32-0001.crt")
    cert.verify_directly_issued_by(ca)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "esp32-0001"
    assert ExtendedKeyUsageOID.CLIENT_AUTH in cert.extensions.get_extension_for_class(
        x509.ExtendedKeyUsage).value
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    life = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=9) < life <= dt.timedelta(days=10)

    # Re-issued, then revoked: both certificates land in the CRL, signed by the CA.
    assert fleetctl.main(["pki", "issue", "esp32-0001", "--dir", str(d)]) == 0
    assert fleetctl.main(["pki", "revoke", "esp32-0001", "--dir", str(d)]) == 0
    crl = x509.load_pem_x509_crl((d / "crl.pem").read_bytes())
    assert crl.is_signature_valid(ca.public_key())
    assert crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None
    assert len(list(crl)) == 2
    # init again keeps the CA (devices stay valid) and renews the server certificate.
    assert fleetctl.main(["pki", "init", "--dir", str(d)]) == 0
    assert load(d / "fleet-ca.crt") == ca
    capsys.readouterr()


@pytest.mark.parametrize("device", ["operator", "shadowsync", "a/b", "+", ""])
def test_issue_refuses_accounts_and_invalid_ids(tmp_path: Path, device: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "pki"
    assert fleetctl.main(["pki", "init", "--dir", str(d)]) == 0
    assert fleetctl.main(["pki", "issue", device, "--dir", str(d)]) == 2
    assert not (d / "devices").exists()
    assert "fleetctl:" in capsys.readouterr().err


def test_issue_without_a_ca_and_revoke_of_unknown_device(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert fleetctl.main(["pki", "issue", "d1", "--dir", str(tmp_path)]) == 2
    assert "pki init" in capsys.readouterr().err
    assert fleetctl.main(["pki", "init", "--dir", str(tmp_path)]) == 0
    assert fleetctl.main(["pki", "revoke", "d1", "--dir", str(tmp_path)]) == 2


def test_creds_prints_the_derived_password(monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    secret = "ab" * 32
    monkeypatch.setenv("FLEET_SECRET", secret)
    monkeypatch.delenv("FLEET_CONFIG", raising=False)
    assert fleetctl.main(["creds", "sim-0001"]) == 0
    assert capsys.readouterr().out.strip() == device_password(bytes.fromhex(secret), "sim-0001")
    assert fleetctl.main(["creds", "operator"]) == 2
    monkeypatch.delenv("FLEET_SECRET")
    assert fleetctl.main(["creds", "sim-0001"]) == 2
    assert "FLEET_SECRET" in capsys.readouterr().err
