"""Signed, expiring links to a device's live log page (PROTOCOL §4). Pure: no I/O.

A link is `<base>/debug/<session_id>?device=<id>&expires=<epoch>&sig=<hex>` (its WebSocket adds
`/ws` to the path), with `sig` the HMAC-SHA256 of (session_id, device_id, expires_at).
Checking a link needs no session state: any process holding the key can check a link, and a
changed field, another device's id or a past expiry fails the check.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from urllib.parse import quote

from daemons.protocol.keys import DEBUG_LINK_INFO, derive, setting_key
from daemons.protocol.messages import valid_device_id

SESSION_ID_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


@dataclass(frozen=True)
class LinkKey:
    key: bytes
    source: str  # "debug_link_key", "ota_master_key" or "ephemeral"

    @property
    def ephemeral(self) -> bool:
        return self.source == "ephemeral"


def link_key(debug_link_key: str | None, ota_master_key: str | None) -> LinkKey:
    """The signing key: the dedicated one, else derived from the OTA master key, else random."""
    dedicated = setting_key("debug_link_key", debug_link_key or None)
    if dedicated is not None:
        return LinkKey(dedicated, "debug_link_key")
    master = setting_key("ota_master_key", ota_master_key or None)
    if master is not None:
        # A separate key per purpose: a debug link never reveals anything about OTA keys.
        return LinkKey(derive(master, DEBUG_LINK_INFO), "ota_master_key")
    return LinkKey(secrets.token_bytes(32), "ephemeral")


def new_session_id() -> str:
    return secrets.token_urlsafe(18)  # 24 URL-safe characters, 144 random bits


def _mac(key: bytes, session_id: str, device_id: str, expires_at: int) -> str:
    # Fields joined by NUL, which none of them can contain: no two tuples share a message.
    message = b"\x00".join((session_id.encode(), device_id.encode(), str(expires_at).encode()))
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def sign(key: bytes, session_id: str, device_id: str, expires_at: int) -> str:
    return _mac(key, session_id, device_id, expires_at)


def link_path(key: bytes, session_id: str, device_id: str, expires_at: int) -> str:
    """Path and query of the page (the WebSocket is the same with `/ws` after the session id)."""
    sig = sign(key, session_id, device_id, expires_at)
    return f"/debug/{session_id}?device={quote(device_id, safe='')}&expires={expires_at}&sig={sig}"


def verify(key: bytes, session_id: str, device_id: str, expires: str, sig: str, now: float) -> str | None:
    """None when the link is good; otherwise a short reason (a bounded metric label)."""
    if not SESSION_ID_RE.fullmatch(session_id) or not valid_device_id(device_id):
        return "malformed"
    if not re.fullmatch(r"[0-9]{1,12}", expires) or not re.fullmatch(r"[0-9a-f]{64}", sig):
        return "malformed"
    expected = _mac(key, session_id, device_id, int(expires))
    if not hmac.compare_digest(expected, sig):
        return "bad_signature"
    if int(expires) <= now:
        return "expired"
    return None
