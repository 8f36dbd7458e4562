"""A small Python model of the device side of PROTOCOL §3, for tests, benchmarks and the simulator.

`DeviceModel` is pure apart from the download (urllib, with Range resume): feed it a job and it
returns the §3 status payloads it would publish. It verifies the signature and the manifest
(device id, hardware, expiry, secure_version), downloads and checks sha256, writes the inactive
slot, and boots it on trial. The trial ends with `heartbeat_acked()` (the image boots, connects,
and its heartbeat is acknowledged: `succeeded`, secure_version committed) or `trial_failed()`
(the bootloader returns to the previous slot: `rolled_back`). A `selftest_fails` hook makes the
new image fail on its own, so the rollback happens at once.

`daemons.sim.device_runner.DeviceRunner` drives one model over MQTT (the I/O lives in daemons/).
"""

from __future__ import annotations

import hashlib
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from otaplanner.manifest import ManifestError, parse_manifest
from otaplanner.signing import SignatureError, Verifier

Status = dict[str, Any]
# Hooks get (device_id, manifest) and say whether this device's download / new image fails.
Hook = Callable[[str, dict[str, Any]], bool]
# (device_id, attempt) -> cut the connection after this many bytes of that attempt, or None.
Interrupt = Callable[[str, int], int | None]

MAX_ATTEMPTS = 5
CHUNK = 1 << 14
TRIAL_S = 60  # §3: a heartbeat must be acknowledged within 60 s of the trial boot


def never(device_id: str, manifest: dict[str, Any]) -> bool:
    return False


class DownloadError(Exception):
    pass


@dataclass
class Slot:
    version: str | None = None
    secure_version: int = 0
    image_sha256: str | None = None


@dataclass
class DeviceModel:
    device_id: str
    hw: str
    version: str
    verifier: Verifier
    secure_version: int = 0
    selftest_fails: Hook = never
    download_fails: Hook = never
    interrupt: Interrupt | None = None
    clock: Callable[[], float] = time.time
    timeout_s: float = 30.0
    slots: list[Slot] = field(default_factory=list)
    active: int = 0
    # The job on trial: (job_id, manifest, deadline) between reboot and its heartbeat ack.
    trial: tuple[str, dict[str, Any], float] | None = None
    done_jobs: set[str] = field(default_factory=set)
    downloads: list[tuple[int, int]] = field(default_factory=list)  # (attempt, first byte) per request
    last_manifest: dict[str, Any] | None = None  # of the last job that passed the checks

    def __post_init__(self) -> None:
        if not self.slots:
            self.slots = [Slot(self.version, self.secure_version), Slot()]

    @property
    def inactive(self) -> int:
        return 1 - self.active

    def status(self, job_id: str, state: str, progress: int | None = None, error: str | None = None,
               now: float | None = None) -> Status:
        body: Status = {"job_id": job_id, "state": state, "fw": self.version}
        if progress is not None:
            body["progress"] = progress
        if error is not None:
            body["error"] = error
        body["ts"] = int(self.clock() if now is None else now)
        return body

    def heartbeat(self, seq: int, uptime_s: int = 0) -> dict[str, Any]:
        return {"ts": int(self.clock()), "seq": seq, "uptime_s": uptime_s, "fw": self.version,
                "slot": self.active, "hw": self.hw}

    # -- the job ----------------------------------------------------------------------------------

    def check(self, job: Any, now: float) -> dict[str, Any]:
        """The manifest of an acceptable job; raises ValueError with the refusal reason."""
        try:
            manifest = parse_manifest(self.verifier.verify(job, self.device_id))
        except SignatureError as exc:
            raise ValueError(f"signature: {exc}") from None
        except ManifestError as exc:
            raise ValueError(f"manifest: {exc}") from None
        if manifest["job_id"] != job.get("job_id"):
            raise ValueError("manifest: job_id differs from the job's")
        if manifest["device_id"] != self.device_id:
            raise ValueError(f"manifest: for device {manifest['device_id']!r}, not this one")
        if manifest["hw"] != self.hw:
            raise ValueError(f"manifest: for hardware {manifest['hw']!r}, this is {self.hw!r}")
        if manifest["expires_at"] < now:
            raise ValueError("manifest: expired")
        if manifest["secure_version"] < self.secure_version:
            raise ValueError(f"manifest: secure_version {manifest['secure_version']} is below "
                             f"this device's {self.secure_version} (downgrade)")
        return manifest

    def handle_job(self, job: Any, now: float | None = None,
                   emit: Callable[[Status], None] | None = None) -> list[Status]:
        """Run a job up to the trial boot (or its refusal / failure); the statuses in order.
        `emit`, when given, also gets each status as it happens (a runner publishes them)."""
        out: list[Status] = []

        def say(state: str, **kw: Any) -> None:
            s = self.status(job_id, state, **kw)
            out.append(s)
            if emit is not None:
                emit(s)

        now = self.clock() if now is None else now
        raw_id = job.get("job_id") if isinstance(job, dict) else None
        job_id = raw_id if isinstance(raw_id, str) else ""
        if job_id and (job_id in self.done_jobs or (self.trial and self.trial[0] == job_id)):
            return out  # the same job again (retained, or redelivered): already handled
        if job_id:
            self.done_jobs.add(job_id)
        try:
            manifest = self.check(job, now)
        except ValueError as exc:
            say("rejected", error=str(exc))
            return out
        self.last_manifest = manifest
        if self.trial is not None:
            say("rejected", error="another update is on trial")
            return out
        say("downloading", progress=0)
        try:
            image = self.download(manifest, lambda p: say("downloading", progress=p))
        except DownloadError as exc:
            say("failed", error=f"download: {exc}")
            return out
        say("verifying", progress=100)
        digest = hashlib.sha256(image).hexdigest()
        if digest != manifest["sha256"] or len(image) != manifest["size"]:
            say("rejected", error=f"image sha256 {digest} does not match the manifest")
            return out
        # Write the inactive slot, then reboot into it on trial (the bootloader's pending-verify).
        self.slots[self.inactive] = Slot(manifest["version"], manifest["secure_version"], digest)
        say("rebooting")
        previous = self.active
        self.active = self.inactive
        self.version = manifest["version"]
        self.trial = (job_id, manifest, self.clock() + TRIAL_S)
        if self.selftest_fails(self.device_id, manifest):
            self._revert(previous)
            say("rolled_back", error="new image failed its self-test; back on the previous slot")
        return out

    def _revert(self, previous: int) -> None:
        self.active = previous
        self.version = self.slots[previous].version or self.version
        self.trial = None

    def heartbeat_acked(self) -> list[Status]:
        """The new image's heartbeat was acknowledged: commit it (and its secure_version)."""
        if self.trial is None:
            return []
        job_id, manifest, _ = self.trial
        self.trial = None
        self.secure_version = max(self.secure_version, manifest["secure_version"])
        return [self.status(job_id, "succeeded")]

    def trial_failed(self, now: float | None = None) -> list[Status]:
        """No acknowledged heartbeat in time (or a crash): the bootloader returns to the old slot.
        Without `now` the trial fails at once; with it, only once its deadline has passed."""
        if self.trial is None or (now is not None and now < self.trial[2]):
            return []
        job_id = self.trial[0]
        self._revert(self.inactive)
        return [self.status(job_id, "rolled_back", error="no heartbeat acknowledged after the update")]

    def run(self, job: Any, now: float | None = None) -> list[Status]:
        """The whole flow for pure use: the job, then (if on trial) an acknowledged heartbeat."""
        out = self.handle_job(job, now)
        return out + self.heartbeat_acked()

    # -- download ---------------------------------------------------------------------------------

    def download(self, manifest: dict[str, Any], progress: Callable[[int], None]) -> bytes:
        """GET the image, resuming with Range after a broken connection (up to MAX_ATTEMPTS)."""
        if self.download_fails(self.device_id, manifest):
            raise DownloadError("simulated download failure")
        size = manifest["size"]
        data = bytearray()
        reported = 0
        for attempt in range(MAX_ATTEMPTS):
            cut = self.interrupt(self.device_id, attempt) if self.interrupt else None
            req = urllib.request.Request(manifest["url"])
            if data:
                req.add_header("Range", f"bytes={len(data)}-")
            self.downloads.append((attempt, len(data)))
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    if data and resp.status != 206:
                        data.clear()  # the server ignored the Range: start over
                    got = 0
                    while len(data) <= size:
                        want = CHUNK if cut is None else max(0, min(CHUNK, cut - got))
                        if cut is not None and want == 0:
                            raise DownloadError("connection cut (simulated)")
                        chunk = resp.read(want)
                        if not chunk:
                            break
                        data += chunk
                        got += len(chunk)
                        pct = min(99, len(data) * 100 // max(size, 1)) // 25 * 25
                        if pct > reported:
                            reported = pct
                            progress(pct)
                return bytes(data)
            except urllib.error.HTTPError as exc:
                if exc.code in (403, 404, 410, 416):
                    raise DownloadError(f"HTTP {exc.code}") from None
            except (DownloadError, OSError):
                pass  # resume on the next attempt
        raise DownloadError(f"gave up after {MAX_ATTEMPTS} attempts at byte {len(data)}")
