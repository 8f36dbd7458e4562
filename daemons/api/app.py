"""The ASGI application: FastAPI routes under /api/v1, the console at /, /healthz and /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import redis as redis_lib
from fastapi import FastAPI, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.concurrency import run_in_threadpool

from daemons.api import problems, routes_devices, routes_ops, routes_ota
from daemons.api.audit import Audit
from daemons.api.auth import TokenStore
from daemons.api.bridge import Bridge, Listener
from daemons.api.debug import DebugSessions
from daemons.api.deps import Context
from daemons.api.fleetindex import FleetIndex
from daemons.api.links import link_key
from daemons.protocol.messages import Inbound
from daemons.runtime.config import Settings
from daemons.runtime.logs import get_logger
from daemons.runtime.notify import Notifier
from daemons.runtime.once import ClaimOnce
from otaplanner.rollout_store import RolloutStore

STATIC = Path(__file__).parent / "static"
API = "/api/v1"


class ApiMetrics:
    """Labels are bounded: the route template (`/api/v1/devices/{device_id}`), never the path."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("fleet_api_requests_total", "HTTP requests answered",
                                ["method", "route", "status"], registry=self.registry)
        self.seconds = Histogram("fleet_api_request_seconds", "Time to answer a request", ["route"],
                                 registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0))
        self.debug_sessions = Counter("fleet_debug_sessions_opened_total", "Debug sessions opened",
                                      registry=self.registry)
        self.debug_refused = Counter("fleet_debug_links_refused_total", "Debug links refused, by reason",
                                     ["reason"], registry=self.registry)
        self.debug_relayed = Counter("fleet_debug_lines_relayed_total", "Log lines sent to browsers",
                                     registry=self.registry)
        self.debug_dropped = Counter("fleet_debug_lines_dropped_total",
                                     "Log lines lost: by the device (reported) or by a slow browser's queue",
                                     ["where"], registry=self.registry)


def public_url(settings: Settings) -> str:
    """The API's base URL for links: FLEET_API_PUBLIC_URL, else where it listens (a wildcard
    address is shown as 127.0.0.1, which a browser can open)."""
    host = "127.0.0.1" if settings.api_host in ("0.0.0.0", "::", "") else settings.api_host
    if ":" in host:
        host = f"[{host}]"
    return (settings.api_public_url or f"http://{host}:{settings.api_port}").rstrip("/")


def build_context(settings: Settings, redis: Any, bridge: Bridge) -> Context:
    from otaplanner.artifacts import store_from_settings

    tokens = TokenStore(redis)
    audit = Audit(redis, bridge, settings.ops_prefix)
    key = link_key(settings.debug_link_key, settings.ota_master_key)
    url = public_url(settings)
    c = Context(settings, redis, bridge, tokens, audit, FleetIndex(redis), key.key, url)
    c.debug = DebugSessions(redis, bridge, audit, key.key, url, settings.topic_prefix, settings.ops_prefix)
    c.artifacts = store_from_settings(settings)
    c.rollouts = RolloutStore(redis)
    return c


# Every API replica subscribes plainly and gets each message: one (the first to claim it in Redis)
# stores an alert or answers a door request. The API's sessions are clean (no backlog to redeliver
# late), so replicas see a message within moments of each other: a short claim suffices, and
# narrows the time in which a byte-identical request (same clientToken) counts as a repeat.
CLAIM_TTL_S = 60


async def _start_listeners(c: Context) -> list[int]:
    """Permanent subscriptions: alerts and the health summary kept in Redis, the MQTT debug door."""
    loop = asyncio.get_running_loop()
    o = c.settings.ops_prefix
    once = ClaimOnce(c.redis, c.bridge.client_id, [f"{o}/health/alerts", f"{o}/debug/open"], CLAIM_TTL_S)
    log = get_logger("api")

    def mine(topic: str, payload: bytes) -> bool:
        return bool(once.keep([Inbound(topic, payload, 1, False, None)]))

    def guarded(listener: Listener) -> Listener:
        """A listener whose Redis errors are logged: raised in paho's thread, they would stop it."""
        def run(topic: str, payload: bytes) -> None:
            try:
                listener(topic, payload)
            except redis_lib.exceptions.RedisError as exc:
                log.warning("listener_failed", topic=topic, error=str(exc))
        return run

    @guarded
    def on_alert(topic: str, payload: bytes) -> None:
        if mine(topic, payload):
            routes_ops.store_alert(c, payload)

    @guarded
    def on_summary(topic: str, payload: bytes) -> None:
        if payload:  # the latest summary: every replica may store it
            c.redis.set(routes_ops.SUMMARY_KEY, payload)

    @guarded
    def on_debug_open(topic: str, payload: bytes) -> None:
        if mine(topic, payload):
            asyncio.run_coroutine_threadsafe(c.debug.open_from_mqtt(payload), loop)

    return [await c.bridge.listen(f"{o}/health/alerts", on_alert),
            await c.bridge.listen(f"{o}/health/summary", on_summary),
            await c.bridge.listen(f"{o}/debug/open", on_debug_open)]


async def _watchdog(notifier: Notifier) -> None:
    # Pinged from the event loop itself: a loop that stops turning stops the pings.
    while notifier.ping_interval_s is not None:
        notifier.watchdog()
        await asyncio.sleep(min(1.0, notifier.ping_interval_s / 2))


def create_app(settings: Settings, redis: Any, bridge: Bridge | None = None) -> FastAPI:
    """The application. The bridge is connected in the lifespan (and stopped after it)."""
    log = get_logger("api")
    metrics = ApiMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        c: Context = app.state.ctx
        if not await asyncio.to_thread(c.bridge.start, 5.0):
            log.warning("broker_unreachable", mqtt=settings.mqtt_url,
                        detail="writes answer 503 until it is back")
        try:
            await run_in_threadpool(c.index.backfill)
        except redis_lib.exceptions.RedisError as exc:
            log.warning("redis_unreachable", error=str(exc))
        handles = await _start_listeners(c)
        expiry = asyncio.ensure_future(c.debug.run_expiry())
        notifier = Notifier()  # systemd Type=notify: READY=1 now, WATCHDOG=1 while the loop turns
        notifier.ready()
        pings = asyncio.ensure_future(_watchdog(notifier))
        log.info("started", url=public_url(settings), mqtt=settings.mqtt_url)
        try:
            yield
        finally:
            notifier.stopping()
            pings.cancel()
            notifier.close()
            expiry.cancel()
            for h in handles:
                c.bridge.unlisten(h)
            c.bridge.stop()
            log.info("stopped")

    app = FastAPI(title="fleet operator API", version="1", lifespan=lifespan,
                  openapi_url=f"{API}/openapi.json", docs_url=f"{API}/docs", redoc_url=None,
                  description="API.md: the operator's HTTP door to the fleet. Errors are RFC 9457 "
                              "problem details; lists page with `limit` and `cursor`.")
    app.state.ctx = build_context(settings, redis, bridge or Bridge(settings))
    app.state.ctx.metrics = metrics
    app.state.ctx.debug.on_open = metrics.debug_sessions.inc
    problems.install(app, API)

    async def redis_away(request: Request, exc: Exception) -> Response:
        return problems.problem_response(503, f"redis: {type(exc).__name__}")

    # On Redis Cluster also: the cluster down or a master gone (ClusterError), a slot not served.
    for away in (redis_lib.exceptions.ConnectionError, redis_lib.exceptions.TimeoutError,
                 redis_lib.exceptions.ClusterError, redis_lib.exceptions.SlotNotCoveredError):
        app.add_exception_handler(away, redis_away)
    for r in (routes_devices.router, routes_ota.router, routes_ops.router):
        app.include_router(r, prefix=API)
    app.include_router(routes_ops.pages)

    @app.middleware("http")
    async def media_type(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        # API.md §0: JSON bodies (multipart for a release upload); anything else is 415, not 422.
        if request.method in ("POST", "PUT", "PATCH") and request.url.path.startswith(API + "/"):
            kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
            headers = request.headers
            has_body = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
            if has_body and kind not in ("application/json", "multipart/form-data"):
                return problems.problem_response(415, f"unsupported content type {kind or '(none)'!r}: "
                                                      "send application/json")
        return await call_next(request)

    @app.middleware("http")
    async def measure(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            # Routes of an included router know their path without the router's prefix.
            api = request.url.path.startswith(API + "/")
            if template != "unmatched" and api and not template.startswith(API):
                template = API + template
            metrics.requests.labels(request.method, template, str(status)).inc()
            metrics.seconds.labels(template).observe(time.perf_counter() - started)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> JSONResponse:
        c: Context = app.state.ctx
        checks = {"redis": False, "broker": c.bridge.connected}
        with contextlib.suppress(Exception):
            checks["redis"] = bool(c.redis.ping())
        ok = all(checks.values())
        body = {"status": "ok" if ok else "unavailable",
                **{k: "ok" if v else "down" for k, v in checks.items()}}
        if ok:
            return JSONResponse(body)
        return problems.problem_response(503, "down: " + ", ".join(k for k, v in checks.items() if not v),
                                         extra=body)

    @app.get("/metrics", include_in_schema=False)
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    def console() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
