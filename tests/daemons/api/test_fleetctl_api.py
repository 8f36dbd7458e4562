"""fleetctl end to end against a running fleet-api (and, for tokens, its Redis), as a process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemons.api.conftest import Stack, stack_redis, start_stack, stop_stack
from tests.support import ROOT, Server


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest, broker: Server,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_stack(stack_redis(request), broker, tmp_path_factory.mktemp("fleetctl"),
                    ("shadowsync", "otaplanner", "healthwatch"), FLEET_HEARTBEAT_INTERVAL_S="1")
    try:
        s.simulate(3, interval_s=0.5)
        with s.client("viewer") as http:
            deadline = time.monotonic() + 20
            while http.get("/api/v1/devices", params={"connected": "true"}).json()["total"] < 3:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        yield s
    finally:
        stop_stack(s)


def ctl(stack: Stack, *argv: str, token: str | None = "admin", timeout: float = 60) -> tuple[int, str, str]:
    env = {**os.environ, **stack.env, "FLEET_API_URL": stack.url, "FLEETCTL_CONFIG": "/nonexistent"}
    if token:
        env["FLEET_API_TOKEN"] = stack.tokens.get(token, token)
    p = subprocess.run([sys.executable, "-m", "daemons.cli.fleetctl", *argv], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def ctl_json(stack: Stack, *argv: str, **kw: Any) -> tuple[int, Any]:
    code, out, err = ctl(stack, *argv, "--json", **kw)
    return code, json.loads(out.strip().splitlines()[-1]) if out.strip() else err


def test_token_commands_reach_redis_without_the_api(stack: Stack) -> None:
    code, made = ctl_json(stack, "token", "create", "--role", "operator", "--name", "ci", "--ttl-days", "1",
                          token=None)
    assert code == 0 and set(made) == {"token", "id", "name", "role", "expires_at"}
    assert made["role"] == "operator"
    code, listed = ctl_json(stack, "token", "list", token=None)
    assert made["id"] in [t["id"] for t in listed["items"]] and "token" not in listed["items"][0]
    assert ctl(stack, "devices", "list", token=made["token"])[0] == 0
    assert ctl(stack, "token", "revoke", made["id"], token=None)[0] == 0
    code, _, err = ctl(stack, "devices", "list", token=made["token"])
    assert code == 5 and "401" in err
    assert ctl(stack, "token", "create", "--role", "root", "--name", "x", token=None)[0] == 2


def test_devices_shadow_tags_health_and_exit_codes(stack: Stack) -> None:
    code, page = ctl_json(stack, "devices", "list", "--hw", "esp32c3")
    with stack.client("viewer") as http:
        c3 = [d["id"] for d in http.get("/api/v1/devices", params={"hw": "esp32c3"}).json()["items"]]
    assert code == 0 and [d["id"] for d in page["items"]] == c3 and c3
    code, out, _ = ctl(stack, "devices", "list")
    assert code == 0 and "sim-00000" in out
    code, shown = ctl_json(stack, "devices", "show", "sim-00001")
    assert code == 0 and shown["id"] == "sim-00001"
    code, got = ctl_json(stack, "shadow", "set", "sim-00001", "--desired", '{"led": "red"}', token="operator")
    assert code == 0 and got["state"]["desired"] == {"led": "red"}
    code, _, err = ctl(stack, "shadow", "set", "sim-00001", "--desired", '{"led": 1}', "--version", "999",
                       token="operator")
    assert code == 3 and "409" in err
    assert ctl(stack, "shadow", "set", "sim-00001", "--desired", "{}", token="viewer")[0] == 5
    assert ctl(stack, "shadow", "get", "sim-00001")[0] == 0
    code, tags = ctl_json(stack, "tags", "set", "sim-00002", "site=lab", token="operator")
    assert code == 0 and tags == {"site": "lab"}
    code, top = ctl_json(stack, "health", "top", "--limit", "2")
    assert code == 0 and len(top["items"]) == 2
    assert ctl(stack, "devices", "list", token=None)[0] == 5
    assert ctl(stack, "--url", "http://127.0.0.1:1", "devices", "show", "sim-00001")[0] == 4
    assert ctl(stack, "devices", "bogus")[0] == 2


def test_release_rollout_watch_and_debug_tail(stack: Stack, tmp_path: Path) -> None:
    fw = tmp_path / "fw.bin"
    fw.write_bytes(bytes(range(256)) * 50)
    code, rel = ctl_json(stack, "releases", "publish", str(fw), "--version", "4.0.0", "--hw", "esp32c3",
                         "--hw", "esp32s3")
    assert code == 0 and rel["size"] == fw.stat().st_size
    denied = ctl(stack, "releases", "publish", str(fw), "--version", "4.0.1", "--hw", "x", token="operator")
    assert denied[0] == 5
    code, listed = ctl_json(stack, "releases", "list")
    assert [r["version"] for r in listed["items"]] == ["4.0.0"]
    code, created = ctl_json(stack, "rollouts", "create", "w1", "--version", "4.0.0", "--stages", "50,100",
                             "--soak-s", "1", "--success-pct", "100", "--max-failure-pct", "50",
                             "--min-devices", "1", "--timeout-s", "60", token="operator")
    assert code == 0 and created["state"] == "running", created
    code, out, err = ctl(stack, "rollouts", "watch", "w1")
    assert code == 0 and "completed" in out, (out, err)
    code, shown = ctl_json(stack, "rollouts", "show", "w1")
    assert shown["state"] == "completed" and shown["counts"]["succeeded"] == 3
    code, _, err = ctl(stack, "rollouts", "pause", "w1", token="operator")
    assert code == 3 and "409" in err
    code, out, _ = ctl(stack, "debug", "open", "sim-00000", "--ttl", "60", token="operator")
    assert code == 0 and out.startswith(stack.url + "/debug/")
    code, out, err = ctl(stack, "debug", "tail", "sim-00001", "--ttl", "3", token="operator")
    assert code == 0 and "app:" in out, (out, err)
