"""Remote debugging (PROTOCOL §4, API.md §3): sessions, the live log page and its WebSocket.

Opening a session sets the device's desired `debug` through shadow-sync (an MQTT update, waited
for) and signs a link (daemons.api.links). Sessions are kept in Redis, in the sorted set
`fleet:api:debug:sessions` (member: JSON `{session_id, device_id, expires_at}`, score: expiry), so
any API replica can close them: when a session expires or is closed, desired `debug` is cleared
(unless a later session of the same device still runs) and an audit entry written.

`{o}/debug/open` on MQTT is served by the same code, so `mosquitto_pub` users keep their door.
Log batches (`{p}/<id>/logs`, QoS 0) are subscribed only while a browser watches that device.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool

from daemons.api import links
from daemons.api.audit import Audit
from daemons.api.auth import Principal
from daemons.api.bridge import Bridge, BridgeTimeout
from daemons.protocol.codec import CodecError, decode
from daemons.protocol.errors import Rejected
from daemons.protocol.messages import Outcome, Reply, client_token_of, valid_device_id
from daemons.runtime.logs import get_logger

TTL_MAX_S = 3600
LEVELS = ("error", "warn", "info", "debug", "verbose")
MAX_LINES, MAX_LINE_CHARS = 1000, 4096  # per batch relayed: bounds the memory a device can hold
QUEUE_MAX = 256  # batches waiting per browser; a slow one loses lines (counted, told)
CLOSE_BAD_LINK, CLOSE_EXPIRED = 4403, 4410


def parse_logs(payload: bytes) -> dict[str, Any] | None:
    """The firmware's batch `{"lines", "dropped", "dropped_total", "ts"}`, or plain text lines."""
    body: Any = None
    with contextlib.suppress(CodecError):  # not JSON or MessagePack: plain text lines
        body, _ = decode(payload)
    if not isinstance(body, dict):
        lines: list[Any] = payload.decode("utf-8", errors="replace").splitlines()
        if not lines:
            return None
        body = {"lines": lines}
    lines = body.get("lines")
    if not isinstance(lines, list):
        return None
    out: dict[str, Any] = {
        "lines": [(ln if isinstance(ln, str) else str(ln))[:MAX_LINE_CHARS] for ln in lines[:MAX_LINES]]}
    for name in ("dropped", "dropped_total", "ts"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            out[name] = value
    return out


class DebugSessions:
    def __init__(self, redis: Any, bridge: Bridge, audit: Audit, key: bytes, base_url: str,
                 prefix: str, ops: str, namespace: str = "fleet") -> None:
        self.redis = redis
        self.bridge = bridge
        self.audit = audit
        self.key = key
        self.base_url = base_url.rstrip("/")
        self.p = prefix
        self.o = ops
        self.zkey = f"{namespace}:api:debug:sessions"
        self.log = get_logger("api")
        # device id -> events set when its sessions are closed early (wakes its WebSockets)
        self.closed: dict[str, asyncio.Event] = {}
        self.on_open: Callable[[], None] | None = None  # counts sessions (the API's metrics)

    async def _desired(self, device_id: str, debug: dict[str, Any] | None) -> None:
        ok, got = await self.bridge.request(f"{self.p}/{device_id}/shadow/update",
                                            {"state": {"desired": {"debug": debug}}})
        if not ok:
            raise Rejected(int(got.get("code", 500)), str(got.get("message", "shadow update rejected")))

    async def open(self, device_id: str, ttl_s: int, who: Principal | None, operator: str,
                   level: str = "debug") -> dict[str, Any]:
        """Open a session: `{session_id, device_id, link, expires_at}`. Raises Rejected."""
        if not valid_device_id(device_id):
            raise Rejected(400, "device_id: not a valid device id")
        if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or not 1 <= ttl_s <= TTL_MAX_S:
            raise Rejected(400, f"ttl_s: an integer from 1 to {TTL_MAX_S} expected")
        if level not in LEVELS:
            raise Rejected(400, f"level: one of {', '.join(LEVELS)} expected")
        expires_at = math.ceil(time.time()) + ttl_s  # rounded up: the link lives at least ttl_s
        session_id = links.new_session_id()
        try:
            await self._desired(device_id, {"enabled": True, "until": expires_at, "level": level})
        except BridgeTimeout as exc:
            raise Rejected(503, f"shadow-sync not answering: {exc}") from None
        row = json.dumps({"session_id": session_id, "device_id": device_id, "expires_at": expires_at},
                         sort_keys=True)
        await run_in_threadpool(self.redis.zadd, self.zkey, {row: expires_at})
        answer = {"session_id": session_id, "device_id": device_id, "expires_at": expires_at,
                  "link": self.base_url + links.link_path(self.key, session_id, device_id, expires_at)}
        await run_in_threadpool(self.audit.record, who, "debug.open", device_id, 201,
                                f"operator {operator}, until {expires_at}")
        if self.on_open is not None:
            self.on_open()
        return answer

    def _sessions(self, device_id: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        rows = [(raw, json.loads(raw)) for raw in self.redis.zrange(self.zkey, 0, -1)]
        return [(raw, s) for raw, s in rows if device_id is None or s["device_id"] == device_id]

    async def _end(self, raw: str, session: dict[str, Any], who: Principal | None, why: str) -> bool:
        if not await run_in_threadpool(self.redis.zrem, self.zkey, raw):
            return False  # another replica (or call) ended it
        device_id = session["device_id"]
        if not await run_in_threadpool(self._sessions, device_id):  # no later session still wants logs
            try:
                await self._desired(device_id, None)
            except (BridgeTimeout, Rejected) as exc:
                self.log.warning("debug_clear_failed", device_id=device_id, error=str(exc))
        if why == "expire":
            await run_in_threadpool(self.audit.record, who, "debug.expire", device_id, 200,
                                    f"session {session['session_id']}")
        return True

    async def close(self, device_id: str, who: Principal) -> int:
        """End every session of the device now; how many there were."""
        ended = [s["session_id"] for raw, s in await run_in_threadpool(self._sessions, device_id)
                 if await self._end(raw, s, who, "close")]
        event = self.closed.pop(device_id, None)
        if event is not None:
            event.set()
        await run_in_threadpool(self.audit.record, who, "debug.close", device_id, 204,
                                f"sessions {', '.join(ended)}" if ended else "no open session")
        return len(ended)

    async def expire(self, now: float) -> None:
        for raw in await run_in_threadpool(self.redis.zrangebyscore, self.zkey, "-inf", now):
            await self._end(raw, json.loads(raw), None, "expire")

    async def run_expiry(self, interval_s: float = 1.0) -> None:
        while True:
            try:
                await self.expire(time.time())
            except Exception as exc:  # Redis away for a moment: try again at the next turn
                self.log.warning("debug_expiry_failed", error=str(exc))
            await asyncio.sleep(interval_s)

    # -- MQTT door: {o}/debug/open ---------------------------------------------------------------

    async def open_from_mqtt(self, payload: bytes) -> None:
        """Serve one `{o}/debug/open` request (PROTOCOL §4), answered with its clientToken."""
        token: str | None = None
        try:
            request, _ = decode(payload)
            token = client_token_of(request)
            operator = request.get("operator")
            if not isinstance(operator, str) or not 1 <= len(operator) <= 128:
                raise Rejected(400, "operator: a non-empty string (at most 128 characters) expected")
            if "clientToken" in request and token is None:
                raise Rejected(400, "clientToken: a string of at most 64 characters expected")
            answer = await self.open(request.get("device_id"), request.get("ttl_s"),  # type: ignore[arg-type]
                                     None, operator, request.get("level", "debug"))
            error: Rejected | None = None
        except CodecError as exc:
            error, token = exc, exc.token
        except Rejected as exc:
            error = exc
        out = Outcome()
        reply = Reply(f"{self.o}/debug/open", token, "debug_open")
        if error is None:
            reply.accept(out, answer)
        else:
            reply.reject(out, error)
        for message in out.publishes:
            self.bridge.publish(message.topic, message.payload)
