"""Job signing (PROTOCOL §3): per-device HMAC keys, ECDSA P-256, kid rotation, refusals."""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from daemons.protocol.errors import ConfigError
from daemons.runtime.config import Settings
from otaplanner.signing import SignatureError, Signer, Verifier, load_public_key, ota_device_key

MASTER = bytes.fromhex("8d1f6a0e4b2c79d35f60a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6")
MANIFEST = b'{"device_id":"dev-1","job_id":"j1"}'


def pem_key(tmp_path: Path, curve: ec.EllipticCurve | None = None) -> tuple[Path, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(curve or ec.SECP256R1())
    path = tmp_path / "ota.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path, key


def test_device_key_is_hkdf_sha256_of_the_master_over_the_device_id() -> None:
    expected = HKDF(hashes.SHA256(), 32, b"", b"fleet-ota-v1:dev-1").derive(MASTER)
    assert ota_device_key(MASTER, "dev-1") == expected
    assert ota_device_key(MASTER, "dev-2") != expected and len(expected) == 32


def test_hmac_job_round_trip_and_exact_payload() -> None:
    signer = Signer.from_settings(Settings(ota_master_key=MASTER.hex(), ota_kid="k7"))
    job = signer.make_job("dev-1", "j1", "r1", MANIFEST)
    assert set(job) == {"job_id", "rollout_id", "alg", "kid", "manifest", "sig"}
    assert job["alg"] == "hmac-sha256" and job["kid"] == "k7" and job["rollout_id"] == "r1"
    assert base64.b64decode(job["manifest"]) == MANIFEST
    sig = hmac.new(ota_device_key(MASTER, "dev-1"), MANIFEST, hashlib.sha256).digest()
    assert base64.b64decode(job["sig"]) == sig
    # The device holds only its own key.
    assert Verifier(device_keys={"k7": ota_device_key(MASTER, "dev-1")}).verify(job, "dev-1") == MANIFEST
    assert signer.verifier("dev-1").verify(job, "dev-1") == MANIFEST


def test_ecdsa_job_round_trip_with_only_the_public_key(tmp_path: Path) -> None:
    path, key = pem_key(tmp_path)
    signer = Signer.from_settings(Settings(ota_ecdsa_key=str(path), ota_kid="e1"))
    job = signer.make_job("dev-1", "j1", "r1", MANIFEST)
    assert job["alg"] == "ecdsa-p256" and job["kid"] == "e1"
    key.public_key().verify(base64.b64decode(job["sig"]), MANIFEST, ec.ECDSA(hashes.SHA256()))  # DER
    pem = signer.public_pem()
    assert pem is not None
    assert Verifier(public_keys={"e1": load_public_key(pem)}).verify(job, "dev-1") == MANIFEST


def test_ecdsa_preferred_when_both_keys_are_configured(tmp_path: Path) -> None:
    path, _ = pem_key(tmp_path)
    both = Settings(ota_master_key=MASTER.hex(), ota_ecdsa_key=str(path))
    assert Signer.from_settings(both).alg == "ecdsa-p256"


@pytest.mark.parametrize("alg", ["hmac", "ecdsa"])
def test_tampered_wrong_key_wrong_kid_and_garbage_are_refused(tmp_path: Path, alg: str) -> None:
    if alg == "hmac":
        signer, other = Signer("k1", master_key=MASTER), Signer("k1", master_key=bytes(32))
    else:
        signer = Signer("k1", ecdsa_key=ec.generate_private_key(ec.SECP256R1()))
        other = Signer("k1", ecdsa_key=ec.generate_private_key(ec.SECP256R1()))
    v = signer.verifier("dev-1")
    job = signer.make_job("dev-1", "j1", "r1", MANIFEST)
    assert v.verify(job, "dev-1") == MANIFEST

    def refused(j: object, why: str, device: str = "dev-1", verifier: Verifier = v) -> None:
        with pytest.raises(SignatureError, match=why):
            verifier.verify(j, device)  # type: ignore[arg-type]

    tampered = dict(job, manifest=base64.b64encode(MANIFEST.replace(b"j1", b"j2")).decode())
    refused(tampered, "bad signature")
    refused(other.make_job("dev-1", "j1", "r1", MANIFEST), "bad signature")  # another fleet's key
    refused(dict(job, kid="k2"), "unknown kid")
    refused(dict(job, alg="none"), "unsupported alg")
    refused(dict(job, sig="!!not base64!!"), "base64")
    refused(dict(job, sig=""), "lacks")
    refused({"job_id": "j1"}, "kid")
    refused("not a job", "not an object")
    if alg == "hmac":
        # Signed for dev-2 with dev-2's key: dev-1's key does not verify it.
        refused(signer.make_job("dev-2", "j1", "r1", MANIFEST), "bad signature")
        refused(job, "bad signature", verifier=signer.verifier("dev-2"))
        refused(dict(job, alg="ecdsa-p256"), "unknown kid")  # no public key for that kid


def test_key_rotation_verifier_accepts_every_listed_kid() -> None:
    old = Signer("2025", master_key=MASTER)
    new = Signer("2026", ecdsa_key=ec.generate_private_key(ec.SECP256R1()))
    device = old.verifier("dev-1").merged(new.verifier("dev-1"))
    assert device.verify(old.make_job("dev-1", "a", "r", MANIFEST), "dev-1") == MANIFEST
    assert device.verify(new.make_job("dev-1", "b", "r", MANIFEST), "dev-1") == MANIFEST
    with pytest.raises(SignatureError, match="unknown kid"):
        device.verify(Signer("2027", master_key=MASTER).make_job("dev-1", "c", "r", MANIFEST), "dev-1")
    # A tool standing in for many devices holds master keys by kid and derives per device.
    fleet = Verifier(master_keys={"2025": MASTER})
    assert fleet.verify(old.make_job("dev-9", "a", "r", MANIFEST), "dev-9") == MANIFEST
    with pytest.raises(SignatureError):
        fleet.verify(old.make_job("dev-9", "a", "r", MANIFEST), "dev-1")


def test_bad_signing_configuration_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="FLEET_OTA_MASTER_KEY or FLEET_OTA_ECDSA_KEY"):
        Signer.from_settings(Settings())
    with pytest.raises(ConfigError, match=r"FLEET_OTA_ECDSA_KEY.*cannot read"):
        Signer.from_settings(Settings(ota_ecdsa_key=str(tmp_path / "missing.pem")))
    (tmp_path / "junk.pem").write_text("not a key")
    with pytest.raises(ConfigError, match=r"FLEET_OTA_ECDSA_KEY.*PEM"):
        Signer.from_settings(Settings(ota_ecdsa_key=str(tmp_path / "junk.pem")))
    p384, _ = pem_key(tmp_path, ec.SECP384R1())
    with pytest.raises(ConfigError, match="P-256"):
        Signer.from_settings(Settings(ota_ecdsa_key=str(p384)))
    with pytest.raises(ConfigError, match="FLEET_OTA_KID"):
        Signer.from_settings(Settings(ota_master_key=MASTER.hex(), ota_kid=""))
