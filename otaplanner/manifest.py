"""The OTA manifest of PROTOCOL §3: the exact bytes a job's signature covers.

Compact JSON with the keys in the contract's order, so the same inputs always give the same
bytes (a redelivered or re-issued job is byte-identical, and devices compare bytes).
"""

from __future__ import annotations

import json
import re
from typing import Any

from daemons.protocol.messages import valid_device_id

FIELDS = ("device_id", "job_id", "version", "hw", "url", "sha256", "size", "secure_version",
          "issued_at", "expires_at")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
MAX_MANIFEST = 4096  # a manifest is a few hundred bytes; anything far larger is not one


class ManifestError(ValueError):
    """The bytes are not a valid §3 manifest; the message says why."""


def build_manifest(device_id: str, job_id: str, version: str, hw: str, url: str, sha256: str, size: int,
                   secure_version: int, issued_at: int, expires_at: int) -> bytes:
    body = {"device_id": device_id, "job_id": job_id, "version": version, "hw": hw, "url": url,
            "sha256": sha256, "size": size, "secure_version": secure_version,
            "issued_at": issued_at, "expires_at": expires_at}
    _check(body)
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def parse_manifest(data: bytes) -> dict[str, Any]:
    """Decode and validate; raises ManifestError on anything that is not a §3 manifest (and
    nothing else, whatever the bytes)."""
    if not isinstance(data, bytes | bytearray) or len(data) > MAX_MANIFEST:
        raise ManifestError("manifest missing or too large")
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ManifestError("manifest is not JSON") from None
    except RecursionError:  # 4 KiB of `[` nest deeper than json's C decoder recurses (make fuzz)
        raise ManifestError("manifest is nested too deeply") from None
    if not isinstance(body, dict):
        raise ManifestError("manifest is not a JSON object")
    _check(body)
    return body


def _check(body: dict[str, Any]) -> None:
    missing = [k for k in FIELDS if k not in body]
    if missing:
        raise ManifestError(f"manifest lacks {missing[0]!r}")
    for k in ("job_id", "version", "hw", "url"):
        if not isinstance(body[k], str) or not body[k]:
            raise ManifestError(f"manifest {k!r} must be a non-empty string")
    if not valid_device_id(body["device_id"]):
        raise ManifestError("manifest 'device_id' is not a valid device id")
    if not isinstance(body["sha256"], str) or not SHA256_RE.fullmatch(body["sha256"]):
        raise ManifestError("manifest 'sha256' must be 64 lower-case hex digits")
    for k in ("size", "secure_version", "issued_at", "expires_at"):
        v = body[k]
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ManifestError(f"manifest {k!r} must be a non-negative integer")
    if body["expires_at"] <= body["issued_at"]:
        raise ManifestError("manifest expires before it is issued")
    if not body["url"].startswith(("http://", "https://")):
        raise ManifestError("manifest 'url' must be http(s)")
