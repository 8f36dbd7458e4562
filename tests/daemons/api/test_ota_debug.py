"""Releases, rollouts and debug sessions through the API, with daemons.sim's simulated devices."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.daemons.api.conftest import Stack, on_both_stacks, stack_redis, start_stack, stop_stack
from tests.support import Server

DEVICES = 4


pytestmark = on_both_stacks


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest, broker: Server,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_stack(stack_redis(request), broker, tmp_path_factory.mktemp("api-ota"),
                    ("shadowsync", "otaplanner", "healthwatch"), FLEET_HEARTBEAT_INTERVAL_S="1")
    try:
        s.simulate(DEVICES, interval_s=0.5)
        deadline = time.monotonic() + 20
        with s.client("viewer") as http:
            while http.get("/api/v1/devices", params={"connected": "true"}).json()["total"] < DEVICES:
                assert time.monotonic() < deadline, "simulated devices did not show up"
                time.sleep(0.1)
        yield s
    finally:
        stop_stack(s)


def publish_release(http: httpx.Client, version: str,
                    hw: tuple[str, ...] = ("esp32c3", "esp32s3")) -> httpx.Response:
    return http.post("/api/v1/releases", data={"version": version, "hw": list(hw), "notes": "test"},
                     files={"file": ("fw.bin", b"\x7fELF" + bytes(range(256)) * 64)})


def test_release_rollout_completes_and_streams_its_progress(stack: Stack) -> None:
    with stack.client("admin") as http:
        r = publish_release(http, "2.0.0")
        assert r.status_code == 201, r.text
        assert r.json()["size"] == 4 + 256 * 64 and r.json()["hw"] == ["esp32c3", "esp32s3"]
        assert publish_release(http, "2.0.0").status_code == 201  # same contents: idempotent
        assert http.get("/api/v1/releases").json()["items"][0]["version"] == "2.0.0"
        assert http.get("/api/v1/releases/2.0.0").status_code == 200
        assert http.get("/api/v1/releases/7.7.7").status_code == 404
        odd = publish_release(http, "Y..")  # a valid version that is no path segment as it is
        assert odd.status_code == 201, odd.text
        assert odd.json()["object"].startswith("firmware/_Y__-"), odd.json()
    with stack.client("operator") as http:
        assert publish_release(http, "2.0.1").status_code == 403
        missing = http.post("/api/v1/rollouts", json={"rollout_id": "r0", "version": "7.7.7"})
        assert missing.status_code == 404, missing.text
        created = http.post("/api/v1/rollouts", json={
            "rollout_id": "r1", "version": "2.0.0", "stages": [50, 100], "soak_s": 0, "success_pct": 100,
            "max_failure_pct": 50, "min_devices_for_gate": 1, "timeout_s": 60})
        assert created.status_code == 201, created.text
        assert created.json()["state"] == "running"
        seen: list[dict[str, object]] = []
        with http.stream("GET", "/api/v1/rollouts/r1/events", timeout=60) as stream:
            for line in stream.iter_lines():
                if line.startswith("data:"):
                    seen.append(json.loads(line[5:]))
        assert seen[-1]["state"] == "completed", seen[-1]
        assert any(s.get("counts", {}).get("succeeded", 0) < DEVICES for s in seen if "counts" in s)
        device = http.get("/api/v1/devices/sim-00001").json()
        assert device["ota"] == {"rollout_id": "r1", "job_id": "r1@sim-00001", "state": "succeeded"}
        final = http.get("/api/v1/rollouts/r1").json()
        assert final["counts"]["succeeded"] == DEVICES and final["events"][0]["event"] == "created"
        conflict = http.post("/api/v1/rollouts/r1/pause")
        assert conflict.status_code == 409 and conflict.headers["content-type"] == "application/problem+json"
        assert http.get("/api/v1/rollouts").json()["items"][0]["rollout_id"] == "r1"
        summary = http.get("/api/v1/fleet/summary").json()
        assert summary["fw"] == {"2.0.0": DEVICES} and summary["rollouts"]["by_state"] == {"completed": 1}
    with stack.client("admin") as http:
        actions = [(a["action"], a["target"], a["result"]) for a in http.get("/api/v1/audit").json()["items"]]
    assert ("release.publish", "2.0.0", 201) in actions and ("rollout.create", "r1", 201) in actions
    assert ("rollout.create", "r0", 404) in actions and ("rollout.pause", "r1", 409) in actions


def ws_url(link: str) -> str:
    base, _, query = link.partition("?")
    return base.replace("http://", "ws://") + "/ws?" + query


def test_debug_session_streams_logs_then_expires_and_clears_desired(stack: Stack) -> None:
    with stack.client("operator") as http:
        opened = http.post("/api/v1/devices/sim-00001/debug", json={"ttl_s": 4})
        assert opened.status_code == 201, opened.text
        session = opened.json()
        assert session["device_id"] == "sim-00001"
        desired = http.get("/api/v1/devices/sim-00001/shadow").json()["state"]["desired"]
        assert desired["debug"]["enabled"] is True and desired["debug"]["until"] == session["expires_at"]
        page = httpx.get(session["link"])
        assert page.status_code == 200 and "logstream.js" in page.text
        tampered = session["link"].replace("sim-00001", "sim-00002")
        assert httpx.get(tampered).status_code == 403
        with connect(ws_url(tampered)) as ws, pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
        frames = []
        with connect(ws_url(session["link"])) as ws:
            assert json.loads(ws.recv(timeout=5))["type"] == "hello"
            with pytest.raises(ConnectionClosed) as ended:
                while True:
                    frames.append(json.loads(ws.recv(timeout=10)))
        assert ended.value.rcvd is not None and ended.value.rcvd.code == 4410
        assert frames and all(f["type"] == "logs" and f["device_id"] == "sim-00001" for f in frames)
        assert any("app:" in line for f in frames for line in f["lines"])
        deadline = time.monotonic() + 10
        while "debug" in http.get("/api/v1/devices/sim-00001/shadow").json()["state"]["desired"]:
            assert time.monotonic() < deadline, "desired debug not cleared at expiry"
            time.sleep(0.1)
        again = http.post("/api/v1/devices/sim-00002/debug", json={"ttl_s": 600}).json()
        with connect(ws_url(again["link"])) as ws:
            assert json.loads(ws.recv(timeout=5))["type"] == "hello"
            assert http.delete("/api/v1/devices/sim-00002/debug").status_code == 204
            with pytest.raises(ConnectionClosed) as closed_early:
                while True:
                    ws.recv(timeout=10)
        assert closed_early.value.rcvd is not None and closed_early.value.rcvd.code == 4410
        assert "debug" not in http.get("/api/v1/devices/sim-00002/shadow").json()["state"]["desired"]
        metrics = httpx.get(f"{stack.url}/metrics").text
        assert 'fleet_debug_links_refused_total{reason="bad_signature"} 2.0' in metrics
        assert "fleet_debug_sessions_opened_total 2.0" in metrics and "sim-000" not in metrics  # HTTP ones
        assert http.post("/api/v1/devices/sim-00002/debug", json={"ttl_s": 99999}).status_code == 422
    with stack.client("admin") as http:
        actions = [(a["action"], a["target"]) for a in http.get("/api/v1/audit").json()["items"]]
    for expected in [("debug.open", "sim-00001"), ("debug.expire", "sim-00001"), ("debug.open", "sim-00002"),
                     ("debug.close", "sim-00002")]:
        assert expected in actions


def test_the_mqtt_door_opens_sessions_too(stack: Stack) -> None:
    probe = stack.probe(f"{stack.o}/debug/open/+")
    try:
        answer = probe.request(f"{stack.o}/debug/open", {"device_id": "sim-00003", "ttl_s": 30,
                                                          "operator": "me", "clientToken": "t1"})
        assert answer.topic.endswith("/accepted") and answer.body["clientToken"] == "t1"
        assert answer.body["link"].startswith(stack.url + "/debug/")
        bad = probe.request(f"{stack.o}/debug/open", {"device_id": "a/b", "ttl_s": 30, "operator": "me"})
        assert bad.topic.endswith("/rejected") and bad.body["code"] == 400
        # Hostile payloads (issue 11): answered with their clientToken, never an internal error.
        for raw in (b'{"clientToken":"h","device_id":"d1","x":' + b"[" * 300 + b"1" + b"]" * 300 + b"}",
                    b'{"clientToken":"h","device_id":"d1","ttl_s":60,"ttl_s":3600,"operator":"x"}',
                    b'{"clientToken":"h","device_id":"d1","ttl_s":9223372036854775808,"operator":"x"}',
                    b'{"clientToken":"h","device_id":"d1","ttl_s":60,"operator":"\xff"}'):
            r = probe.request(f"{stack.o}/debug/open", raw=raw)
            assert r.topic.endswith("/rejected") and r.body["code"] == 400, raw
            assert r.body["clientToken"] == "h", r.body
    finally:
        probe.close()


def test_health_alerts_and_summary(stack: Stack) -> None:
    deadline = time.monotonic() + 20
    with stack.client("viewer") as http:
        while not http.get("/api/v1/health/summary").json().get("devices"):
            assert time.monotonic() < deadline, "no health summary"
            time.sleep(0.2)
        assert http.get("/api/v1/health/alerts", params={"status": "critical"}).status_code == 200
        scored = http.get("/api/v1/devices", params={"sort": "health_score"}).json()["items"]
        scores = [d["health"]["score"] for d in scored]
        known = [s for s in scores if s is not None]
        assert known and scores[:len(known)] == sorted(known)  # worst first, unscored last
