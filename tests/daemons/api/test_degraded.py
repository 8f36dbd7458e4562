"""fleet-api with the broker or Redis away: it starts, says which one in /healthz (503), keeps
serving what it can, and answers 503 problem details for what it cannot."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.daemons.api.conftest import Stack
from tests.support import Daemon, free_port, wait_port


def run_api(stack: Stack, **env: str) -> tuple[Daemon, str]:
    port = free_port()
    d = Daemon("daemons.api", {**stack.env, "FLEET_API_PORT": str(port), **env}).start(timeout=30)
    wait_port(port)
    return d, f"http://127.0.0.1:{port}"


def test_broker_away(stack: Stack) -> None:
    api, url = run_api(stack, FLEET_MQTT_URL=f"mqtt://127.0.0.1:{free_port()}")
    try:
        auth = {"Authorization": f"Bearer {stack.tokens['operator']}"}
        health = httpx.get(f"{url}/healthz")
        assert health.status_code == 503
        assert health.json()["broker"] == "down" and health.json()["redis"] == "ok"
        assert health.headers["content-type"] == "application/problem+json"
        assert httpx.get(f"{url}/api/v1/devices", headers=auth).status_code == 200
        write = httpx.patch(f"{url}/api/v1/devices/x1/shadow", headers=auth, json={"state": {"desired": {}}})
        assert write.status_code == 503 and "broker" in write.json()["detail"]
        assert api.terminate() == 0  # SIGTERM: uvicorn drains and the process exits 0, as systemd expects
    finally:
        api.kill()


def test_redis_away(stack: Stack) -> None:
    api, url = run_api(stack, FLEET_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    try:
        health = httpx.get(f"{url}/healthz", timeout=30)
        assert health.status_code == 503 and health.json()["redis"] == "down"
        auth = {"Authorization": f"Bearer {stack.tokens['viewer']}"}
        listed = httpx.get(f"{url}/api/v1/devices", headers=auth, timeout=30)
        assert listed.status_code == 503 and listed.headers["content-type"] == "application/problem+json"
    finally:
        api.kill()


def test_slow_redis_writes_do_not_stall_the_event_loop(stack: Stack) -> None:
    """While Redis holds writes back (CLIENT PAUSE ... WRITE), an async route's audit entry waits in
    the threadpool; the event loop keeps answering everyone else at once."""
    # Long enough that a loaded machine's request time stays well under half of it; a stalled event
    # loop would hold the reader's request for about all of it.
    pause_s = 3.0
    latencies: list[float] = []
    with stack.client("operator") as writer, stack.client("viewer") as reader:
        assert reader.get("/api/v1/session").status_code == 200
        with ThreadPoolExecutor(1) as pool:
            stack.redis.execute_command("CLIENT", "PAUSE", str(int(pause_s * 1000)), "WRITE")
            started = time.monotonic()
            # No session to close: the route's one write is its audit entry, held by the pause.
            closing = pool.submit(writer.delete, "/api/v1/devices/paused-1/debug")
            while not closing.done():
                t0 = time.monotonic()
                assert reader.get("/api/v1/session").status_code == 200
                latencies.append(time.monotonic() - t0)
            assert closing.result().status_code == 204
            held = time.monotonic() - started
    assert held >= 0.8 * pause_s, f"the write was not held back ({held:.2f} s)"
    assert len(latencies) >= 2 and max(latencies) < 0.5 * pause_s, latencies
