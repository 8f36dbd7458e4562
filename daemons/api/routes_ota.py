"""API.md §2: releases and rollouts, on ota-planner's MQTT contract (PROTOCOL §3).

Status bodies are built by the planner's own `Control.status` from its Redis state, so the API
shows exactly what the planner publishes on `.../status`.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path as FsPath
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Path, UploadFile
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from daemons.api import models as m
from daemons.api.deps import Admin, Context, Ctx, Operator, Page, Viewer, audited, daemon_request, page_body
from daemons.api.problems import Problem, responses
from daemons.protocol.messages import DEVICE_ID_RE
from otaplanner import rollout as ro
from otaplanner.records import Release, Rollout
from otaplanner.reporting import Reporter

router = APIRouter(responses=responses(400, 401, 403, 422, 503))
Name = Annotated[str, Path(pattern=DEVICE_ID_RE.pattern)]
ACTIONS = ("pause", "resume", "abort", "advance", "rollback")
ENDED = (ro.COMPLETED, ro.ABORTED)
MAX_UPLOAD = 64 * 1024 * 1024


def _release_items(c: Context) -> list[dict[str, Any]]:
    rows = [json.loads(v) for v in c.redis.hvals("ota:releases")]
    return sorted(rows, key=lambda r: (-int(r.get("registered_at", 0)), r["version"]))


@router.get("/releases", response_model=m.ReleasePage, summary="Registered releases, newest first")
def list_releases(c: Ctx, who: Viewer, page: Page) -> dict[str, Any]:
    rows = _release_items(c)
    return page_body(rows[page.offset:page.offset + page.limit], page, len(rows))


@router.get("/releases/{version}", response_model=Release, responses=responses(404))
def get_release(c: Ctx, who: Viewer, version: Name) -> dict[str, Any]:
    release = c.rollouts.release(version)
    if release is None:
        raise Problem(404, f"no release {version!r}")
    return release  # type: ignore[no-any-return]


@router.post("/releases", status_code=201, response_model=Release, responses=responses(404, 409, 413),
             summary="Upload a firmware image and register it (PROTOCOL §3)")
async def publish_release(
    c: Ctx, who: Admin,
    file: Annotated[UploadFile, File(description="the firmware image")],
    version: Annotated[str, Form(pattern=DEVICE_ID_RE.pattern)],
    hw: Annotated[list[str], Form(min_length=1, description="hardware it runs on (repeatable)")],
    secure_version: Annotated[int, Form(ge=0, le=2**31)] = 0,
    notes: Annotated[str | None, Form(max_length=4096)] = None,
) -> dict[str, Any]:
    from otaplanner.artifacts import ArtifactError, release_object, sha256_file

    name = release_object(version, file.filename)
    with tempfile.NamedTemporaryFile(prefix="fleet-upload-") as tmp:
        size = 0
        while chunk := await file.read(1 << 20):
            size += len(chunk)
            if size > MAX_UPLOAD:
                await audited(c, who, "release.publish", version, 413)
                raise Problem(413, f"firmware larger than {MAX_UPLOAD} bytes")
            await run_in_threadpool(tmp.write, chunk)
        await run_in_threadpool(tmp.flush)
        if size == 0:
            await audited(c, who, "release.publish", version, 400)
            raise Problem(400, "file: empty")
        sha, size = await run_in_threadpool(sha256_file, FsPath(tmp.name))
        try:
            await run_in_threadpool(c.artifacts.put, name, FsPath(tmp.name))
        except (ArtifactError, OSError) as exc:
            await audited(c, who, "release.publish", version, 503)
            raise Problem(503, f"artifact store: {exc}") from None
    body: dict[str, Any] = {"version": version, "hw": hw, "object": name, "sha256": sha, "size": size,
                            "secure_version": secure_version}
    if notes is not None:
        body["notes"] = notes
    got = await daemon_request(c, who, "release.publish", version,
                               f"{c.settings.ops_prefix}/ota/releases/register", body, timeout=30.0)
    await audited(c, who, "release.publish", version, 201)
    return got.get("release", body)  # type: ignore[no-any-return]


def status_of(c: Context, rid: str) -> dict[str, Any] | None:
    meta = c.rollouts.meta(rid)
    if not meta:
        return None
    # The planner's own status body (what it retains on .../status), from the same Redis state.
    rollout = Rollout.from_meta(rid, meta)
    body = Reporter.status(rollout, c.rollouts.counts(rid), c.rollouts.counts(rid, "rb:"), time.time())
    body["created_at"] = int(meta.get("created_at", 0))
    return body


@router.get("/rollouts", response_model=m.RolloutPage, summary="Rollouts, newest first")
def list_rollouts(c: Ctx, who: Viewer, page: Page) -> dict[str, Any]:
    rids = list(c.redis.smembers("ota:rollouts"))
    pipe = c.redis.pipeline(transaction=False)
    for rid in rids:
        pipe.hget(c.rollouts.key(rid, "meta"), "created_at")
    created = dict(zip(rids, pipe.execute(), strict=True))
    ordered = sorted(rids, key=lambda r: (-int(created[r] or 0), r))
    items = [s for rid in ordered[page.offset:page.offset + page.limit] if (s := status_of(c, rid))]
    return page_body(items, page, len(ordered))


@router.get("/rollouts/{rid}", response_model=m.RolloutDetail, responses=responses(404))
def get_rollout(c: Ctx, who: Viewer, rid: Name) -> dict[str, Any]:
    status = status_of(c, rid)
    if status is None:
        raise Problem(404, f"no rollout {rid!r}")
    return {**status, "events": c.rollouts.events(rid)}


class RolloutCreate(BaseModel):
    """PROTOCOL §3 create fields; the planner checks them (one place for the rule)."""

    model_config = ConfigDict(extra="allow")
    rollout_id: str = Field(pattern=DEVICE_ID_RE.pattern)
    version: str = Field(pattern=DEVICE_ID_RE.pattern)
    selector: dict[str, Any] | None = None
    stages: list[int] = Field(default=[1, 5, 20, 100], min_length=1, max_length=20)
    soak_s: int = Field(default=600, ge=0)
    success_pct: float = Field(default=95, ge=0, le=100)
    max_failure_pct: float = Field(default=2, ge=0, le=100)
    min_devices_for_gate: int = Field(default=20, ge=0)
    timeout_s: int = Field(default=1800, ge=1)
    rate_per_min: int | None = Field(default=None, ge=1)


@router.post("/rollouts", status_code=201, response_model=m.RolloutStatus, responses=responses(404, 409),
             summary="Create a staged rollout of a release")
async def create_rollout(c: Ctx, who: Operator, body: RolloutCreate) -> dict[str, Any]:
    fields = body.model_dump(exclude_none=True)
    rid = fields.pop("rollout_id")
    await daemon_request(c, who, "rollout.create", rid, f"{c.settings.ops_prefix}/ota/rollouts/{rid}/command",
                         {"action": "create", **fields})
    await audited(c, who, "rollout.create", rid, 201)
    return await run_in_threadpool(status_of, c, rid) or {}


@router.post("/rollouts/{rid}/{action}", response_model=m.RolloutStatus, responses=responses(404, 409),
             summary="pause, resume, abort, advance or rollback")
async def act(c: Ctx, who: Operator, rid: Name,
              action: Annotated[str, Path(pattern="^(" + "|".join(ACTIONS) + ")$")]) -> dict[str, Any]:
    got = await daemon_request(c, who, f"rollout.{action}", rid,
                               f"{c.settings.ops_prefix}/ota/rollouts/{rid}/command", {"action": action})
    await audited(c, who, f"rollout.{action}", rid, 200)
    status = await run_in_threadpool(status_of, c, rid) or {}
    if "refused" in got:
        status["refused"] = got["refused"]
    return status


def _existing(c: Ctx, rid: Name) -> dict[str, Any]:
    # A dependency, so the 404 is answered before the event stream starts.
    status = status_of(c, rid)
    if status is None:
        raise Problem(404, f"no rollout {rid!r}")
    return status


@router.get("/rollouts/{rid}/events", response_class=EventSourceResponse, responses=responses(404),
            summary="Server-Sent Events: status changes and events, until the rollout ends")
async def rollout_events(c: Ctx, who: Viewer, rid: Name, status: Annotated[dict[str, Any], Depends(_existing)]
                         ) -> AsyncIterator[ServerSentEvent]:
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(maxsize=1000)

    def put(topic: str, payload: bytes) -> None:
        def deliver() -> None:
            if not inbox.full():
                inbox.put_nowait((topic, payload))
        loop.call_soon_threadsafe(deliver)

    base = f"{c.settings.ops_prefix}/ota/rollouts/{rid}"
    handle = await c.bridge.listen(f"{base}/+", put)
    # Read again now that we listen: a change between the dependency's read and the subscription
    # (the rollout ending, say) would otherwise be missed and the stream never end.
    fresh = await run_in_threadpool(status_of, c, rid)
    status = fresh or status
    try:
        yield ServerSentEvent(event="status", data=status)
        state = status["state"]
        while state not in ENDED:
            try:
                topic, payload = await asyncio.wait_for(inbox.get(), 15.0)
            except TimeoutError:
                yield ServerSentEvent(comment="keep-alive")
                continue
            kind = topic.rsplit("/", 1)[1]
            if kind not in ("status", "events") or not payload:
                continue
            try:
                data = json.loads(payload)
            except ValueError:
                continue
            yield ServerSentEvent(event="status" if kind == "status" else "event", data=data)
            if kind == "status":
                state = data.get("state", state)
    finally:
        c.bridge.unlisten(handle)
