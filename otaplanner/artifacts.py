"""Artifact stores for firmware binaries (PROTOCOL §3, §7): one small interface, two stores.

- LocalStore: files under a directory, served by otaplanner.artifact_http (Starlette) with HMAC-signed,
  expiring URLs `{base_url}/{name}?expires=E&sig=S`, for development.
- S3Store: any S3-protocol service (AWS S3, Cloudflare R2, MinIO) through the `minio` client,
  with its own pre-signed GET URLs.
Devices download the same way from both: a plain GET (with Range to resume) of an expiring URL.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlencode, urlparse

from daemons.protocol.errors import ConfigError
from daemons.protocol.keys import ARTIFACT_URL_INFO, derive, setting_key

# Object names: path segments of safe characters; no hidden files (the URL key lives in one).
NAME_RE = re.compile(r"^(?:[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}/){0,7}[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}$")
KEY_FILE = ".url-key"
MAX_EXPIRES_S = 7 * 24 * 3600  # the S3 protocol's own limit for pre-signed URLs


class ArtifactError(Exception):
    """An object name, file or store that cannot be used; the message says which."""


class ArtifactStore(Protocol):
    def put(self, name: str, path: Path) -> None: ...

    def stat(self, name: str) -> int | None:
        """The size, None when there is no such object; raises when the store cannot be asked."""
        ...

    def presign_get(self, name: str, expires_s: int) -> str: ...


def valid_name(name: object) -> bool:
    return isinstance(name, str) and NAME_RE.fullmatch(name) is not None and ".." not in name


def release_object(version: str, filename: str | None) -> str:
    """The object name a release's image is stored under: `firmware/<version>/<file name>`.

    Any version (PROTOCOL §3: the device-id alphabet, `:` and `.` runs included) gets a valid name:
    a version that cannot be a path segment as it is (`1:2`, `Y..`) has those characters replaced
    by `_`, a `_` put first and a digest of the version appended, so two versions never share an
    object. A file name that cannot be one (spaces, `..`, a hidden file) becomes `firmware.bin`.
    """
    segment = version.replace(":", "_")
    if ".." in segment or segment != version or not valid_name(segment):
        cleaned = re.sub(r"[^A-Za-z0-9_.+-]", "_", segment).replace(".", "_")
        segment = f"_{cleaned[:100]}-{hashlib.sha256(version.encode()).hexdigest()[:12]}"
    base = Path(filename or "firmware.bin").name
    name = f"firmware/{segment}/{base}"
    return name if valid_name(name) else f"firmware/{segment}/firmware.bin"


def sha256_file(path: Path) -> tuple[str, int]:
    """Hex digest and size, streamed (firmware images are megabytes)."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 16):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _check_expiry(expires_s: int) -> None:
    if not 1 <= expires_s <= MAX_EXPIRES_S:
        raise ArtifactError(f"URL lifetime must be 1..{MAX_EXPIRES_S} s, got {expires_s}")


class LocalStore:
    """Files under `root`; URLs signed with HMAC-SHA256 over (name, expiry) by `key`."""

    def __init__(self, root: Path, base_url: str, key: bytes) -> None:
        self.root = Path(root)
        self.base_url = base_url.rstrip("/")
        self.key = key

    def path(self, name: str) -> Path:
        if not valid_name(name):
            raise ArtifactError(f"invalid object name {name!r}")
        return self.root / name

    def put(self, name: str, path: Path) -> None:
        target = self.path(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            shutil.copyfile(path, tmp)
            os.replace(tmp, target)  # readers never see a half-written image
        finally:
            tmp.unlink(missing_ok=True)

    def stat(self, name: str) -> int | None:
        if not valid_name(name):
            return None
        try:
            st = (self.root / name).stat()
        except OSError:
            return None
        return st.st_size if os.path.isfile(self.root / name) else None

    def signature(self, name: str, expires: int) -> str:
        msg = f"GET\n{name}\n{expires}".encode()
        return hmac.new(self.key, msg, hashlib.sha256).hexdigest()

    def presign_get(self, name: str, expires_s: int, now: float | None = None) -> str:
        _check_expiry(expires_s)
        if not valid_name(name):
            raise ArtifactError(f"invalid object name {name!r}")
        expires = int(time.time() if now is None else now) + expires_s
        query = urlencode({"expires": expires, "sig": self.signature(name, expires)})
        return f"{self.base_url}/{quote(name)}?{query}"

    def check(self, name: str, expires: str | None, sig: str | None, now: float | None = None) -> bool:
        """True when (name, expires, sig) is a URL this store signed and it has not expired."""
        if not valid_name(name) or not expires or not sig or not expires.isdigit():
            return False
        if int(expires) < (time.time() if now is None else now):
            return False
        return hmac.compare_digest(self.signature(name, int(expires)), sig)


class S3Store:
    """Objects `{prefix}{name}` in one bucket of an S3-protocol service."""

    def __init__(self, endpoint: str, access_key: str | None, secret_key: str | None, region: str,
                 bucket: str, prefix: str = "", secure: bool = True) -> None:
        import urllib3
        from minio import Minio

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        # Bounded waits: a store that does not answer must not hold a daemon's loop for minutes.
        http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=5, read=30), maxsize=10,
                                   retries=urllib3.Retry(total=3, backoff_factor=0.2,
                                                         status_forcelist=[500, 502, 503, 504]))
        self.client = Minio(endpoint, access_key=access_key, secret_key=secret_key, region=region,
                            secure=secure, http_client=http)

    def key(self, name: str) -> str:
        if not valid_name(name):
            raise ArtifactError(f"invalid object name {name!r}")
        return self.prefix + name

    def ensure_bucket(self) -> None:
        if not self.client.bucket_exists(self.bucket):
            self.client.make_bucket(self.bucket)

    def put(self, name: str, path: Path) -> None:
        self.client.fput_object(self.bucket, self.key(name), str(path),
                                content_type="application/octet-stream")

    def stat(self, name: str) -> int | None:
        from minio.error import S3Error

        if not valid_name(name):
            return None
        try:
            st = self.client.stat_object(self.bucket, self.key(name))
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "NotFound", "ResourceNotFound", "NoSuchBucket"):
                return None
            raise
        return int(st.size) if st.size is not None else None

    def presign_get(self, name: str, expires_s: int, now: float | None = None) -> str:
        _check_expiry(expires_s)
        date = None if now is None else datetime.fromtimestamp(now, UTC)
        return str(self.client.presigned_get_object(self.bucket, self.key(name),
                                                    expires=timedelta(seconds=expires_s), request_date=date))


def split_endpoint(endpoint: str) -> tuple[str, bool]:
    """`http://host:port` / `https://host` / `host:port` -> (host[:port], secure)."""
    if "://" not in endpoint:
        return endpoint.rstrip("/"), True
    u = urlparse(endpoint)
    if u.scheme not in ("http", "https") or not u.netloc or u.path.strip("/"):
        raise ConfigError(
            f"FLEET_S3_ENDPOINT (s3_endpoint): expected http(s)://host[:port], got {endpoint!r}")
    return u.netloc, u.scheme == "https"


def local_key(root: Path, master_hex: str | None) -> bytes:
    """The URL-signing key of a local store: from the OTA master key when there is one (so every
    process of the fleet agrees), else a random key kept in the store directory."""
    master = setting_key("ota_master_key", master_hex or None)
    if master is not None:
        return derive(master, ARTIFACT_URL_INFO)
    path = root / KEY_FILE
    root.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # another process may be writing it right now
            data = path.read_bytes()
            if len(data) == 64:
                return bytes.fromhex(data.decode())
            time.sleep(0.01)
        raise ConfigError(f"{path}: not a URL key (64 hex digits); delete it to make a new one") from None
    with os.fdopen(fd, "w") as f:
        key = secrets.token_bytes(32)
        f.write(key.hex())
    return key


def store_from_settings(settings: Any) -> LocalStore | S3Store:
    spec: str = settings.artifact_store
    if spec.startswith("local:"):
        root = Path(spec[len("local:"):] or ".").expanduser().resolve()
        base = settings.artifact_public_url or f"http://127.0.0.1:{settings.artifact_http_port}"
        return LocalStore(root, base, local_key(root, settings.ota_master_key))
    if spec.startswith("s3://"):
        u = urlparse(spec)
        if not u.netloc:
            raise ConfigError(f"FLEET_ARTIFACT_STORE (artifact_store): no bucket in {spec!r}")
        if not settings.s3_endpoint:
            raise ConfigError("FLEET_S3_ENDPOINT (s3_endpoint) is required with an s3:// artifact store")
        endpoint, secure = split_endpoint(settings.s3_endpoint)
        return S3Store(endpoint, settings.s3_access_key, settings.s3_secret_key, settings.s3_region,
                       u.netloc, u.path, secure)
    raise ConfigError(f"FLEET_ARTIFACT_STORE (artifact_store): expected local:/dir or s3://bucket/prefix, "
                      f"got {spec!r}")
