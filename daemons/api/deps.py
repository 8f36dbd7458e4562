"""What every route shares: the process context, authentication by role, paging, write answers.

Blocking Redis calls stay off the event loop. Plain `def` routes and dependencies run in Starlette's
threadpool already; the `async def` routes (they await a daemon's MQTT answer, or stream) hand their
Redis work to that same threadpool with `starlette.concurrency.run_in_threadpool`, e.g. `audited`.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from daemons.api.audit import Audit
from daemons.api.auth import Principal, TokenStore
from daemons.api.bridge import Bridge, BridgeTimeout
from daemons.api.fleetindex import FleetIndex
from daemons.api.problems import Problem
from daemons.runtime.config import Settings

SESSION_COOKIE = "fleet_session"
LIMIT_DEFAULT, LIMIT_MAX = 100, 1000


@dataclass
class Context:
    settings: Settings
    redis: Any
    bridge: Bridge
    tokens: TokenStore
    audit: Audit
    index: FleetIndex
    link_key: bytes
    public_url: str
    debug: Any = None  # daemons.api.debug.DebugSessions, set by the app
    artifacts: Any = None  # the artifact store of the settings (local or S3)
    rollouts: Any = None  # otaplanner's RolloutStore
    metrics: Any = None  # daemons.api.app.ApiMetrics


def ctx(request: Request) -> Context:
    return request.app.state.ctx  # type: ignore[no-any-return]


Ctx = Annotated[Context, Depends(ctx)]
_bearer = HTTPBearer(auto_error=False, description="an API token (`fleetctl token create`)")


def principal(request: Request,
              creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Principal:
    """The caller, from the Bearer token or the console's session cookie; 401 otherwise."""
    c: Context = request.app.state.ctx
    who: Principal | None = None
    if creds is not None:
        who = c.tokens.authenticate(creds.credentials)
    elif request.cookies.get(SESSION_COOKIE):
        who = c.tokens.session(request.cookies[SESSION_COOKIE])
    if who is None:
        raise Problem(401, "a valid, unexpired, unrevoked token is required",
                      headers={"WWW-Authenticate": "Bearer"})
    request.state.principal = who
    return who


def role(required: str) -> Any:
    def check(request: Request, who: Annotated[Principal, Depends(principal)]) -> Principal:
        if not who.may(required):
            if request.method not in ("GET", "HEAD"):  # a refused write is audited too
                target = f"{request.method} {request.url.path}"[:200]
                request.app.state.ctx.audit.record(who, "denied", target, 403)
            raise Problem(403, f"this needs the {required} role; the token {who.name!r} is {who.role}")
        return who
    return Depends(check)


Viewer = Annotated[Principal, role("viewer")]
Operator = Annotated[Principal, role("operator")]
Admin = Annotated[Principal, role("admin")]


@dataclass(frozen=True)
class Paging:
    offset: int
    limit: int


def _decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor.encode() + b"=" * (-len(cursor) % 4)))
        offset = value["o"]
        if isinstance(offset, int) and not isinstance(offset, bool) and 0 <= offset <= 10**9:
            return offset
    except (ValueError, TypeError, KeyError):
        pass
    raise Problem(400, "cursor: not a cursor this API gave out")


def encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode().rstrip("=")


def paging(limit: Annotated[int, Query(ge=1, le=LIMIT_MAX, description="items per page")] = LIMIT_DEFAULT,
           cursor: Annotated[str | None, Query(max_length=200, description="from `next_cursor`")] = None
           ) -> Paging:
    return Paging(_decode_cursor(cursor), limit)


Page = Annotated[Paging, Depends(paging)]


def page_body(items: list[Any], paging: Paging, total: int) -> dict[str, Any]:
    end = paging.offset + len(items)
    return {"items": items, "next_cursor": encode_cursor(end) if end < total else None, "total": total}


async def audited(c: Context, who: Principal | None, action: str, target: str, result: int,
                  detail: str | None = None) -> None:
    """`Audit.record` (a Redis write) from an async route, in the threadpool."""
    await run_in_threadpool(c.audit.record, who, action, target, result, detail)


async def daemon_request(c: Context, who: Principal, action: str, target: str, topic: str,
                         body: dict[str, Any], answer: str | None = None,
                         timeout: float = 10.0) -> dict[str, Any]:
    """A write through the daemons' MQTT contract, audited; a rejection becomes its HTTP code."""
    if not c.bridge.connected:
        await audited(c, who, action, target, 503)
        raise Problem(503, "broker: not connected")
    try:
        ok, got = await c.bridge.request(topic, body, timeout=timeout, answer=answer)
    except BridgeTimeout as exc:
        await audited(c, who, action, target, 503)
        raise Problem(503, f"daemon not answering: {exc}") from None
    if not ok:
        code = got.get("code")
        status = code if isinstance(code, int) and 400 <= code <= 599 else 500
        await audited(c, who, action, target, status, str(got.get("message", "")))
        raise Problem(status, str(got.get("message", "rejected")))
    got.pop("clientToken", None)
    return got
