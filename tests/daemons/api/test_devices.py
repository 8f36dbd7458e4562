"""Devices and shadows through the API against real shadow-sync: reads, writes, mapped rejections."""

from __future__ import annotations

import time

import pytest

from daemons.protocol.messages import DEVICE_ID_RE
from tests.daemons.api.conftest import Stack, on_both_stacks

PROBLEM = "application/problem+json"

pytestmark = on_both_stacks


def register(stack: Stack, *devices: tuple[str, str, str]) -> None:
    """Devices announce themselves as they do: a heartbeat with hw and fw, then an online status."""
    probe = stack.probe()
    try:
        for device_id, hw, fw in devices:
            beat = {"ts": int(time.time()), "seq": 1, "uptime_s": 5, "fw": fw, "hw": hw, "slot": 0}
            probe.publish(f"{stack.p}/{device_id}/heartbeat", beat)
            probe.publish(f"{stack.p}/{device_id}/status", {"online": True, "fw": fw, "ts": 1}, retain=False)
    finally:
        probe.close()
    deadline = time.monotonic() + 10
    with stack.client("viewer") as http:
        while time.monotonic() < deadline:
            if all(http.get(f"/api/v1/devices/{d}").status_code == 200 for d, _, _ in devices) and all(
                    http.get(f"/api/v1/devices/{d}").json()["connected"] for d, _, _ in devices):
                return
            time.sleep(0.05)
    raise AssertionError("devices not registered")


@pytest.fixture(scope="module", autouse=True)
def fleet(stack: Stack) -> None:
    register(stack, ("dev-a1", "esp32c3", "1.0.0"), ("dev-a2", "esp32c3", "1.1.0"),
             ("dev-b1", "esp32s3", "1.0.0"))


def test_healthz_and_metrics(stack: Stack) -> None:
    with stack.client(None) as http:
        assert http.get("/healthz").json() == {"status": "ok", "redis": "ok", "broker": "ok"}
        http.get("/api/v1/devices/dev-a1")
        text = http.get("/metrics").text
    assert "route=\"/api/v1/devices/{device_id}\"" in text, text
    assert "dev-a1" not in text


def test_list_filters_sorts_and_pages(stack: Stack) -> None:
    with stack.client("viewer") as http:
        body = http.get("/api/v1/devices").json()
        assert [d["id"] for d in body["items"]] == ["dev-a1", "dev-a2", "dev-b1"]
        assert body["total"] == 3 and body["next_cursor"] is None
        assert body["items"][0] | {"last_seen_at": 0, "health": {}} == {
            "id": "dev-a1", "hw": "esp32c3", "fw": "1.0.0", "connected": True, "last_seen_at": 0,
            "health": {}, "tags": {}}
        assert [d["id"] for d in http.get("/api/v1/devices", params={"hw": "esp32c3"}).json()["items"]] == [
            "dev-a1", "dev-a2"]
        assert [d["id"] for d in http.get("/api/v1/devices", params={"fw": "1.0.*"}).json()["items"]] == [
            "dev-a1", "dev-b1"]
        by_prefix = http.get("/api/v1/devices", params={"q": "dev-b"}).json()["items"]
        assert [d["id"] for d in by_prefix] == ["dev-b1"]
        assert http.get("/api/v1/devices", params={"connected": "false"}).json()["total"] == 0
        assert [d["id"] for d in http.get("/api/v1/devices", params={"sort": "-id"}).json()["items"]] == [
            "dev-b1", "dev-a2", "dev-a1"]
        first = http.get("/api/v1/devices", params={"limit": 2}).json()
        assert [d["id"] for d in first["items"]] == ["dev-a1", "dev-a2"] and first["next_cursor"]
        second = http.get("/api/v1/devices", params={"limit": 2, "cursor": first["next_cursor"]}).json()
        assert [d["id"] for d in second["items"]] == ["dev-b1"] and second["next_cursor"] is None
        bad = http.get("/api/v1/devices", params={"cursor": "nonsense"})
        assert bad.status_code == 400 and bad.headers["content-type"] == PROBLEM
        invalid = http.get("/api/v1/devices", params={"limit": 5000})
        assert invalid.status_code == 422 and invalid.json()["status"] == 422


@pytest.mark.parametrize("device_id", ["bad$id", "a%2Fb", "x" * 65, "-lead", "a+b"])
def test_an_invalid_device_id_is_a_400_naming_the_id_rule(stack: Stack, device_id: str) -> None:
    # API.md §0: 422 is for a body; a path id breaking PROTOCOL §0's rule is malformed (400). An
    # encoded `/` matches no route, yet answers the same 400 rather than the router's bare 404.
    with stack.client("operator") as http:
        for method, suffix in (("GET", ""), ("GET", "/shadow"), ("PUT", "/tags")):
            body = {} if method == "PUT" else None
            r = http.request(method, f"/api/v1/devices/{device_id}{suffix}", json=body)
            assert r.status_code == 400 and r.headers["content-type"] == PROBLEM, (method, suffix, r.text)
            assert r.json()["detail"].startswith("device_id: not a valid id")
            assert DEVICE_ID_RE.pattern in r.json()["detail"]
        assert http.get("/api/v1/devices/nobody/unknown").status_code == 404  # a valid id: still 404


def test_shadow_update_conflict_limits_and_audit(stack: Stack) -> None:
    with stack.client("operator") as http:
        ok = http.patch("/api/v1/devices/dev-a1/shadow", json={"state": {"desired": {"led": "blue"}}})
        assert ok.status_code == 200, ok.text
        assert ok.json()["state"] == {"desired": {"led": "blue"}} and ok.json()["version"] == 1
        shadow = http.get("/api/v1/devices/dev-a1/shadow").json()
        assert shadow["state"]["desired"] == {"led": "blue"} and shadow["state"]["delta"] == {"led": "blue"}
        conflict = http.patch("/api/v1/devices/dev-a1/shadow",
                              json={"state": {"desired": {"led": "red"}}, "version": 7})
        assert conflict.status_code == 409 and "version" in conflict.json()["detail"]
        big = http.patch("/api/v1/devices/dev-a1/shadow", json={"state": {"desired": {"blob": "x" * 9000}}})
        assert big.status_code == 413, big.text
        deep = {"a": {"b": {"c": {"d": {"e": {"f": {"g": 1}}}}}}}
        too_deep = http.patch("/api/v1/devices/dev-a1/shadow", json={"state": {"desired": deep}})
        assert too_deep.status_code == 400
        assert http.patch("/api/v1/devices/dev-a1/shadow", json={"state": {"wanted": {}}}).status_code == 422
        as_text = http.patch("/api/v1/devices/dev-a1/shadow", content=b'{"state": {"desired": {}}}',
                             headers={"Content-Type": "text/plain"})
        assert as_text.status_code == 415 and as_text.headers["content-type"] == PROBLEM
        named = http.patch("/api/v1/devices/dev-a1/shadow", params={"name": "cfg"},
                           json={"state": {"desired": {"x": 1}}})
        assert named.status_code == 200
        assert http.get("/api/v1/devices/dev-a1").json()["named_shadows"] == ["cfg"]
        assert http.delete("/api/v1/devices/dev-a1/shadow", params={"name": "cfg"}).status_code == 200
        assert http.delete("/api/v1/devices/dev-a1/shadow", params={"name": "cfg"}).status_code == 404
        assert http.get("/api/v1/devices/nobody").status_code == 404
    with stack.client("admin") as http:
        audit = http.get("/api/v1/audit", params={"limit": 20}).json()["items"]
    results = [(a["action"], a["target"], a["result"]) for a in audit if a["target"].startswith("dev-a1")]
    assert ("shadow.update", "dev-a1", 200) in results and ("shadow.update", "dev-a1", 409) in results
    assert ("shadow.update", "dev-a1", 413) in results and ("shadow.delete", "dev-a1/cfg", 404) in results
    assert all(a["token"] == "test-operator" and a["role"] == "operator" for a in audit
               if a["target"].startswith("dev-a1"))


def test_tags_bulk_and_summary(stack: Stack) -> None:
    with stack.client("operator") as http:
        put = http.put("/api/v1/devices/dev-a2/tags", json={"site": "lab", "floor": 2})
        assert put.status_code == 200 and put.json() == {"site": "lab", "floor": "2"}
        assert [d["id"] for d in http.get("/api/v1/devices", params={"tag.site": "lab"}).json()["items"]] == [
            "dev-a2"]
        assert http.put("/api/v1/devices/dev-a2/tags", json={"x" * 65: "v"}).status_code == 400
        bulk = http.post("/api/v1/shadow/bulk", json={"selector": {"hw": "esp32c3"},
                                                      "state": {"desired": {"rate": 30}}})
        assert bulk.status_code == 200 and bulk.json()["matched"] == 2
        bad = http.post("/api/v1/shadow/bulk", json={"selector": {"color": "red"}, "state": {"desired": {}}})
        assert bad.status_code == 400
        summary = http.get("/api/v1/fleet/summary").json()
    assert summary["devices"] == 3 and summary["connected"] == {"true": 3, "false": 0}
    assert summary["hw"] == {"esp32c3": 2, "esp32s3": 1}
