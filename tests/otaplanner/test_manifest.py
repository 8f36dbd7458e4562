"""The manifest bytes of PROTOCOL §3: exact keys and order, compact, strict parsing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from otaplanner.manifest import FIELDS, ManifestError, build_manifest, parse_manifest

GOOD: dict[str, Any] = {
    "device_id": "dev-1", "job_id": "j1", "version": "2.0.0", "hw": "c3",
    "url": "https://fw.example.net/app.bin?expires=1&sig=ab", "sha256": "ab" * 32, "size": 1024,
    "secure_version": 2, "issued_at": 1_700_000_000, "expires_at": 1_700_003_600}


def test_build_is_compact_json_with_the_contract_keys_in_order() -> None:
    data = build_manifest(**GOOD)
    assert b" " not in data and list(json.loads(data)) == list(FIELDS)
    assert data == build_manifest(**GOOD)  # deterministic: a re-issued job is byte-identical
    assert parse_manifest(data) == GOOD


@pytest.mark.parametrize("change, why", [
    ({"device_id": "a/b"}, "device id"),
    ({"device_id": "+"}, "device id"),
    ({"sha256": "xyz"}, "sha256"),
    ({"size": -1}, "size"),
    ({"size": True}, "size"),
    ({"secure_version": "1"}, "secure_version"),
    ({"expires_at": 1_600_000_000}, "expires before"),
    ({"url": "ftp://x/y"}, "url"),
    ({"hw": ""}, "hw"),
    ({"version": 2}, "version"),
])
def test_invalid_manifests_are_refused(change: dict[str, Any], why: str) -> None:
    with pytest.raises(ManifestError, match=why):
        parse_manifest(json.dumps({**GOOD, **change}).encode())
    with pytest.raises(ManifestError):
        build_manifest(**{**GOOD, **change})


@pytest.mark.parametrize("data, why", [
    (b"not json", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b"\xff\xfe", "not JSON"),
    (b"{}", "lacks 'device_id'"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "expires_at"}).encode(), "lacks 'expires_at'"),
    (b"{" + b" " * 5000 + b"}", "too large"),
    # Found by `make fuzz`: 1,200 levels fit in 4 KiB and raised RecursionError out of json.loads.
    (b'{"a":' + b"[" * 1200 + b"]" * 1200 + b"}", "nested too deeply"),
])
def test_garbage_is_refused(data: bytes, why: str) -> None:
    with pytest.raises(ManifestError, match=why):
        parse_manifest(data)
