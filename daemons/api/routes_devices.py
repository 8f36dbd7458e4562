"""API.md §1: devices, shadows, tags, bulk desired, fleet summary.

Reads come from Redis (the device hash of shadow-sync, healthwatch's hash, the planner's job slot);
writes go through shadow-sync's MQTT contract, so its rules (versions, limits, merge) stay in one
place and a rejection's code is the HTTP status.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from daemons.api import models as m
from daemons.api.deps import Ctx, Operator, Page, Viewer, audited, daemon_request, page_body
from daemons.api.fleetindex import HEALTH, SORTS, DeviceQuery
from daemons.api.problems import Problem, responses
from daemons.protocol.messages import DEVICE_ID_RE
from daemons.registry import parse_tags
from healthwatch.device import DeviceState
from otaplanner.records import DeviceRecord
from shadowsync import document as doc
from shadowsync.topics import SHADOW_NAME_RE

router = APIRouter(responses=responses(400, 401, 403, 422, 503))
DeviceId = Annotated[str, Path(pattern=DEVICE_ID_RE.pattern, description="a device id")]
ShadowName = Annotated[str | None, Query(pattern=SHADOW_NAME_RE.pattern, description="a named shadow")]
TAG_WAIT_S = 5.0


def _tag_filters(request: Request) -> dict[str, str]:
    tags = {k[4:]: v for k, v in request.query_params.items() if k.startswith("tag.") and len(k) > 4}
    try:
        return parse_tags(tags)
    except ValueError as exc:
        raise Problem(400, str(exc)) from None


@router.get("/devices", response_model=m.DevicePage, summary="The fleet, filtered, sorted and paged")
def list_devices(
    c: Ctx, who: Viewer, page: Page, request: Request,
    hw: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    fw: Annotated[str | None, Query(min_length=1, max_length=64, description="a glob")] = None,
    connected: bool | None = None,
    health: Annotated[str | None, Query(pattern="^(" + "|".join(HEALTH) + ")$")] = None,
    q: Annotated[str | None, Query(min_length=1, max_length=64, description="id prefix")] = None,
    sort: Annotated[str, Query(pattern="^(" + "|".join(SORTS) + ")$")] = "id",
) -> dict[str, Any]:
    """Filters AND together; `tag.<key>=<value>` (repeatable) filters by tag."""
    query = DeviceQuery(hw, fw, _tag_filters(request), connected, health, q, sort)
    ids, total = c.index.page(query, page.offset, page.limit)
    return page_body(c.index.items(ids), page, total)


@router.get("/fleet/summary", response_model=m.FleetSummary, summary="Counts by state, hw and fw")
def fleet_summary(c: Ctx, who: Viewer) -> dict[str, Any]:
    body = c.index.summary()
    states: dict[str, int] = {}
    for rid in c.redis.smembers("ota:rollouts"):
        state = c.redis.hget(c.rollouts.key(rid, "meta"), "state")
        if state:
            states[state] = states.get(state, 0) + 1
    body["rollouts"] = {"running": states.get("running", 0), "by_state": states}
    return body


def _shadow_body(fields: dict[str, str], name: str) -> dict[str, Any] | None:
    """A stored shadow as `S/get/accepted` shows it (PROTOCOL §1), or None."""
    raw = fields.get("sh:" + name)
    if not raw:
        return None
    seen, connected = fields.get("last_seen_at"), fields.get("connected") == "1"
    return doc.get_body(json.loads(raw), int(seen) if seen else None, connected, int(time.time()))


def _device_fields(c: Ctx, device_id: str) -> dict[str, str]:
    fields: dict[str, str] = c.redis.hgetall(c.index.registry.key(device_id))
    if not fields:
        raise Problem(404, f"no device {device_id!r}")
    return fields


@router.get("/devices/{device_id}", response_model=m.DeviceDetail, responses=responses(404),
            summary="One device: shadow, health, OTA job, named shadows")
def get_device(c: Ctx, who: Viewer, device_id: DeviceId) -> dict[str, Any]:
    fields = _device_fields(c, device_id)
    item = c.index.items([device_id])[0]
    item["shadow"] = _shadow_body(fields, "")
    item["named_shadows"] = sorted(f[3:] for f in fields if f.startswith("sh:") and f != "sh:")
    raw = c.redis.hget(c.index.health.key(device_id), "st")
    reasons: list[Any] = []
    if raw:
        try:
            reasons = DeviceState.from_json(json.loads(raw)).reasons
        except (ValueError, TypeError, KeyError, IndexError):
            reasons = []
    item["health"]["reasons"] = reasons
    item["ota"] = _ota(c, device_id)
    return item


def _ota(c: Ctx, device_id: str) -> dict[str, Any] | None:
    """The device's current job (the planner's one job slot), else its job in the newest rollout
    that took it in, with its state there; None when no rollout ever did."""
    slot = c.redis.hgetall(c.rollouts.slot_key(device_id))
    if slot.get("rid"):
        rid, job_id = slot["rid"], slot.get("job")
        kind = "rb:" if str(job_id or "").endswith("#rb") else ""
        rec = c.redis.hget(c.rollouts.key(rid, kind + "dev"), device_id)
        state = str(DeviceRecord.from_json(json.loads(rec)).state) if rec else None
        return {"rollout_id": rid, "job_id": job_id, "state": state}
    rids = list(c.redis.smembers("ota:rollouts"))  # a few hundred at most: one pipeline
    pipe = c.redis.pipeline(transaction=False)
    for rid in rids:
        pipe.hget(c.rollouts.key(rid, "meta"), "created_at")
        pipe.hget(c.rollouts.key(rid, "dev"), device_id)
    rows = pipe.execute() if rids else []
    taken = [(int(rows[2 * i] or 0), rid, rows[2 * i + 1]) for i, rid in enumerate(rids) if rows[2 * i + 1]]
    if not taken:
        return None
    _, rid, raw = max(taken)
    record = DeviceRecord.from_json(json.loads(raw))
    return {"rollout_id": rid, "job_id": record.job_id, "state": str(record.state)}


@router.get("/devices/{device_id}/shadow", response_model=m.ShadowDocument, responses=responses(404),
            summary="A shadow, as S/get/accepted")
def get_shadow(c: Ctx, who: Viewer, device_id: DeviceId, name: ShadowName = None) -> dict[str, Any]:
    body = _shadow_body(_device_fields(c, device_id), name or "")
    if body is None:
        raise Problem(404, f"no shadow {name or '(classic)'} for {device_id}")
    return body


def _shadow_topic(c: Ctx, device_id: str, name: str | None, op: str) -> str:
    p = c.settings.topic_prefix
    return f"{p}/{device_id}/shadow/name/{name}/{op}" if name else f"{p}/{device_id}/shadow/{op}"


class DesiredState(BaseModel):
    model_config = ConfigDict(extra="forbid")
    desired: dict[str, Any] | None = Field(description="merged into desired; null removes a field")


class ShadowPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    state: DesiredState
    version: int | None = Field(None, ge=0, le=2**53, description="409 unless it is the current version")


@router.patch("/devices/{device_id}/shadow", response_model=m.UpdateAccepted,
              responses=responses(409, 413), summary="Update desired state (S/update)")
async def patch_shadow(c: Ctx, who: Operator, device_id: DeviceId, body: ShadowPatch,
                       name: ShadowName = None) -> dict[str, Any]:
    request: dict[str, Any] = {"state": {"desired": body.state.desired}}
    if body.version is not None:
        request["version"] = body.version
    target = f"{device_id}/{name}" if name else device_id
    got = await daemon_request(c, who, "shadow.update", target, _shadow_topic(c, device_id, name, "update"),
                               request)
    await audited(c, who, "shadow.update", target, 200)
    return got


@router.delete("/devices/{device_id}/shadow", response_model=m.DeleteAccepted, responses=responses(404),
               summary="Delete a shadow (S/delete)")
async def delete_shadow(c: Ctx, who: Operator, device_id: DeviceId,
                        name: ShadowName = None) -> dict[str, Any]:
    target = f"{device_id}/{name}" if name else device_id
    topic = _shadow_topic(c, device_id, name, "delete")
    got = await daemon_request(c, who, "shadow.delete", target, topic, {})
    await audited(c, who, "shadow.delete", target, 200)
    return got


@router.put("/devices/{device_id}/tags", response_model=dict[str, str], summary="Replace a device's tags")
async def put_tags(c: Ctx, who: Operator, device_id: DeviceId, body: dict[str, str | int | float | bool]
                   ) -> dict[str, str]:
    """Published retained on `{o}/devices/{id}/tags` (PROTOCOL §5); answered once shadow-sync stored it."""
    try:
        tags = parse_tags(body)
    except ValueError as exc:
        await audited(c, who, "tags.set", device_id, 400, str(exc))
        raise Problem(400, str(exc)) from None
    if not c.bridge.connected:
        await audited(c, who, "tags.set", device_id, 503)
        raise Problem(503, "broker: not connected")
    c.bridge.publish(f"{c.settings.ops_prefix}/devices/{device_id}/tags", tags, retain=True)
    # The tags topic has no answer topic: the stored hash is the acknowledgement.
    deadline = time.monotonic() + TAG_WAIT_S
    want = json.dumps(tags, sort_keys=True)
    key = c.index.registry.key(device_id)
    while await run_in_threadpool(c.redis.hget, key, "tags") != want:
        if time.monotonic() > deadline:
            await audited(c, who, "tags.set", device_id, 503)
            raise Problem(503, "shadow-sync has not stored the tags yet (is it running?)")
        await asyncio.sleep(0.05)
    await audited(c, who, "tags.set", device_id, 200)
    return tags


class BulkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    selector: dict[str, Any] = Field(description="PROTOCOL §5 selector")
    state: DesiredState


@router.post("/shadow/bulk", response_model=m.BulkAccepted, responses=responses(413),
             summary="One desired patch for every matching device")
async def bulk(c: Ctx, who: Operator, body: BulkRequest) -> dict[str, Any]:
    target = json.dumps(body.selector, sort_keys=True)[:200]
    got = await daemon_request(c, who, "shadow.bulk", target, f"{c.settings.ops_prefix}/shadow/bulk",
                               {"selector": body.selector, "state": {"desired": body.state.desired}},
                               timeout=60.0)
    await audited(c, who, "shadow.bulk", target, 200)
    return got
