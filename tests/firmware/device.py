"""The host firmware as a test part: device processes, a Range-capable image server, signed jobs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "esp-idf-firmware"
BINARY = FIRMWARE / "build-host" / "fleet-device"
MASTER_KEY = bytes(range(32))

SLOT0_OFF, SLOT_SIZE = 0x20000, 0x1E0000  # ota_0 and its size, as hf_flash.h and partitions.csv
RESUME_EVERY = 16 * 1024  # FA_OTA_SAVE_EVERY

# otadata states, as esp_ota_img_states_t
NEW, PENDING_VERIFY, VALID, INVALID, ABORTED = 0, 1, 2, 3, 4


def missing_build_tools() -> str | None:
    """Why the host firmware cannot be built here, or None."""
    for tool in ("make", "gcc"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    for header in ("mosquitto.h", "mbedtls/md.h"):
        if not Path("/usr/include", header).exists():
            return f"/usr/include/{header} is missing (libmosquitto-dev, libmbedtls-dev)"
    return None


def build_host() -> Path:
    subprocess.run(["make", "-C", str(FIRMWARE), "host"], check=True, capture_output=True, timeout=300)
    return BINARY


def device_key(device_id: str, master: bytes = MASTER_KEY) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=f"fleet-ota-v1:{device_id}".encode()).derive(master)


def make_image(tmp: Path, version: str, secure_version: int = 0, selftest: str = "ok",
               size: int = 65536) -> bytes:
    out = tmp / f"fw-{version}-{selftest}.bin"
    subprocess.run([str(BINARY), "mkimage", "--out", str(out), "--version", version, "--secure-version",
                    str(secure_version), "--selftest", selftest, "--size", str(size)], check=True, timeout=30)
    return out.read_bytes()


def signed_job(device_id: str, job_id: str, version: str, image: bytes, url: str, hw: str = "c3",
               secure_version: int = 0, expires_in: int = 600,
               tamper: Callable[[bytes], bytes] | None = None, kid: str = "k1",
               master: bytes = MASTER_KEY) -> dict[str, Any]:
    now = int(time.time())
    manifest = json.dumps({
        "device_id": device_id, "job_id": job_id, "version": version, "hw": hw, "url": url,
        "sha256": hashlib.sha256(image).hexdigest(), "size": len(image), "secure_version": secure_version,
        "issued_at": now, "expires_at": now + expires_in,
    }, separators=(",", ":")).encode()
    sig = hmac.new(device_key(device_id, master), manifest, hashlib.sha256).digest()
    if tamper is not None:
        manifest = tamper(manifest)
    return {"job_id": job_id, "rollout_id": "r-test", "alg": "hmac-sha256", "kid": kid,
            "manifest": base64.b64encode(manifest).decode(), "sig": base64.b64encode(sig).decode()}


@dataclass
class ImageServer:
    """Serves firmware over HTTPS (given a TLS context) or HTTP with Range support; can throttle and
    cut a connection once."""

    tls: ssl.SSLContext | None = None
    files: dict[str, bytes] = field(default_factory=dict)
    ranges: list[str] = field(default_factory=list)
    chunk_delay_s: float = 0.0
    break_once_at: int | None = None
    server: ThreadingHTTPServer | None = None

    def start(self) -> ImageServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                body = owner.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng:
                    owner.ranges.append(rng)
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                pos = start
                try:
                    while pos < len(body):
                        if owner.break_once_at is not None and pos >= owner.break_once_at:
                            owner.break_once_at = None
                            return  # the connection closes mid-body
                        n = 4096
                        if owner.break_once_at is not None:
                            n = min(n, owner.break_once_at - pos)
                        self.wfile.write(body[pos:pos + n])
                        self.wfile.flush()
                        pos += n
                        if owner.chunk_delay_s:
                            time.sleep(owner.chunk_delay_s)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if self.tls is not None:
            # The handshake happens at accept; a client that rejects the certificate just goes away.
            self.server.socket = self.tls.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def url(self, path: str) -> str:
        assert self.server is not None
        if self.tls is not None:
            return f"https://localhost:{self.server.server_address[1]}{path}"  # the name the cert carries
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@dataclass
class Device:
    """One host device: a flash file and the process that boots from it (and re-executes itself)."""

    device_id: str
    flash: Path
    broker_port: int
    prefix: str
    hw: str = "c3"
    extra: list[str] = field(default_factory=list)
    master_key: bytes = MASTER_KEY
    ca: Path | None = None  # the CA HTTPS downloads are verified against
    process: subprocess.Popen[bytes] | None = None
    lines: list[str] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def provision(self, image: bytes) -> Device:
        img = self.flash.with_suffix(".factory.bin")
        img.write_bytes(image)
        subprocess.run([str(BINARY), "flash", "--flash", str(self.flash), "--slot", "0", str(img)],
                       check=True, timeout=30)
        return self

    def start(self) -> Device:
        args = [str(BINARY), "run", "--flash", str(self.flash), "--id", self.device_id, "--hw", self.hw,
                "--broker", f"mqtt://127.0.0.1:{self.broker_port}", "--prefix", self.prefix,
                "--master-key", self.master_key.hex(), *(["--ca", str(self.ca)] if self.ca else []),
                *self.extra]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        env={**os.environ, "FLEET_RESET_REASON": "poweron"})
        threading.Thread(target=self._read, args=(self.process,), daemon=True).start()
        return self

    def _read(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stderr is not None
        for raw in process.stderr:
            with self._cond:
                self.lines.append(raw.decode(errors="replace").rstrip())
                self._cond.notify_all()

    def wait_log(self, text: str, timeout: float = 20.0, after: int = 0) -> int:
        """Index of the first line from `after` on that contains text."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(after, len(self.lines)):
                    if text in self.lines[i]:
                        return i
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no log line with {text!r}; last: {self.lines[-8:]}")
                self._cond.wait(left)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def slot_bytes(self, slot: int, size: int) -> bytes:
        """The first size bytes of an app slot, read from the flash file (partitions.csv offsets)."""
        with self.flash.open("rb") as f:
            f.seek(SLOT0_OFF + slot * SLOT_SIZE)
            return f.read(size)

    def info(self) -> dict[str, Any]:
        out = subprocess.run([str(BINARY), "info", "--flash", str(self.flash)], check=True,
                             capture_output=True, timeout=30)
        return json.loads(out.stdout)  # type: ignore[no-any-return]
