"""Key material: hex keys from configuration and HKDF derivations, in one place.

Every derived key is HKDF-SHA256 (RFC 5869) of a fleet master key with an `info` string naming its
use, so one secret serves several purposes without one use revealing another's key.
"""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from daemons.protocol.errors import ConfigError

MIN_KEY_BYTES = 16

# The `info` of every derivation, one per use (a key derived for one never serves another).
#: the per-device broker password (development listener, amqtt plugin, simulator); + device id.
DEVICE_PASSWORD_INFO = b"fleet-device-password-v1:"
#: the per-device OTA job HMAC key (PROTOCOL §3); + device id.
OTA_DEVICE_INFO = b"fleet-ota-v1:"
#: the URL-signing key of the planner's local artifact store.
ARTIFACT_URL_INFO = b"fleet-artifact-url-v1"
#: the signing key of remote-debug links.
DEBUG_LINK_INFO = b"fleet-debug-link-v1"


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


def setting_key(field_name: str, value: str | None, *, min_bytes: int = MIN_KEY_BYTES) -> bytes | None:
    """The hex key of a settings field (e.g. `ota_master_key`), None when it is not set.

    Raises ConfigError naming the variable (`FLEET_OTA_MASTER_KEY (ota_master_key): ...`), never the key.
    """
    if value is None:
        return None
    try:
        return parse_hex_key(value, min_bytes=min_bytes)
    except KeyError_ as exc:
        raise ConfigError.of(field_name, str(exc)) from None


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
