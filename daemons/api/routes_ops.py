"""API.md §3 and the rest: health, debug sessions and their page/WebSocket, audit, console session."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path as FsPath
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Request, Response, WebSocket
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.websockets import WebSocketDisconnect, WebSocketState

from daemons.api import links
from daemons.api import models as m
from daemons.api.debug import (
    CLOSE_BAD_LINK,
    CLOSE_EXPIRED,
    LEVELS,
    QUEUE_MAX,
    TTL_MAX_S,
    parse_logs,
)
from daemons.api.deps import SESSION_COOKIE, Admin, Context, Ctx, Operator, Page, Viewer, audited, page_body
from daemons.api.problems import Problem, responses
from daemons.protocol.errors import Rejected
from daemons.protocol.messages import DEVICE_ID_RE

router = APIRouter(responses=responses(400, 401, 403, 422))
pages = APIRouter(include_in_schema=False)
STATIC = FsPath(__file__).parent / "static"
ALERTS_MAX = 1000
ALERTS_KEY = "fleet:api:alerts"  # list of `{o}/health/alerts` events seen by the API, newest first
SUMMARY_KEY = "fleet:api:health:summary"  # the latest retained `{o}/health/summary`


def store_alert(c: Context, payload: bytes) -> None:
    """Keep one `{o}/health/alerts` event (newest first, bounded)."""
    try:
        body = json.loads(payload)
    except ValueError:
        return
    if not isinstance(body, dict) or not isinstance(body.get("device_id"), str):
        return
    pipe = c.redis.pipeline(transaction=False)
    pipe.lpush(ALERTS_KEY, json.dumps(body, separators=(",", ":")))
    pipe.ltrim(ALERTS_KEY, 0, ALERTS_MAX - 1)
    pipe.execute()


@router.get("/health/alerts", response_model=m.AlertPage, summary="The latest alerts, newest first")
def health_alerts(c: Ctx, who: Viewer, page: Page,
                  status: Annotated[str | None, Query(pattern="^(ok|watch|critical|offline)$")] = None
                  ) -> dict[str, Any]:
    rows = [json.loads(r) for r in c.redis.lrange(ALERTS_KEY, 0, -1)]
    if status is not None:
        rows = [r for r in rows if r.get("status") == status]
    rows = [r for r in rows if isinstance(r.get("score"), int) and isinstance(r.get("status"), str)]
    return page_body(rows[page.offset:page.offset + page.limit], page, len(rows))


@router.get("/health/summary", response_model=m.HealthSummary,
            summary="healthwatch's fleet summary: counts, worst devices, cohort medians (extension)")
def health_summary(c: Ctx, who: Viewer) -> dict[str, Any]:
    raw = c.redis.get(SUMMARY_KEY)
    if raw:
        return json.loads(raw)  # type: ignore[no-any-return]
    return {"counts": {}, "worst": [], "cohorts": {}, "devices": 0}


class DebugOpen(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ttl_s: int = Field(600, ge=1, le=TTL_MAX_S)
    level: str = Field("debug", pattern="^(" + "|".join(LEVELS) + ")$")


@router.post("/devices/{device_id}/debug", status_code=201, response_model=m.DebugSession,
             responses=responses(503), summary="Open a debug session: a signed link to the live logs")
async def open_debug(c: Ctx, who: Operator, device_id: Annotated[str, Path(pattern=DEVICE_ID_RE.pattern)],
                     body: Annotated[DebugOpen | None, Body()] = None) -> dict[str, Any]:
    body = body or DebugOpen(ttl_s=600, level="debug")
    try:
        session: dict[str, Any] = await c.debug.open(device_id, body.ttl_s, who, who.name, body.level)
    except Rejected as exc:
        await audited(c, who, "debug.open", device_id, exc.code, exc.message)
        raise Problem(exc.code, exc.message) from None
    return session


@router.delete("/devices/{device_id}/debug", status_code=204,
               summary="Close the device's debug sessions now (extension): desired debug cleared")
async def close_debug(c: Ctx, who: Operator,
                      device_id: Annotated[str, Path(pattern=DEVICE_ID_RE.pattern)]) -> Response:
    await c.debug.close(device_id, who)
    return Response(status_code=204)


@router.get("/audit", response_model=m.AuditPage, summary="The audit trail, newest first (admin)")
def audit(c: Ctx, who: Admin, page: Page) -> dict[str, Any]:
    items, total = c.audit.page(page.offset, page.limit)
    return page_body(items, page, total)


class Login(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str = Field(min_length=1, max_length=200)


@router.post("/session", response_model=m.Me, summary="Console login: a token in, a session cookie out")
def login(c: Ctx, body: Login, request: Request, response: Response) -> dict[str, Any]:
    opened = c.tokens.open_session(body.token)
    if opened is None:
        raise Problem(401, "unknown, expired or revoked token")
    session_id, who = opened
    response.set_cookie(SESSION_COOKIE, session_id, httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https" or c.public_url.startswith("https:"),
                        max_age=12 * 3600)
    return {"id": who.id, "name": who.name, "role": who.role}


@router.get("/session", response_model=m.Me, summary="Who the caller is")
def whoami(who: Viewer) -> dict[str, Any]:
    return {"id": who.id, "name": who.name, "role": who.role}


@router.delete("/session", status_code=204, summary="Console logout")
def logout(c: Ctx, request: Request) -> Response:
    c.tokens.close_session(request.cookies.get(SESSION_COOKIE, ""))
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# -- the link's page and WebSocket (no token: the signed link is the authority) -----------------


@pages.get("/debug/{session_id}")
def debug_page(c: Ctx, session_id: str, device: str = "", expires: str = "", sig: str = "") -> HTMLResponse:
    reason = links.verify(c.link_key, session_id, device, expires, sig, time.time())
    if reason is not None:
        c.metrics.debug_refused.labels(reason).inc()
        raise Problem(403, f"debug link refused: {reason}")
    return HTMLResponse((STATIC / "debug.html").read_text())


@pages.websocket("/debug/{session_id}/ws")
async def debug_ws(ws: WebSocket, session_id: str) -> None:
    c: Context = ws.app.state.ctx
    q = ws.query_params
    device, expires = q.get("device", ""), q.get("expires", "")
    await ws.accept()
    reason = links.verify(c.link_key, session_id, device, expires, q.get("sig", ""), time.time())
    if reason is not None:
        c.metrics.debug_refused.labels(reason).inc()
        await ws.close(CLOSE_BAD_LINK, f"link refused: {reason}")
        return
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_MAX)
    lost = [0]

    def put(topic: str, payload: bytes) -> None:
        batch = parse_logs(payload)
        if batch is None:
            return

        def deliver() -> None:
            if batch.get("dropped"):
                c.metrics.debug_dropped.labels("device").inc(batch["dropped"])
            if inbox.full():
                lost[0] += len(batch["lines"])  # a slow browser loses lines rather than memory
                c.metrics.debug_dropped.labels("relay").inc(len(batch["lines"]))
            else:
                inbox.put_nowait(batch)
        loop.call_soon_threadsafe(deliver)

    closed = c.debug.closed.setdefault(device, asyncio.Event())
    handle = await c.bridge.listen(f"{c.settings.topic_prefix}/{device}/logs", put)
    receiver = asyncio.ensure_future(_drain(ws))
    try:
        await ws.send_json({"type": "hello", "device_id": device, "expires_at": int(expires)})
        while True:
            left = int(expires) - time.time()
            if left <= 0 or closed.is_set():
                await ws.close(CLOSE_EXPIRED, "session expired" if left <= 0 else "session closed")
                return
            getter = asyncio.ensure_future(inbox.get())
            waiter = asyncio.ensure_future(closed.wait())
            done, _ = await asyncio.wait({getter, waiter, receiver}, timeout=min(left, 15.0),
                                         return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if receiver in done:
                getter.cancel()
                return  # the browser went away
            if getter in done:
                batch = getter.result()
                if lost[0]:
                    batch["relay_dropped"], lost[0] = lost[0], 0
                await ws.send_json({"type": "logs", "device_id": device, **batch})
                c.metrics.debug_relayed.inc(len(batch["lines"]))
            else:
                getter.cancel()
    except WebSocketDisconnect:
        return
    finally:
        receiver.cancel()
        c.bridge.unlisten(handle)
        if ws.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await ws.close(CLOSE_EXPIRED)


async def _drain(ws: WebSocket) -> None:
    """Read (and ignore) what the browser sends, to notice when it leaves."""
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
