"""`python -m daemons.debug.gateway` / `fleet-debug-gateway`: remote debugging (PROTOCOL §4).

`{o}/debug/open` → a signed, expiring link to a page streaming that device's logs, and the
device's desired `debug` set through a normal shadow update (shadow-sync applies it). Log
batches on `{p}/+/logs` go to the browsers watching that device, in memory only: logs are never
stored. Sessions are not stored either: the link's signature is the session.

Run one replica: sessions need no shared state, but with shared subscriptions replicas would
split the log topics, so a browser would see only part of a device's lines.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter

from daemons.api import links as debug_links
from daemons.debug.http import DebugHttp, FanOut
from daemons.protocol.codec import CodecError, decode
from daemons.protocol.errors import FleetError
from daemons.protocol.messages import (
    Inbound,
    Outcome,
    client_token_of,
    device_topic,
    error_body,
    valid_device_id,
)
from daemons.runtime.app import run_daemon
from daemons.runtime.config import Settings
from daemons.runtime.logs import OncePerKey, get_logger
from daemons.runtime.metrics import DaemonMetrics

DAEMON = "debug-gateway"
TTL_MAX_S = 3600
LEVELS = ("error", "warn", "info", "debug", "verbose")
MAX_LINES, MAX_LINE_CHARS = 1000, 4096  # per batch relayed: bounds the memory a device can hold


class GatewayMetrics:
    """The gateway's own counters, on the daemon's registry. No device id labels."""

    def __init__(self, metrics: DaemonMetrics) -> None:
        reg = metrics.registry
        self.sessions = Counter("fleet_debug_sessions_opened_total", "Debug sessions opened", registry=reg)
        self.refused = Counter("fleet_debug_links_refused_total", "Link requests refused (403), by reason",
                               ["reason"], registry=reg)
        self.relayed = Counter("fleet_debug_lines_relayed_total", "Log lines sent to browsers", registry=reg)
        self.dropped = Counter("fleet_debug_lines_dropped_total",
                               "Log lines lost: by the device (reported) or by a slow browser's queue",
                               ["where"], registry=reg)


def parse_logs(payload: bytes) -> dict[str, Any] | None:
    """The firmware's batch `{"lines", "dropped", "dropped_total", "ts"}`, or plain text lines."""
    body: Any = None
    with contextlib.suppress(CodecError):  # not JSON or MessagePack: plain text lines
        body, _ = decode(payload)
    if not isinstance(body, dict):
        text = payload.decode("utf-8", errors="replace")
        lines: list[Any] = text.splitlines()
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


class DebugGateway:
    """The MQTT side: open requests and log batches. The HTTP side lives in daemons.debug.http."""

    tick_interval_s = 60.0

    def __init__(self, settings: Settings, key: bytes, fanout: FanOut, gm: GatewayMetrics,
                 base_url: str, clock: Callable[[], float] = time.time) -> None:
        self.p = settings.topic_prefix
        self.o = settings.ops_prefix
        self.key = key
        self.fanout = fanout
        self.gm = gm
        self.base_url = base_url.rstrip("/")
        self.clock = clock
        self.log = get_logger(DAEMON)
        self._once = OncePerKey()

    def topics(self) -> list[str]:
        return [f"{self.o}/debug/open", f"{self.p}/+/logs"]

    def tick(self, now: float) -> Outcome:
        return Outcome()

    def handle(self, batch: list[Inbound]) -> Outcome:
        out = Outcome()
        for message in batch:
            if message.topic == f"{self.o}/debug/open":
                self._open(message, out)
            else:
                self._logs(message, out)
        return out

    def _open(self, message: Inbound, out: Outcome) -> None:
        topic = f"{self.o}/debug/open"
        token: Any = None
        try:
            request, _ = decode(message.payload)
            token = client_token_of(request)
            problem = self._check_open(request)
        except CodecError as exc:
            problem = (exc.code, exc.message)
        if problem is not None:
            out.publish(f"{topic}/rejected", error_body(problem[0], problem[1], token))
            out.count("debug_open", f"rejected_{problem[0]}")
            return
        device_id, ttl_s = request["device_id"], request["ttl_s"]
        # Rounded up: the link lives at least ttl_s seconds.
        expires_at = math.ceil(self.clock()) + ttl_s
        session_id = debug_links.new_session_id()
        level = request.get("level", "debug")
        out.publish(f"{self.p}/{device_id}/shadow/update", {
            "state": {"desired": {"debug": {"enabled": True, "until": expires_at, "level": level}}},
            "clientToken": f"debug-{session_id}"[:64]})
        answer: dict[str, Any] = {
            "session_id": session_id, "device_id": device_id, "expires_at": expires_at,
            "link": self.base_url + debug_links.link_path(self.key, session_id, device_id, expires_at)}
        if token is not None:
            answer["clientToken"] = token
        out.publish(f"{topic}/accepted", answer)
        out.count("debug_open", "accepted")
        self.gm.sessions.inc()
        self.log.info("session_opened", session_id=session_id, device_id=device_id,
                      operator=request["operator"], expires_at=expires_at)

    @staticmethod
    def _check_open(request: dict[str, Any]) -> tuple[int, str] | None:
        if not valid_device_id(request.get("device_id")):
            return 400, "device_id: not a valid device id"
        ttl = request.get("ttl_s")
        if not isinstance(ttl, int) or isinstance(ttl, bool) or not 1 <= ttl <= TTL_MAX_S:
            return 400, f"ttl_s: an integer from 1 to {TTL_MAX_S} expected"
        operator = request.get("operator")
        if not isinstance(operator, str) or not 1 <= len(operator) <= 128:
            return 400, "operator: a non-empty string (at most 128 characters) expected"
        if "level" in request and request["level"] not in LEVELS:
            return 400, f"level: one of {', '.join(LEVELS)} expected"
        if "clientToken" in request and client_token_of(request) is None:
            return 400, "clientToken: a string of at most 64 characters expected"
        return None

    def _logs(self, message: Inbound, out: Outcome) -> None:
        split = device_topic(message.topic, self.p)
        device_id = split[0] if split is not None else ""
        if split is None or split[1] != "logs" or not valid_device_id(device_id):
            out.count("logs", "bad_id")
            if self._once.first(message.topic):
                self.log.warning("bad_device_id", topic=message.topic)
            return
        batch = parse_logs(message.payload)
        if batch is None:
            out.count("logs", "malformed")
            return
        if batch.get("dropped"):
            self.gm.dropped.labels("device").inc(batch["dropped"])
        reached, lost = self.fanout.publish(device_id, {"device_id": device_id, **batch})
        if lost:
            self.gm.dropped.labels("relay").inc(lost)
        out.count("logs", "relayed" if reached else "no_viewer")


def base_url(settings: Settings, port: int) -> str:
    return settings.debug_public_url or f"http://127.0.0.1:{port}"


def build(settings: Settings, redis: Any, metrics: DaemonMetrics) -> DebugGateway:
    log = get_logger(DAEMON)
    key = debug_links.link_key(settings.debug_link_key, settings.ota_master_key)
    if key.ephemeral:
        log.warning("debug_link_key_ephemeral",
                    detail="no FLEET_DEBUG_LINK_KEY or FLEET_OTA_MASTER_KEY: a random key, "
                           "links stop working when this process ends")
    gm = GatewayMetrics(metrics)
    fanout = FanOut()
    try:
        http = DebugHttp(settings.debug_http_host, settings.debug_http_port, key.key, fanout,
                         on_refused=lambda reason: gm.refused.labels(reason).inc(),
                         on_relayed=gm.relayed.inc)
    except OSError as exc:
        raise FleetError(f"FLEET_DEBUG_HTTP_PORT (debug_http_port): cannot listen on "
                         f"{settings.debug_http_host}:{settings.debug_http_port}: {exc}") from None
    http.start()
    url = base_url(settings, http.port)
    log.info("http_listening", host=settings.debug_http_host, port=http.port, public_url=url,
             key_source=key.source)
    return DebugGateway(settings, key.key, fanout, gm, url)


def main(argv: list[str] | None = None) -> int:
    return run_daemon(DAEMON, build, argv)


if __name__ == "__main__":
    sys.exit(main())
