"""S3Store against s3rver, an S3-protocol server over HTTP that checks pre-signed URLs itself.

The refusals asserted here come from the server's own SigV4 and expiry checks, not from a layer
of ours (the moto tests in test_artifacts.py rely on tests/otaplanner/s3_server.py for that).
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
import time
from pathlib import Path

import pytest
from minio.error import S3Error

from daemons.runtime.config import Settings
from otaplanner.artifacts import S3Store, store_from_settings
from tests.otaplanner.s3rver import S3rver, s3rver
from tests.support import http_get

__all__ = ["s3rver"]

DATA = secrets.token_bytes(100_000)
NAME = "fw/2.1.0+b7/app.bin"  # '+' and '/' must survive signing and the server's canonical form


fetch = http_get


def error_code(body: bytes) -> str:
    m = re.search(rb"<Code>([^<]*)</Code>", body)
    return m.group(1).decode() if m else body[:200].decode(errors="replace")


def make_store(s3: S3rver, secret_key: str | None = None, bucket: str | None = None) -> S3Store:
    store = store_from_settings(Settings(
        artifact_store=f"s3://{bucket or 'fw-' + secrets.token_hex(4)}/releases", s3_endpoint=s3.endpoint,
        s3_access_key=s3.access_key, s3_secret_key=secret_key or s3.secret_key, s3_region=s3.region))
    assert isinstance(store, S3Store)
    return store


@pytest.fixture
def store(s3rver: S3rver, tmp_path: Path) -> S3Store:
    store = make_store(s3rver)
    store.ensure_bucket()
    src = tmp_path / "app.bin"
    src.write_bytes(DATA)
    store.put(NAME, src)
    return store


def test_put_stat_and_presigned_get_with_range(s3rver: S3rver, store: S3Store) -> None:
    assert store.stat(NAME) == len(DATA)
    assert store.stat("fw/9.9.9/app.bin") is None
    assert make_store(s3rver, bucket="no-such-bucket").stat(NAME) is None
    assert store.client.stat_object(store.bucket, f"releases/{NAME}").size == len(DATA)
    url = store.presign_get(NAME, 300)
    assert url.startswith(f"{s3rver.endpoint}/{store.bucket}/releases/") and "X-Amz-Expires=300" in url
    status, body, _ = fetch(url)
    assert status == 200 and hashlib.sha256(body).digest() == hashlib.sha256(DATA).digest()
    status, body, headers = fetch(url, "bytes=99990-")  # a device resuming a download
    assert status == 206 and body == DATA[99990:]
    assert headers["Content-Range"] == f"bytes 99990-99999/{len(DATA)}"


def test_server_refuses_a_url_once_it_has_expired(store: S3Store) -> None:
    signed_at = time.time()
    url = store.presign_get(NAME, 2)
    # X-Amz-Date has whole seconds: the URL is valid until floor(signed_at) + 2, at least 1 s from now.
    expires_at = math.floor(signed_at) + 2
    status, body, _ = fetch(url)
    assert status == 200 and body == DATA
    deadline = time.monotonic() + 10
    while (status := fetch(url)[0]) == 200 and time.monotonic() < deadline:
        time.sleep(0.1)  # no event to wait for: the server decides by its clock
    refused_at = time.time()
    status, body, _ = fetch(url)
    assert status == 403 and error_code(body) == "AccessDenied" and b"Request has expired" in body
    assert refused_at >= expires_at - 0.05, "refused before its expiry: not an expiry check"
    # Signed long ago with a lifetime that has run out: refused the same way, no wait needed.
    status, body, _ = fetch(store.presign_get(NAME, 60, now=time.time() - 120))
    assert status == 403 and b"Request has expired" in body


def test_server_refuses_tampered_and_forged_urls(s3rver: S3rver, store: S3Store, tmp_path: Path) -> None:
    url = store.presign_get(NAME, 60)
    sig = re.search(r"X-Amz-Signature=([0-9a-f]{64})", url)
    assert sig is not None
    flipped = url.replace(sig.group(1), format(int(sig.group(1)[0], 16) ^ 1, "x") + sig.group(1)[1:])
    longer = url.replace("X-Amz-Expires=60", "X-Amz-Expires=604800")
    other_object = url.replace("/app.bin?", "/app2.bin?")
    forged = make_store(s3rver, secret_key="not-the-secret", bucket=store.bucket).presign_get(NAME, 60)
    for bad in (flipped, longer, other_object, forged):
        status, body, _ = fetch(bad)
        assert (status, error_code(body)) == (403, "SignatureDoesNotMatch"), bad
    # Header-signed requests are checked too: a wrong secret cannot upload.
    (tmp_path / "evil.bin").write_bytes(b"evil")
    with pytest.raises(S3Error) as exc:
        make_store(s3rver, secret_key="not-the-secret", bucket=store.bucket).put(NAME, tmp_path / "evil.bin")
    assert exc.value.code == "SignatureDoesNotMatch"
    assert fetch(url)[0] == 200  # the untouched URL still works
