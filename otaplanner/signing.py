"""Signing OTA jobs (PROTOCOL §3) and verifying them on the device side.

Two algorithms:
- `hmac-sha256`: HMAC keyed with the device's own key, HKDF-SHA256(master, salt = empty,
  info = "fleet-ota-v1:" + device id, 32 bytes). A device holds only its own key, so a device that
  leaks its key can forge jobs for itself and nobody else.
- `ecdsa-p256`: DER ECDSA/SHA-256 by the fleet signing key; devices hold only the public key.

When both a master key and an ECDSA key are configured the signer uses ECDSA: it is the stronger
choice (nothing on a device can sign) and configuring it is an explicit act of the operator.
`kid` names the key; a Verifier accepts several kids so keys can rotate without a flag day.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from daemons.protocol.errors import ConfigError
from daemons.protocol.keys import OTA_DEVICE_INFO, derive, setting_key

HMAC_ALG = "hmac-sha256"
ECDSA_ALG = "ecdsa-p256"
INFO_PREFIX = OTA_DEVICE_INFO
KID_MAX = 64


class SignatureError(ValueError):
    """A job whose signature (or its framing: alg, kid, base64) does not verify."""


def ota_device_key(master_key: bytes, device_id: str) -> bytes:
    """The per-device HMAC key: HKDF-SHA256(master, salt=b"", info="fleet-ota-v1:"+id, 32)."""
    return derive(master_key, INFO_PREFIX + device_id.encode())


def load_private_key(path: str | Path) -> ec.EllipticCurvePrivateKey:
    """A PEM P-256 private key; ConfigError naming the setting when it is anything else."""
    where = f"FLEET_OTA_ECDSA_KEY (ota_ecdsa_key) {path}"
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read: {exc.strerror}") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ConfigError(f"{where}: not a P-256 (secp256r1) EC key")
    return key


def load_public_key(pem: bytes) -> ec.EllipticCurvePublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValueError("not a P-256 public key")
    return key


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass(frozen=True)
class Signer:
    """Signs manifests for any device with one key, named `kid`."""

    kid: str
    master_key: bytes | None = None
    ecdsa_key: ec.EllipticCurvePrivateKey | None = None

    def __post_init__(self) -> None:
        if self.master_key is None and self.ecdsa_key is None:
            raise ConfigError("FLEET_OTA_MASTER_KEY or FLEET_OTA_ECDSA_KEY is required to sign jobs")
        if not self.kid or len(self.kid) > KID_MAX:
            raise ConfigError(f"FLEET_OTA_KID (ota_kid): must be 1..{KID_MAX} characters")

    @property
    def alg(self) -> str:
        return ECDSA_ALG if self.ecdsa_key is not None else HMAC_ALG

    @classmethod
    def from_settings(cls, settings: Any) -> Signer:
        master = setting_key("ota_master_key", settings.ota_master_key or None)
        key = load_private_key(settings.ota_ecdsa_key) if settings.ota_ecdsa_key else None
        return cls(kid=settings.ota_kid, master_key=master, ecdsa_key=key)

    def sign(self, device_id: str, manifest: bytes) -> dict[str, str]:
        if self.ecdsa_key is not None:
            sig = self.ecdsa_key.sign(manifest, ec.ECDSA(hashes.SHA256()))
        else:
            assert self.master_key is not None
            sig = hmac.new(ota_device_key(self.master_key, device_id), manifest, hashlib.sha256).digest()
        return {"alg": self.alg, "kid": self.kid, "sig": _b64(sig)}

    def make_job(self, device_id: str, job_id: str, rollout_id: str, manifest: bytes) -> dict[str, Any]:
        """The full §3 job payload for `{p}/{id}/ota/job`."""
        signed = self.sign(device_id, manifest)
        return {"job_id": job_id, "rollout_id": rollout_id, "alg": signed["alg"], "kid": signed["kid"],
                "manifest": _b64(manifest), "sig": signed["sig"]}

    def public_pem(self) -> bytes | None:
        if self.ecdsa_key is None:
            return None
        return self.ecdsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def verifier(self, device_id: str) -> Verifier:
        """What one device holds for this signer: its own HMAC key, or the public key."""
        if self.ecdsa_key is not None:
            return Verifier(public_keys={self.kid: self.ecdsa_key.public_key()})
        assert self.master_key is not None
        return Verifier(device_keys={self.kid: ota_device_key(self.master_key, device_id)})


@dataclass(frozen=True)
class Verifier:
    """The device side: keys by kid. `device_keys` are this device's own HMAC keys;
    `master_keys` (for tools and tests that stand in for many devices) derive them per device."""

    device_keys: Mapping[str, bytes] = field(default_factory=dict)
    public_keys: Mapping[str, ec.EllipticCurvePublicKey] = field(default_factory=dict)
    master_keys: Mapping[str, bytes] = field(default_factory=dict)

    def verify(self, job: Mapping[str, Any], device_id: str) -> bytes:
        """The manifest bytes of a job whose signature verifies; SignatureError otherwise."""
        if not isinstance(job, Mapping):
            raise SignatureError("job is not an object")
        alg, kid = job.get("alg"), job.get("kid")
        if not isinstance(kid, str):
            raise SignatureError("job has no kid")
        try:
            manifest = base64.b64decode(str(job.get("manifest", "")), validate=True)
            sig = base64.b64decode(str(job.get("sig", "")), validate=True)
        except (binascii.Error, ValueError):
            raise SignatureError("manifest or sig is not base64") from None
        if not manifest or not sig:
            raise SignatureError("job lacks manifest or sig")
        if alg == HMAC_ALG:
            key = self.device_keys.get(kid)
            if key is None and kid in self.master_keys:
                key = ota_device_key(self.master_keys[kid], device_id)
            if key is None:
                raise SignatureError(f"unknown kid {kid!r} for {HMAC_ALG}")
            expected = hmac.new(key, manifest, hashlib.sha256).digest()
            if not hmac.compare_digest(expected, sig):
                raise SignatureError("bad signature")
            return manifest
        if alg == ECDSA_ALG:
            public = self.public_keys.get(kid)
            if public is None:
                raise SignatureError(f"unknown kid {kid!r} for {ECDSA_ALG}")
            try:
                public.verify(sig, manifest, ec.ECDSA(hashes.SHA256()))
            except (InvalidSignature, ValueError):
                raise SignatureError("bad signature") from None
            return manifest
        raise SignatureError(f"unsupported alg {alg!r}")

    def merged(self, other: Verifier) -> Verifier:
        """Both key sets: a device during a key rotation."""
        return Verifier({**self.device_keys, **other.device_keys}, {**self.public_keys, **other.public_keys},
                        {**self.master_keys, **other.master_keys})
