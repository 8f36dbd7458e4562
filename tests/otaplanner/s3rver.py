"""s3rver (npm @20minutes/s3rver, installed by `make setup` under .cache/s3rver) as a test fixture.

Unlike moto, s3rver checks SigV4 pre-signed URLs by itself: it recomputes the signature with its
secret and refuses a mismatch (403 SignatureDoesNotMatch) and an expired URL (403 AccessDenied
"Request has expired"). Upstream `s3rver` 3.7.x checks expiry but never the V4 signature, hence
the fork. The package ships no CLI script, so a one-line node program starts it on port 0 and
prints the port it got.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / ".cache/s3rver/node_modules/@20minutes/s3rver"
ACCESS_KEY = SECRET_KEY = "S3RVER"  # s3rver's built-in account
REGION = "us-east-1"
START_JS = ("const S3rver = require(process.argv[1]);"
            "new S3rver({address: '127.0.0.1', port: 0, directory: process.argv[2], silent: true})"
            ".run().then(a => console.log('listening ' + a.port),"
            " e => { console.error(e); process.exit(1); });")


@dataclass(frozen=True)
class S3rver:
    endpoint: str  # http://127.0.0.1:port
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    region: str = REGION


def _unavailable(why: str) -> None:
    msg = f"s3rver unavailable: {why}; `make setup` installs it (npm install into .cache/s3rver)"
    if os.environ.get("CI"):
        pytest.fail(msg)  # CI must run the real-S3 tests, never skip them silently
    pytest.skip(msg)


def _read_port(proc: subprocess.Popen[str], timeout_s: float) -> int:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline()
            if line.startswith("listening "):
                return int(line.split()[1])
            if not line:
                break  # exited
    raise RuntimeError("s3rver did not start")


@pytest.fixture(scope="module")
def s3rver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3rver]:
    node = shutil.which("node")
    if node is None:
        _unavailable("`node` is not on PATH")
    if not (PACKAGE / "package.json").is_file():
        _unavailable(f"{PACKAGE} is missing")
    data = tmp_path_factory.mktemp("s3rver")
    log = data.parent / f"{data.name}.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([str(node), "-e", START_JS, str(PACKAGE), str(data)],
                                stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        try:
            port = _read_port(proc, 30)
        except RuntimeError:
            pytest.fail(f"s3rver did not start (exit {proc.poll()}): {log.read_text()[-2000:]}")
        yield S3rver(f"http://127.0.0.1:{port}")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
