"""Every route of the OpenAPI document × every kind of caller: no token, bad tokens, each role."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.daemons.api.conftest import Stack, on_both_stacks

ROLES = ("viewer", "operator", "admin")
# (method, path template, least role, request kwargs). Writes aim at things that do not exist
# (or are harmless), so that a caller who is allowed gets the daemon's answer, never a 401/403.
ROUTES: list[tuple[str, str, str, dict[str, Any]]] = [
    ("GET", "/api/v1/devices", "viewer", {}),
    ("GET", "/api/v1/fleet/summary", "viewer", {}),
    ("GET", "/api/v1/devices/{device_id}", "viewer", {}),
    ("GET", "/api/v1/devices/{device_id}/shadow", "viewer", {}),
    ("PATCH", "/api/v1/devices/{device_id}/shadow", "operator", {"json": {"state": {"desired": {"a": 1}}}}),
    ("DELETE", "/api/v1/devices/{device_id}/shadow", "operator", {}),
    ("PUT", "/api/v1/devices/{device_id}/tags", "operator", {"json": {"k": "v"}}),
    ("POST", "/api/v1/shadow/bulk", "operator", {"json": {"selector": {"ids": ["role-dev"]},
                                                          "state": {"desired": {"a": 2}}}}),
    ("GET", "/api/v1/releases", "viewer", {}),
    ("GET", "/api/v1/releases/{version}", "viewer", {}),
    ("POST", "/api/v1/releases", "admin", {"data": {"version": "9.9.9", "hw": ["x"]},
                                           "files": {"file": ("fw.bin", b"\x00" * 64)}}),
    ("GET", "/api/v1/rollouts", "viewer", {}),
    ("GET", "/api/v1/rollouts/{rid}", "viewer", {}),
    ("POST", "/api/v1/rollouts", "operator", {"json": {"rollout_id": "r-role", "version": "nope"}}),
    ("POST", "/api/v1/rollouts/{rid}/{action}", "operator", {}),
    ("GET", "/api/v1/rollouts/{rid}/events", "viewer", {}),
    ("GET", "/api/v1/health/alerts", "viewer", {}),
    ("GET", "/api/v1/health/summary", "viewer", {}),
    ("POST", "/api/v1/devices/{device_id}/debug", "operator", {"json": {"ttl_s": 5}}),
    ("DELETE", "/api/v1/devices/{device_id}/debug", "operator", {}),
    ("GET", "/api/v1/audit", "admin", {}),
    ("GET", "/api/v1/session", "viewer", {}),
]
VALUES = {"device_id": "role-dev", "version": "9.9.9", "rid": "r-none", "action": "pause"}

pytestmark = on_both_stacks


def _url(template: str) -> str:
    return template.format(**VALUES)


def test_the_table_covers_every_route_of_the_document(stack: Stack) -> None:
    with stack.client(None) as http:
        doc = http.get("/api/v1/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    documented = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    documented -= {("POST", "/api/v1/session"), ("DELETE", "/api/v1/session")}  # login/logout: no role
    assert documented == {(m, p) for m, p, _, _ in ROUTES}


@pytest.mark.parametrize(("method", "template", "least", "kwargs"), ROUTES,
                         ids=[f"{m} {p}" for m, p, _, _ in ROUTES])
def test_route_by_caller(stack: Stack, method: str, template: str, least: str,
                         kwargs: dict[str, Any]) -> None:
    url = _url(template)
    audited_before = stack.redis.llen("fleet:api:audit")
    for bad in (None, "revoked", "expired", "bogus"):
        with stack.client(bad) as http:
            r = http.request(method, url, **kwargs)
        assert r.status_code == 401, (bad, r.text)
        assert r.headers["content-type"] == "application/problem+json" and r.json()["status"] == 401
    for role in ROLES:
        with stack.client(role) as http:
            r = http.request(method, url, **kwargs)
        if ROLES.index(role) < ROLES.index(least):
            assert r.status_code == 403, (role, r.text)
            assert r.json()["title"] == "Forbidden"
        else:
            assert r.status_code not in (401, 403, 500), (role, r.status_code, r.text)
    if method != "GET" and not template.endswith("/session"):
        # Every write is audited: each allowed attempt (whatever the daemon answered) and each refusal.
        new = stack.redis.llen("fleet:api:audit") - audited_before
        writes = [json.loads(e) for e in stack.redis.lrange("fleet:api:audit", 0, new - 1)]
        allowed = [w for w in writes if w["action"] != "denied"]
        denied = [w for w in writes if w["action"] == "denied"]
        assert len(allowed) == 3 - ROLES.index(least), writes
        assert {w["role"] for w in allowed} == set(ROLES[ROLES.index(least):])
        assert len(denied) == ROLES.index(least) and all(w["result"] == 403 for w in denied)


def test_a_revoked_token_ends_its_console_sessions(stack: Stack) -> None:
    from daemons.api.auth import TokenStore

    made = TokenStore(stack.redis).create("short-lived", "viewer")
    with stack.client(None) as http:
        assert http.post("/api/v1/session", json={"token": made["token"]}).json()["role"] == "viewer"
        cookie = http.cookies.get("fleet_session")
        assert cookie
        assert http.get("/api/v1/devices").status_code == 200
        TokenStore(stack.redis).revoke(made["id"])
        assert http.get("/api/v1/devices").status_code == 401
        assert http.post("/api/v1/session", json={"token": "fleet_nope"}).status_code == 401
