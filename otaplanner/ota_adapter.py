"""TEMPORARY stand-ins for the manifest/signing/artifact modules until they land (OTA part A).

Used only when those modules are missing; removed once they exist.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def build_manifest(**fields: Any) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


class Signer:
    def __init__(self, master: bytes, kid: str) -> None:
        self.master = master
        self.kid = kid

    @classmethod
    def from_settings(cls, settings: Any) -> Signer:
        return cls(bytes.fromhex(settings.ota_master_key), settings.ota_kid)

    def make_job(self, device_id: str, job_id: str, rollout_id: str, manifest: bytes) -> dict[str, Any]:
        key = HKDF(hashes.SHA256(), 32, b"", b"fleet-ota-v1:" + device_id.encode()).derive(self.master)
        sig = hmac.new(key, manifest, hashlib.sha256).digest()
        return {"job_id": job_id, "rollout_id": rollout_id, "alg": "hmac-sha256", "kid": self.kid,
                "manifest": base64.b64encode(manifest).decode(), "sig": base64.b64encode(sig).decode()}


class LocalStore:
    def __init__(self, root: str, port: int) -> None:
        self.root = root
        self.port = port

    def stat(self, name: str) -> int | None:
        path = os.path.join(self.root, name)
        return os.path.getsize(path) if os.path.isfile(path) else None

    def presign_get(self, name: str, expires_s: int) -> str:
        return f"http://127.0.0.1:{self.port}/{name}?exp={int(time.time()) + expires_s}"


def store_from_settings(settings: Any) -> LocalStore:
    return LocalStore(settings.artifact_store[len("local:"):], settings.artifact_http_port)


def serve_local_store(store: Any, host: str, port: int) -> Any:
    return None
