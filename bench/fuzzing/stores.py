"""Targets that write: each daemon's own handler, in-process, on a real redis-server.

Every case is one message through the handler's `handle`, then `WriteLog.drain()` says which keys
it wrote. The oracles: exactly one answer per request (accepted or rejected, or the contract's
drop for topics without an answer); a rejected or dropped input wrote no key at all; an accepted
one stored the whole thing (the shadow document equal to the document rules applied to the one
read before, the health state complete and its revision moved once, the release or rollout as
parsed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
from hypothesis import strategies as st

from bench.fuzzing.core import Finding
from bench.fuzzing.writelog import WriteLog
from daemons.protocol.codec import decode
from daemons.protocol.messages import Inbound, Outcome
from daemons.registry import Registry, device_key
from healthwatch.device import DeviceState
from healthwatch.service import Dropped as HealthDropped
from healthwatch.service import HealthService
from healthwatch.store import HealthStore
from healthwatch.validate import FIELDS, validate
from otaplanner import rollout as ro
from otaplanner.artifacts import LocalStore
from otaplanner.commands import parse_release
from otaplanner.door import OperatorRequest
from otaplanner.jobs import JobFactory
from otaplanner.manifest import FIELDS as MANIFEST_FIELDS
from otaplanner.manifest import ManifestError, build_manifest, parse_manifest
from otaplanner.planner import Planner
from otaplanner.rollout_store import RolloutStore
from otaplanner.signing import Signer
from shadowsync import document as doc
from shadowsync.requests import Dropped, Read, Refusal, Update, parse
from shadowsync.service import ShadowService
from shadowsync.store import ShadowStore
from tests import strategies as fs

P, OPS = "fleet", "fleetops"
NOW = 1_800_000_000
INDEXES = "fleet:{idx}:"  # the registry's and shadow-sync's fleet-wide indexes
DEVICES = ["dev-1", "dev-2", "d3", "A.b:c_d-e", "x" * 64]


def answers(out: Outcome, topic: str) -> list[tuple[str, dict[str, Any]]]:
    """The accepted / rejected answers to a request on `topic`, decoded."""
    found = [
        (p.topic.rsplit("/", 1)[1], decode(p.payload)[0])
        for p in out.publishes
        if p.topic in (f"{topic}/accepted", f"{topic}/rejected")
    ]
    return found


def one_answer(out: Outcome, topic: str) -> tuple[str, dict[str, Any]]:
    found = answers(out, topic)
    if len(found) != 1:
        raise Finding("not exactly one answer", f"{len(found)} answers on {topic}")
    return found[0]


def nothing_written(written: dict[str, set[str]], why: str) -> str:
    if written:
        raise Finding("stored what it must not", f"{why}: {sorted(written)[:5]}")
    return why


class Shadows:
    """merge/delta: shadow updates, gets and deletes through shadow-sync's handler."""

    name = "merge/delta (shadow-sync)"

    def __init__(self, redis: Any, log: WriteLog) -> None:
        self.redis, self.log = redis, log
        self.service = ShadowService(ShadowStore(redis), Registry(redis), P, OPS, clock=lambda: NOW)

    def strategy(self) -> st.SearchStrategy[Any]:
        ids = st.sampled_from(DEVICES * 4 + fs.BAD_DEVICE_IDS[:3])
        return st.tuples(ids, fs.shadow_topics, fs.shadow_payloads)

    def check(self, case: tuple[str, str, bytes]) -> str:
        device_id, suffix, payload = case
        message = Inbound(f"{P}/{device_id}/{suffix}", payload)
        request = parse(message, P, OPS)  # the door alone, pure: what the handler should make of it
        key = device_key("fleet", device_id)
        before = self.redis.hgetall(key)
        out = self.service.handle([message])
        written = self.log.drain()
        if isinstance(request, Dropped):
            if answers(out, message.topic):
                raise Finding("answered a dropped message", message.topic)
            return nothing_written(written, f"dropped:{request.route.kind}")
        outcome, body = one_answer(out, message.topic)
        if outcome == "rejected":
            if isinstance(request, Refusal) and body["code"] != request.error.code:
                raise Finding("rejected with another code", f"{body['code']} != {request.error.code}")
            return nothing_written(written, str(body["code"]))
        if isinstance(request, Refusal):
            raise Finding("accepted what the door refuses", request.error.message)
        after = self.redis.hgetall(key)
        others = [k for k in written if k != key and not k.startswith(INDEXES)]
        if others:
            raise Finding("wrote outside the device and its indexes", str(others[:5]))
        field = "sh:" + request.route.shadow
        if isinstance(request, Read):
            if request.route.kind == "get":
                return nothing_written(written, "accepted (get)")  # an operator's get changes nothing
            if field in after:
                raise Finding("delete left the document", key)
            return "accepted"
        assert isinstance(request, Update)
        previous = (
            json.loads(before[field])
            if field in before
            else {**doc.empty_document(), "version": int(before.get("ver:" + request.route.shadow, 0))}
        )
        expected = doc.apply_update(previous, request.state, NOW)
        stored = orjson.loads(after.get(field, "null"))
        if stored != expected:
            raise Finding("stored document differs", f"{stored!r:.300} != {expected!r:.300}")
        state = stored["state"]
        try:  # what is stored keeps the limits a request is held to
            doc.validate_state({k: state[k] for k in doc.SECTIONS if k in state})
        except doc.ShadowError as exc:
            raise Finding("stored state breaks the limits", exc.message) from None
        self._delta(state.get("desired"), state.get("reported"))
        return "accepted"

    @staticmethod
    def _delta(desired: Any, reported: Any) -> None:
        """The delta names only desired fields, and reporting it empties it."""
        delta = doc.delta(desired, reported)
        if set(delta) - set(desired or {}):
            raise Finding("delta names a field desired does not have", repr(delta)[:200])
        merged = doc.clone(reported) if isinstance(reported, dict) else {}
        doc.merge(merged, delta)
        left = doc.delta(desired, merged)
        if left:
            raise Finding("reporting the delta leaves a delta", f"{left!r:.200}")


class Heartbeats:
    """heartbeat validation: heartbeats through healthwatch's handler."""

    name = "heartbeat validation (healthwatch)"

    def __init__(self, redis: Any, log: WriteLog) -> None:
        self.redis, self.log = redis, log
        self.service = HealthService(HealthStore(redis), P, OPS, clock=lambda: NOW)

    def strategy(self) -> st.SearchStrategy[Any]:
        return st.tuples(st.sampled_from(DEVICES * 4 + fs.BAD_DEVICE_IDS[:3]), fs.heartbeat_payloads)

    def check(self, case: tuple[str, bytes]) -> str:
        device_id, payload = case
        message = Inbound(f"{P}/{device_id}/heartbeat", payload)
        routed = self.service.route(message)
        key = self.service.store.key(device_id)  # type: ignore[attr-defined]
        before = self.redis.hget(key, "rev")
        out = self.service.handle([message])
        written = self.log.drain()
        if out.publishes and any(p.topic.endswith(("/accepted", "/rejected")) for p in out.publishes):
            raise Finding("answered a heartbeat", "heartbeats have no answer topic (§2)")
        if isinstance(routed, HealthDropped):
            return nothing_written(written, f"dropped:{routed.why}")
        clean, dropped = validate(routed.body)
        if set(clean) | set(dropped) != {k for k in routed.body}:
            raise Finding("validate lost a field", f"{sorted(routed.body)} -> {sorted(clean)} + {dropped}")
        for name, value in clean.items():
            if name in FIELDS and not FIELDS[name](value):
                raise Finding("kept an invalid field", f"{name}={value!r:.80}")
        after = self.redis.hgetall(key)
        if key not in written or not {"st", "status", "score", "rev"} <= set(after):
            raise Finding("heartbeat not stored whole", f"{key}: {sorted(after)}")
        if int(after["rev"]) != int(before or 0) + 1:
            raise Finding("revision moved more than once", f"{before} -> {after['rev']}")
        state = json.loads(after["st"], parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
        if DeviceState.from_json(state).to_json() != state:
            raise Finding("stored state does not read back", repr(state)[:300])
        return "accepted (fields dropped)" if dropped else "accepted"


RELEASE_DATA = b"x" * 100  # the sha256 in tests.strategies.release_valid is this file's


class Manifests:
    """manifest parsing: §3 manifest bytes, and release registrations / rollout commands through
    ota-planner's handler (the release manifest and the rollout it is rolled out by)."""

    name = "manifest parsing (ota-planner)"

    def __init__(self, redis: Any, log: WriteLog, root: Path) -> None:
        self.redis, self.log = redis, log
        root.mkdir(parents=True, exist_ok=True)
        (root / "fw.bin").write_bytes(RELEASE_DATA)
        store = LocalStore(root, "http://127.0.0.1:9", b"k" * 32)
        jobs = JobFactory(Signer(kid="k1", master_key=b"m" * 32), store)
        self.clock = float(NOW)
        self.planner = Planner(
            RolloutStore(redis), Registry(redis), jobs, store, "p", "o", "fuzz", clock=lambda: self.clock
        )

    def strategy(self) -> st.SearchStrategy[Any]:
        return fs.manifest_bytes() | fs.planner_requests

    def check(self, case: bytes | tuple[str, bytes]) -> str:
        if isinstance(case, bytes):
            return self._manifest(case)
        topic, payload = case
        self.clock += 1
        message = Inbound(topic, payload)
        routed = self.planner.door.route(message, self.clock)
        out = self.planner.handle([message])
        written = self.log.drain()
        outcome, body = one_answer(out, topic)
        if outcome == "rejected":
            return nothing_written(written, f"{body['code']} (request)")
        if not isinstance(routed, OperatorRequest):
            raise Finding("accepted what the door refuses", repr(routed)[:200])
        store = self.planner.store
        if routed.kind == "register":
            want = parse_release(routed.body)
            stored = store.release(want["version"])
            if stored is None or {k: v for k, v in stored.items() if k != "registered_at"} != want:
                raise Finding("release not stored as registered", f"{stored!r:.300} != {want!r:.300}")
            return "accepted (request)"
        rid = routed.rollout_id or ""
        meta = store.meta(rid)
        if routed.body.get("action") == "create":
            config = json.dumps(ro.RolloutConfig.parse(routed.body).to_json(), sort_keys=True)
            if meta.get("config") != config:
                raise Finding("rollout not stored as created", f"{meta.get('config')!r:.300}")
        elif "state" in body and body["state"] != meta.get("state") and not (
            routed.body.get("action") in ("resume", "advance") and meta.get("state") == "completed"
        ):
            # (resume and advance open the next stage at once: with no device left to update,
            # that completes the rollout in the same handle, after the answer was made)
            raise Finding("command answered a state not stored", f"{body['state']} vs {meta.get('state')}")
        return "accepted (request)"

    @staticmethod
    def _manifest(data: bytes) -> str:
        try:
            body = parse_manifest(data)
        except ManifestError:
            return "ManifestError (manifest)"
        known = {k: body[k] for k in MANIFEST_FIELDS}  # other keys: allowed, ignored
        try:
            again = build_manifest(**known)
        except (ManifestError, TypeError, UnicodeEncodeError) as exc:
            raise Finding(
                "parsed a manifest that cannot be written back", f"{type(exc).__name__}: {exc}"
            ) from None
        if parse_manifest(again) != known:
            raise Finding("manifest does not read back", repr(body)[:300])
        return "accepted (manifest)"
