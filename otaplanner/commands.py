"""Operator requests: release registration and rollout commands (PROTOCOL §3).

Each request is answered on its `/accepted` or `/rejected` topic; the effect is stored before
anything is published. A QoS 1 redelivery of a request that was already applied is accepted
again with the same effect (create, register) or rejected as a state conflict (409).
"""

from __future__ import annotations

import json
from typing import Any

from daemons.protocol.errors import Rejected
from daemons.protocol.messages import Outcome
from otaplanner import rollout as ro
from otaplanner.artifacts import ArtifactStore
from otaplanner.control import Control
from otaplanner.door import OperatorRequest
from otaplanner.manifest import SHA256_RE
from otaplanner.records import Release
from otaplanner.rollback import rollback

MAX_CAS_ROUNDS = 10


def parse_release(body: dict[str, Any]) -> Release:
    """Validate a registration; the release as stored (and retained) on success."""
    version = body.get("version")
    if not isinstance(version, str) or not ro.NAME_RE.fullmatch(version):
        raise ro.RolloutError(400, "version must match ^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
    hw = body.get("hw")
    if not isinstance(hw, list) or not hw or not all(isinstance(h, str) and 0 < len(h) <= 64 for h in hw):
        raise ro.RolloutError(400, "hw must be a non-empty list of hardware names")
    obj = body.get("object")
    if not isinstance(obj, str) or not obj or len(obj) > 1024 or ".." in obj.split("/"):
        raise ro.RolloutError(400, "object must be the artifact's name in the store")
    sha = body.get("sha256")
    if not isinstance(sha, str) or not SHA256_RE.fullmatch(sha.lower()):
        raise ro.RolloutError(400, "sha256 must be 64 hex digits")
    size = body.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ro.RolloutError(400, "size must be a positive integer")
    secure = body.get("secure_version", 0)
    if isinstance(secure, bool) or not isinstance(secure, int) or secure < 0:
        raise ro.RolloutError(400, "secure_version must be a non-negative integer")
    notes = body.get("notes")
    if notes is not None and (not isinstance(notes, str) or len(notes) > 4096):
        raise ro.RolloutError(400, "notes must be a string of at most 4096 characters")
    release: Release = {"version": version, "hw": sorted(set(hw)), "object": obj,
                               "sha256": sha.lower(), "size": size, "secure_version": secure}
    if notes is not None:
        release["notes"] = notes
    return release


class Commands:
    def __init__(self, control: Control, artifacts: ArtifactStore) -> None:
        self.control = control
        self.store = control.store
        self.artifacts = artifacts
        self.ops = control.reporter.ops

    # -- releases -----------------------------------------------------------------------------

    def register(self, request: OperatorRequest) -> Outcome:
        """A release registration (decoded at the door); answered on its reply topics."""
        out = Outcome()
        now = request.now
        try:
            release = parse_release(request.body)
            try:
                size = self.artifacts.stat(release["object"])
            except Exception as exc:  # the store is away (S3 down, bad credentials): say so
                raise ro.RolloutError(500, f"artifact store: {type(exc).__name__}: {exc}"[:300]) from None
            if size is None:
                raise ro.RolloutError(404, f"no object {release['object']!r} in the artifact store")
            if size != release["size"]:
                raise ro.RolloutError(
                    400, f"object {release['object']!r} is {size} bytes, not {release['size']}")
            release["registered_at"] = int(now)
            if not self.store.add_release(release["version"], release):
                existing = self.store.release(release["version"])
                if existing is None or {k: v for k, v in existing.items() if k != "registered_at"} != {
                        k: v for k, v in release.items() if k != "registered_at"}:
                    raise ro.RolloutError(409, f"release {release['version']} exists with other contents")
                release = existing
        except Rejected as exc:
            request.reply.reject(out, exc)
            return out
        out.publish(f"{self.ops}/ota/releases/{release['version']}", release, retain=True)
        request.reply.accept(out, {"release": release, "timestamp": int(now)})
        return out

    # -- rollouts -------------------------------------------------------------------------------

    def command(self, request: OperatorRequest) -> Outcome:
        """A rollout command (decoded at the door); answered on its reply topics."""
        out = Outcome()
        now, body = request.now, request.body
        rid = request.rollout_id or ""
        try:
            if not ro.NAME_RE.fullmatch(rid):
                raise ro.RolloutError(400, "rollout id must match ^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
            action = body.get("action")
            if not isinstance(action, str):
                raise ro.RolloutError(400, "action is required")
            if action == "create":
                result = self._create(rid, body, now, out)
            else:
                result = self._act(rid, action, now, out)
        except Rejected as exc:
            request.reply.reject(out, exc)
            return out
        request.reply.accept(out, {"rollout_id": rid, "action": action, **result, "timestamp": int(now)},
                             result=action)
        if action in ("create", "resume", "advance"):
            self.control.tick(rid, now, out)  # open the stage now rather than at the next tick
        self.control.publish_status(rid, now, out)
        return out

    def _create(self, rid: str, body: dict[str, Any], now: float, out: Outcome) -> dict[str, Any]:
        cfg = ro.RolloutConfig.parse(body)
        release = self.store.release(cfg.version)
        if release is None:
            raise ro.RolloutError(404, f"no release {cfg.version!r}: register it first")
        config = json.dumps(cfg.to_json(), sort_keys=True)
        fields = {"config": config, "release": json.dumps(release, sort_keys=True), "state": ro.RUNNING,
                  "stage": "0", "opened_at": repr(now), "reason": "created", "created_at": str(int(now)),
                  "updated_at": str(int(now)), "tokens": "1", "tokens_at": repr(now)}
        event = {"rollout_id": rid, "seq": 1, "event": "created", "from": None, "state": ro.RUNNING,
                 "stage": 0, "reason": "created", "timestamp": int(now)}
        if self.store.create(rid, fields, event):
            self.control.reporter.publish_event(rid, event, out)
            self.control.issuer.fleet_changed = True
        elif self.store.meta(rid).get("config") != config:
            raise ro.RolloutError(409, f"rollout {rid} exists with another configuration")
        return {"state": self.store.meta(rid).get("state"), "config": cfg.to_json()}

    def _act(self, rid: str, action: str, now: float, out: Outcome) -> dict[str, Any]:
        if action not in ro.COMMANDS:
            ro.command_target(action, "", 0, 0)  # raises the 400
        for _ in range(MAX_CAS_ROUNDS):
            r = self.control.load(rid)
            if r is None:
                raise ro.RolloutError(404, f"no rollout {rid!r}")
            target = ro.command_target(action, r.state, r.stage, len(r.cfg.stages))
            reason = f"{action} by operator"
            if action == "abort":
                done = self.control.stop(r, "aborted", target, reason, now, out)
            elif action == "advance":
                done = self.control.open_stage(r, r.stage + 1, reason, now, out)
            elif action == "rollback":
                return rollback(self.control, r, now, out)
            else:
                done = self.control.transition(r, action + ("d" if action.endswith("e") else "ed"),
                                               target, reason, now, out)
            if done is not None:
                return {"state": target}
        raise ro.RolloutError(409, "the rollout kept changing; try again")
