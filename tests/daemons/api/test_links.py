"""Debug links and log batches, pure: the signing rule and the firmware's log payloads."""

from __future__ import annotations

import pytest

from daemons.api import links as debug_links
from daemons.api.debug import parse_logs
from daemons.protocol.errors import ConfigError


def test_log_payloads_firmware_batches_and_plain_text():
    assert parse_logs(b'{"lines": ["a", 2], "dropped": 1, "dropped_total": 9, "ts": 5, "x": 1}') == {
        "lines": ["a", "2"], "dropped": 1, "dropped_total": 9, "ts": 5}
    assert parse_logs(b"boot\r\nready\n") == {"lines": ["boot", "ready"]}
    assert parse_logs(b"{not json") == {"lines": ["{not json"]}
    assert parse_logs(b'{"lines": "a"}') is None
    assert parse_logs(b"") is None


def test_link_signature_covers_session_device_and_expiry():
    key = bytes(range(32))
    sid = debug_links.new_session_id()
    sig = debug_links.sign(key, sid, "dev-1", 2000)
    assert debug_links.verify(key, sid, "dev-1", "2000", sig, now=1000) is None
    assert debug_links.verify(key, sid, "dev-2", "2000", sig, now=1000) == "bad_signature"
    assert debug_links.verify(key, sid, "dev-1", "2001", sig, now=1000) == "bad_signature"
    other_sid = debug_links.new_session_id()
    assert debug_links.verify(key, other_sid, "dev-1", "2000", sig, now=1000) == "bad_signature"
    assert debug_links.verify(bytes(32), sid, "dev-1", "2000", sig, now=1000) == "bad_signature"
    assert debug_links.verify(key, sid, "dev-1", "2000", sig, now=2000) == "expired"
    assert debug_links.verify(key, sid, "dev-1", "2000", sig.upper(), now=1000) == "malformed"
    assert debug_links.verify(key, sid, "dev/1", "2000", sig, now=1000) == "malformed"
    assert debug_links.verify(key, sid, "dev-1", "-5", sig, now=1000) == "malformed"
    assert debug_links.verify(key, "x", "dev-1", "2000", sig, now=1000) == "malformed"
    path = debug_links.link_path(key, sid, "dev-1", 2000)
    assert path == f"/debug/{sid}?device=dev-1&expires=2000&sig={sig}"


def test_link_key_sources():
    dedicated = debug_links.link_key("11" * 32, "22" * 32)
    assert dedicated.source == "debug_link_key" and dedicated.key == bytes.fromhex("11" * 32)
    derived = debug_links.link_key(None, "22" * 32)
    assert derived.source == "ota_master_key" and len(derived.key) == 32
    assert derived.key != bytes.fromhex("22" * 32)
    assert derived == debug_links.link_key(None, "22" * 32)  # same master key, same links after a restart
    e1, e2 = debug_links.link_key(None, None), debug_links.link_key(None, None)
    assert e1.ephemeral and e1.key != e2.key
    with pytest.raises(ConfigError, match="FLEET_DEBUG_LINK_KEY"):
        debug_links.link_key("zz", None)
    with pytest.raises(ConfigError, match="FLEET_DEBUG_LINK_KEY"):
        debug_links.link_key("abcd", None)
