"""`fleetctl pki ...` and `fleetctl creds`: device identities (PROTOCOL §6), with `cryptography`.

    fleetctl pki init [--dir D] [--host NAME|IP ...] [--days N]   fleet CA, broker certificate, empty CRL
    fleetctl pki issue DEVICE [--dir D] [--days N]                client certificate, CN = device id
    fleetctl pki revoke DEVICE [--dir D]                          adds its certificates to crl.pem
    fleetctl creds DEVICE                                         its development-listener password

Layout of D (default var/pki): fleet-ca.crt/.key, server.crt/.key, crl.pem (the broker's `cafile`,
`certfile`/`keyfile` and `crlfile`), devices/<id>.crt/.key, and issued.json (every serial issued per
device, so a revocation covers re-issued certificates too). Keys are ECDSA P-256, which mbedTLS on the
ESP32 verifies in hardware. A device id must be valid (PROTOCOL §0) and not an account of the ACL.
Exit codes as the rest of fleetctl: 0 done, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import json
import os
import sys
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from daemons.protocol.acl import AclError, load_acl
from daemons.protocol.keys import KeyError_, device_password, parse_hex_key
from daemons.protocol.messages import valid_device_id
from daemons.runtime.config import Settings

OK, USAGE = 0, 2
CA_DAYS = 3650
CRL_DAYS = 365  # an expired CRL makes mosquitto refuse every device: re-sign (pki revoke/init) within


class PkiError(Exception):
    """A usage error: message for stderr, exit code 2."""


def add_commands(sub: Any) -> None:
    """Register `pki` and `creds` on fleetctl's subparsers; each sets `handler(args, settings) -> int`."""
    pki = sub.add_parser("pki", help="fleet CA, broker and device certificates, revocation")
    psub = pki.add_subparsers(dest="action", required=True)
    init = psub.add_parser("init", help="create the fleet CA, the broker certificate and an empty CRL")
    init.add_argument("--host", action="append", default=None,
                      help="broker DNS name or IP for the certificate's SANs (repeatable; "
                           "default localhost and 127.0.0.1)")
    init.add_argument("--days", type=int, default=825, help="broker certificate lifetime")
    init.add_argument("--force", action="store_true", help="replace an existing CA (every device re-issued)")
    issue = psub.add_parser("issue", help="issue a device's client certificate (CN = device id)")
    issue.add_argument("device")
    issue.add_argument("--days", type=int, default=825)
    revoke = psub.add_parser("revoke", help="revoke every certificate issued to a device")
    revoke.add_argument("device")
    for p in (init, issue, revoke):
        p.add_argument("--dir", type=Path, default=Path(os.environ.get("FLEET_PKI_DIR", "var/pki")),
                       help="PKI directory (default $FLEET_PKI_DIR or var/pki)")
        p.set_defaults(handler=_run)
    creds = sub.add_parser("creds", help="print a device's password for the development listener")
    creds.add_argument("device")
    creds.set_defaults(handler=_run)


def _run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        if args.group == "creds":
            print(creds(settings, args.device))
        elif args.action == "init":
            made = init(args.dir, args.host or ["localhost", "127.0.0.1"], args.days, args.force)
            print(f"fleet CA and broker certificate in {args.dir}: {', '.join(sorted(made))}")
        elif args.action == "issue":
            crt, key = issue(args.dir, args.device, args.days, settings.broker_acl_file)
            print(f"{crt}\n{key}")
        else:
            count = revoke(args.dir, args.device)
            print(f"{count} certificate(s) of {args.device} revoked; {args.dir / 'crl.pem'} re-signed "
                  "(reload the broker: SIGHUP to mosquitto)")
    except PkiError as exc:
        print(f"fleetctl: {exc}", file=sys.stderr)
        return USAGE
    return OK


def creds(settings: Settings, device: str) -> str:
    """The device's password (daemons.protocol.keys.device_password of FLEET_SECRET)."""
    _check_id(device, settings.broker_acl_file)
    if not settings.secret:
        raise PkiError("FLEET_SECRET is not set (hex, >= 16 bytes)")
    try:
        secret = parse_hex_key(settings.secret)
    except KeyError_ as exc:
        raise PkiError(f"FLEET_SECRET: {exc}") from None
    return device_password(secret, device)


def _check_id(device: str, acl_file: str | None) -> None:
    if not valid_device_id(device):
        raise PkiError(f"not a valid device id: {device!r}")
    try:
        acl = load_acl(acl_file)
    except AclError as exc:
        raise PkiError(f"ACL: {exc}") from None
    if acl.is_account(device):
        raise PkiError(f"{device!r} is an account of the ACL, not a device identity")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fleet"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _load_ca(d: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate((d / "fleet-ca.crt").read_bytes())
        key = serialization.load_pem_private_key((d / "fleet-ca.key").read_bytes(), None)
    except FileNotFoundError:
        raise PkiError(f"no fleet CA in {d}: run `fleetctl pki init --dir {d}` first") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{d / 'fleet-ca.key'}: not an EC key")
    return cert, key


def _leaf(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, cn: str, days: int,
          usage: x509.ObjectIdentifier, sans: list[x509.GeneralName] | None = None,
          ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    if days <= 0:
        raise PkiError("--days must be positive")
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    builder = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False,
                                            content_commitment=False, data_encipherment=False,
                                            key_agreement=False, key_cert_sign=False, crl_sign=False,
                                            encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                              critical=False))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _sans(hosts: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for host in hosts:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            if not host or any(c.isspace() for c in host):
                raise PkiError(f"--host {host!r}: not a DNS name or IP address") from None
            out.append(x509.DNSName(host))
    return out


def init(d: Path, hosts: list[str], days: int = 825, force: bool = False) -> list[str]:
    """Create the fleet CA (unless present), a broker certificate for `hosts`, and a CRL.

    Re-running without --force keeps the CA (devices stay valid) and renews the broker certificate,
    e.g. for new host names. Returns the names of the files written.
    """
    d.mkdir(parents=True, exist_ok=True)
    sans = _sans(hosts)
    made = []
    if force or not (d / "fleet-ca.crt").exists():
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        ca = (x509.CertificateBuilder().subject_name(_name("fleet CA")).issuer_name(_name("fleet CA"))
              .public_key(key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - dt.timedelta(minutes=5))
              .not_valid_after(now + dt.timedelta(days=CA_DAYS))
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
              .add_extension(x509.KeyUsage(digital_signature=False, key_encipherment=False,
                                           content_commitment=False, data_encipherment=False,
                                           key_agreement=False, key_cert_sign=True, crl_sign=True,
                                           encipher_only=False, decipher_only=False), critical=True)
              .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
              .sign(key, hashes.SHA256()))
        _write_key(d / "fleet-ca.key", key)
        _write_cert(d / "fleet-ca.crt", ca)
        (d / "issued.json").write_text("{}")
        made += ["fleet-ca.crt", "fleet-ca.key"]
        _write_crl(d, ca, key, [])
        made.append("crl.pem")
    ca, ca_key = _load_ca(d)
    server, server_key = _leaf(ca, ca_key, hosts[0], days, ExtendedKeyUsageOID.SERVER_AUTH, sans)
    _write_key(d / "server.key", server_key)
    _write_cert(d / "server.crt", server)
    return [*made, "server.crt", "server.key"]


def issue(d: Path, device: str, days: int = 825, acl_file: str | None = None) -> tuple[Path, Path]:
    """Issue `device`'s client certificate and key; returns their paths (devices/<id>.crt/.key)."""
    _check_id(device, acl_file)
    ca, ca_key = _load_ca(d)
    cert, key = _leaf(ca, ca_key, device, days, ExtendedKeyUsageOID.CLIENT_AUTH)
    out = d / "devices"
    out.mkdir(exist_ok=True)
    crt_path, key_path = out / f"{device}.crt", out / f"{device}.key"
    _write_key(key_path, key)
    _write_cert(crt_path, cert)
    issued = _issued(d)
    issued.setdefault(device, []).append(format(cert.serial_number, "x"))
    (d / "issued.json").write_text(json.dumps(issued, indent=1, sort_keys=True))
    return crt_path, key_path


def revoke(d: Path, device: str) -> int:
    """Add every certificate issued to `device` to crl.pem and re-sign it; the number newly revoked."""
    if not valid_device_id(device):
        raise PkiError(f"not a valid device id: {device!r}")
    ca, ca_key = _load_ca(d)
    serials = [int(s, 16) for s in _issued(d).get(device, [])]
    if not serials:
        raise PkiError(f"no certificate was issued to {device!r} from {d}")
    revoked = _revoked(d)
    new = [s for s in serials if s not in revoked]
    now = _now()
    _write_crl(d, ca, ca_key, [*revoked.items(), *((s, now) for s in new)])
    return len(new)


def _issued(d: Path) -> dict[str, list[str]]:
    try:
        data = json.loads((d / "issued.json").read_text())
    except FileNotFoundError:
        return {}
    return data if isinstance(data, dict) else {}


def _revoked(d: Path) -> dict[int, dt.datetime]:
    try:
        crl = x509.load_pem_x509_crl((d / "crl.pem").read_bytes())
    except FileNotFoundError:
        return {}
    return {r.serial_number: r.revocation_date_utc for r in crl}


def _write_crl(d: Path, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
               entries: list[tuple[int, dt.datetime]]) -> None:
    now = _now()
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca.subject)
               .last_update(now - dt.timedelta(minutes=5)).next_update(now + dt.timedelta(days=CRL_DAYS)))
    for serial, when in entries:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build())
    crl = builder.sign(ca_key, hashes.SHA256())
    (d / "crl.pem").write_bytes(crl.public_bytes(serialization.Encoding.PEM))
