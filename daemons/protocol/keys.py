"""Key material: hex keys from configuration and HKDF derivations, in one place.

Every derived key is HKDF-SHA256 (RFC 5869) of a fleet master key with an `info` string naming its
use, so one secret serves several purposes without one use revealing another's key.
"""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MIN_KEY_BYTES = 16

#: info of the per-device broker password (development listener, amqtt plugin, simulator).
DEVICE_PASSWORD_INFO = b"fleet-device-password-v1:"


class KeyError_(ValueError):
    """A key that is not hex, or shorter than MIN_KEY_BYTES; the message never holds the key."""


def parse_hex_key(value: str, *, min_bytes: int = MIN_KEY_BYTES) -> bytes:
    """Decode a hex key of at least `min_bytes` bytes.

    Raises KeyError_ (a ValueError) when `value` is not hex or is too short.
    """
    try:
        key = bytes.fromhex(value.strip())
    except ValueError:
        raise KeyError_("not a hex string") from None
    if len(key) < min_bytes:
        raise KeyError_(f"shorter than {min_bytes} bytes")
    return key


def derive(master: bytes, info: bytes, length: int = 32) -> bytes:
    """HKDF-SHA256 (RFC 5869) of `master` with an empty salt: `length` bytes for the use `info`."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(master)


def device_password(secret: bytes, device_id: str) -> str:
    """The broker password of one device: 32 url-safe characters derived from the fleet secret.

    A broker (the amqtt plugin) or `fleetctl creds` recomputes it from the id, so no file per device
    is needed. The id must already be valid (PROTOCOL §0).
    """
    raw = derive(secret, DEVICE_PASSWORD_INFO + device_id.encode(), 24)
    return base64.urlsafe_b64encode(raw).decode()
