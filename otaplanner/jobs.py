"""Turning a release into one device's signed job (PROTOCOL §3), on top of the manifest,
signing and artifact-store modules."""

from __future__ import annotations

import time
from typing import Any

from otaplanner.artifacts import MAX_EXPIRES_S, ArtifactStore
from otaplanner.manifest import build_manifest
from otaplanner.records import Release
from otaplanner.signing import Signer

# A pre-signed URL is shared by the jobs issued within this many seconds (signing one per
# device would cost more than the job itself); it outlives every manifest that carries it.
URL_REUSE_S = 60


class JobFactory:
    def __init__(self, signer: Signer, artifacts: ArtifactStore) -> None:
        self.signer = signer
        self.artifacts = artifacts
        self._urls: dict[tuple[str, int], tuple[float, str]] = {}

    def url(self, obj: str, expiry_s: int, now: float) -> str:
        cached = self._urls.get((obj, expiry_s))
        if cached is not None and now - cached[0] < URL_REUSE_S:
            return cached[1]
        url = str(self.artifacts.presign_get(obj, min(MAX_EXPIRES_S, expiry_s + URL_REUSE_S + 60)))
        if len(self._urls) > 1000:
            self._urls.clear()
        self._urls[(obj, expiry_s)] = (now, url)
        return url

    def make(self, device_id: str, hw: str | None, job_id: str, rollout_id: str,
             release: Release, expiry_s: int, now: float | None = None) -> dict[str, Any]:
        issued = int(time.time() if now is None else now)
        manifest = build_manifest(
            device_id=device_id,
            job_id=job_id,
            version=release["version"],
            hw=hw or (release["hw"][0] if release.get("hw") else ""),
            url=self.url(release["object"], expiry_s, issued),
            sha256=release["sha256"],
            size=release["size"],
            secure_version=release["secure_version"],
            issued_at=issued,
            expires_at=issued + expiry_s,
        )
        return dict(self.signer.make_job(device_id, job_id, rollout_id, manifest))
