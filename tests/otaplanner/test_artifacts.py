"""Artifact stores: the local store over its real HTTP server, and S3 against a real S3-protocol server."""

from __future__ import annotations

import hashlib
import secrets
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from daemons.protocol.errors import ConfigError
from daemons.runtime.config import Settings
from otaplanner.artifacts import (
    ArtifactError,
    LocalStore,
    S3Store,
    local_key,
    release_object,
    store_from_settings,
    valid_name,
)
from tests.otaplanner.artifact_env import Served, served
from tests.otaplanner.s3_server import S3, s3_server
from tests.support import http_get

__all__ = ["s3_server", "served"]

DATA = secrets.token_bytes(100_000)


fetch = http_get


# -- local store ----------------------------------------------------------------------------------

def test_local_signed_url_serves_the_file_whole_and_by_range(served: Served) -> None:
    served.add("fw/2.0.0/app.bin", DATA)
    assert served.store.stat("fw/2.0.0/app.bin") == len(DATA) and served.store.stat("nope.bin") is None
    url = served.store.presign_get("fw/2.0.0/app.bin", 60)
    status, body, headers = fetch(url)
    assert status == 200 and body == DATA and headers["Accept-Ranges"] == "bytes"
    status, body, headers = fetch(url, "bytes=40000-")
    assert status == 206 and body == DATA[40000:]
    assert headers["Content-Range"] == f"bytes 40000-99999/{len(DATA)}"
    status, body, _ = fetch(url, "bytes=10-19")
    assert status == 206 and body == DATA[10:20]
    status, body, _ = fetch(url, "bytes=-5")
    assert status == 206 and body == DATA[-5:]
    status, _, headers = fetch(url, f"bytes={len(DATA)}-")
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(DATA)}"


def test_local_expired_tampered_and_unsigned_urls_are_refused(served: Served) -> None:
    served.add("a.bin", DATA)
    served.add("b.bin", b"other")
    expired = served.store.presign_get("a.bin", 60, now=time.time() - 61)
    assert fetch(expired)[0] == 403
    good = served.store.presign_get("a.bin", 60)
    q = parse_qs(urlsplit(good).query)
    base = served.store.base_url
    later = int(q["expires"][0]) + 3600  # stretching the expiry breaks the signature
    assert fetch(f"{base}/a.bin?expires={later}&sig={q['sig'][0]}")[0] == 403
    assert fetch(f"{base}/b.bin?expires={q['expires'][0]}&sig={q['sig'][0]}")[0] == 403  # another object
    assert fetch(f"{base}/a.bin")[0] == 403
    assert fetch(f"{base}/.url-key?expires={q['expires'][0]}&sig={q['sig'][0]}")[0] == 403
    other = LocalStore(served.root, base, b"another key, another fleet......")
    assert fetch(other.presign_get("a.bin", 60))[0] == 403
    assert fetch(good)[0] == 200


def test_local_signed_name_without_file_is_404(served: Served) -> None:
    assert fetch(served.store.presign_get("gone.bin", 60))[0] == 404


def test_object_names_that_escape_the_store_are_refused(served: Served, tmp_path: Path) -> None:
    src = tmp_path / "x.bin"
    src.write_bytes(b"x")
    for bad in ("../x.bin", "/etc/passwd", ".hidden", "a//b", "a/../b", ""):
        with pytest.raises(ArtifactError):
            served.store.put(bad, src)
        assert served.store.stat(bad) is None


def test_local_store_from_settings_key_is_shared_by_processes(tmp_path: Path) -> None:
    # Without a master key, a random key is kept in the store: the planner and fleetctl agree.
    settings = Settings(artifact_store=f"local:{tmp_path}/store", artifact_http_port=8123)
    a, b = store_from_settings(settings), store_from_settings(settings)
    assert isinstance(a, LocalStore) and isinstance(b, LocalStore)
    assert a.key == b.key and len(a.key) == 32 and (tmp_path / "store/.url-key").stat().st_mode & 0o077 == 0
    assert a.presign_get("x.bin", 60).startswith("http://127.0.0.1:8123/x.bin?expires=")
    # With a master key the URL key derives from it (and differs from it).
    master = "11" * 32
    keyed = store_from_settings(Settings(artifact_store=f"local:{tmp_path}/other", ota_master_key=master,
                                         artifact_public_url="https://fw.example.net/"))
    assert isinstance(keyed, LocalStore)
    assert keyed.key == local_key(tmp_path, master) and keyed.key != bytes.fromhex(master)
    assert keyed.presign_get("x.bin", 60).startswith("https://fw.example.net/x.bin?")


# -- S3 ------------------------------------------------------------------------------------------

def s3_store(s3: S3, prefix: str = "releases") -> S3Store:
    store = store_from_settings(Settings(
        artifact_store=f"s3://fw-{secrets.token_hex(4)}/{prefix}", s3_endpoint=s3.endpoint,
        s3_access_key=s3.access_key, s3_secret_key=s3.secret_key, s3_region=s3.region))
    assert isinstance(store, S3Store)
    store.ensure_bucket()
    return store


def test_s3_put_stat_and_presigned_get_with_range(s3_server: S3, tmp_path: Path) -> None:
    store = s3_store(s3_server)
    src = tmp_path / "app.bin"
    src.write_bytes(DATA)
    store.put("fw/2.0.0/app.bin", src)
    assert store.stat("fw/2.0.0/app.bin") == len(DATA) and store.stat("fw/9.9.9/app.bin") is None
    host = s3_server.endpoint.removeprefix("http://")
    no_bucket = S3Store(host, s3_server.access_key, s3_server.secret_key, s3_server.region, "no-such-bucket",
                        secure=False)
    assert no_bucket.stat("fw/2.0.0/app.bin") is None
    # The object lives under the prefix of the store URL.
    assert store.client.stat_object(store.bucket, "releases/fw/2.0.0/app.bin").size == len(DATA)
    url = store.presign_get("fw/2.0.0/app.bin", 300)
    assert url.startswith(s3_server.endpoint) and "X-Amz-Expires=300" in url
    status, body, _ = fetch(url)
    assert status == 200 and hashlib.sha256(body).digest() == hashlib.sha256(DATA).digest()
    status, body, headers = fetch(url, "bytes=99990-")
    assert status == 206 and body == DATA[99990:]
    assert headers["Content-Range"] == f"bytes 99990-99999/{len(DATA)}"


def test_s3_expired_and_tampered_presigned_urls_are_refused(s3_server: S3, tmp_path: Path) -> None:
    store = s3_store(s3_server)
    src = tmp_path / "app.bin"
    src.write_bytes(DATA)
    store.put("app.bin", src)
    expired = store.presign_get("app.bin", 60, now=time.time() - 120)
    status, body, _ = fetch(expired)
    assert status == 403 and b"Request has expired" in body
    good = store.presign_get("app.bin", 60)
    assert fetch(good.replace("X-Amz-Expires=60", "X-Amz-Expires=604800"))[0] == 403
    assert fetch(good.replace("/app.bin?", "/app.bin2?"))[0] == 403
    assert fetch(good)[0] == 200


def test_s3_settings_errors_name_the_variable() -> None:
    with pytest.raises(ConfigError, match="FLEET_S3_ENDPOINT"):
        store_from_settings(Settings(artifact_store="s3://bucket/fw"))
    with pytest.raises(ConfigError, match="FLEET_S3_ENDPOINT"):
        store_from_settings(Settings(artifact_store="s3://bucket/fw", s3_endpoint="ftp://host"))
    with pytest.raises(ConfigError, match="FLEET_ARTIFACT_STORE"):
        store_from_settings(Settings(artifact_store="s3:///fw", s3_endpoint="http://h:9000"))


@pytest.mark.parametrize(("version", "filename", "expected"), [
    ("2.0.0", "app.bin", "firmware/2.0.0/app.bin"),
    ("2.0.0", None, "firmware/2.0.0/firmware.bin"),
    ("2.0.0", "my app.bin", "firmware/2.0.0/firmware.bin"),
    ("2.0.0", "../../etc/passwd", "firmware/2.0.0/passwd"),
    ("2.0.0", ".url-key", "firmware/2.0.0/firmware.bin"),
])
def test_release_object_keeps_plain_versions_and_file_names(version, filename, expected) -> None:
    assert release_object(version, filename) == expected


def test_release_object_names_every_version_apart() -> None:
    versions = ["Y..", "Y__", "1:0", "1_0", "...", "a..b", "a__b", "x" * 64]
    names = [release_object(v, "fw.bin") for v in versions]
    assert all(valid_name(n) for n in names), names
    assert len(set(names)) == len(versions), names
