"""API bodies: every JSON request body of fleet-api, over real HTTP, against the real daemons.

Bodies start from the served OpenAPI document itself: schemathesis (already the project's API
fuzzer, bench/fuzz_api.py) draws seed bodies from each operation's request-body schema, valid
ones and ones that break the schema. hypothesis then draws each case from those seeds, mutates
it with the shared strategies of tests.strategies (a field replaced, removed or added) or sends
hostile bytes instead. Why seeds rather than schemathesis per case: a schemathesis case costs
~6 ms to draw on this machine (its Case machinery and hooks), 10 minutes per 100,000; and
hypothesis-jsonschema, the plain strategy one would use, no longer runs on current hypothesis
(0.23.1 calls a removed internal). Requests go out on keep-alive httpx clients, WORKERS at a time
(a request through a daemon waits ~100 ms on MQTT); each worker owns its devices and rollouts,
and each request compares the keys it may write before and after.

Oracles: no 5xx; a 4xx (rejected) left the keys it may write as they were; a 2xx stored the whole thing
(the shadow as the document rules make it from the one before, the tags as parsed, the rollout's
configuration). POST /devices/{id}/debug is left out: an accepted session is ended later by the
API's own timer, a write no request window can own (bench/fuzz_api.py covers its body). POST
/releases is multipart, not JSON.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis as redis_lib
from hypothesis import strategies as st

from bench.fuzzing.core import Finding, worker
from daemons.registry import device_key, parse_tags
from shadowsync import document as doc
from tests import strategies as fs
from tests.shadowsync.hostile import to_json

DEVICES = ["dev-1", "dev-2", "d3"]
SKIPPED = {("post", "/api/v1/devices/{device_id}/debug")}
SEEDS = 400  # valid seed bodies per operation (a quarter as many invalid ones)
WORKERS = 24  # requests in flight: fleet-api answers a daemon request in ~100 ms, mostly waiting
RELEASE = "1.0.0"  # registered at the start, so rollouts can be created


@dataclasses.dataclass
class Stack:
    url: str
    redis_url: str
    token: str


@contextmanager
def running_api(work: Path) -> Iterator[Stack]:
    """redis-server, mosquitto, shadow-sync, ota-planner and fleet-api as processes on free ports,
    with an admin token; everything started is stopped on exit."""
    from daemons.api.auth import TokenStore
    from daemons.cli.localstack import free_port, start_mosquitto, start_redis, wait_port

    redis_server, broker = start_redis(work / "redis"), start_mosquitto(work / "mqtt")
    port = free_port()
    env = {
        **os.environ,
        "FLEET_MQTT_URL": broker.url,
        "FLEET_REDIS_URL": redis_server.url,
        "FLEET_METRICS_PORT": "0",
        "FLEET_OTA_MASTER_KEY": secrets.token_hex(32),
        "FLEET_ARTIFACT_STORE": f"local:{work / 'art'}",
        "FLEET_ARTIFACT_HTTP_PORT": str(free_port()),
        "FLEET_API_PORT": str(port),
        "FLEET_LOG_LEVEL": "error",
    }
    children = [
        subprocess.Popen([sys.executable, "-m", m], env=env, stderr=subprocess.DEVNULL)
        for m in ("shadowsync", "otaplanner", "daemons.api")
    ]
    try:
        wait_port(port, 30)
        r = redis_lib.Redis.from_url(redis_server.url, decode_responses=True)
        token = TokenStore(r).create("fuzz", "admin")["token"]
        stack = Stack(f"http://127.0.0.1:{port}", redis_server.url, token)
        _wait_ready(stack)
        yield stack
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.wait(15)
        broker.stop()
        redis_server.stop()


def _wait_ready(stack: Stack, timeout: float = 30.0) -> None:
    """Until shadow-sync answers through the API (the daemons subscribe after their own start)."""
    import time

    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {stack.token}"}) as client:
        while time.monotonic() < deadline:
            got = client.patch("/api/v1/devices/dev-1/shadow", json={"state": {"desired": {"ready": 1}}})
            if got.status_code == 200:
                return
            time.sleep(0.2)
    raise TimeoutError("shadow-sync did not answer through fleet-api")


def seed_bodies(
    openapi: dict[str, Any], per_operation: int
) -> dict[tuple[str, str], tuple[list[Any], list[Any]]]:
    """(valid, invalid) bodies schemathesis draws for each operation with a JSON request body."""
    import schemathesis
    from schemathesis.generation.modes import GenerationMode

    out: dict[tuple[str, str], tuple[list[Any], list[Any]]] = {}
    for result in schemathesis.openapi.from_dict(openapi).get_all_operations():
        op = result.ok()
        key = (op.method.lower(), op.path)
        if key in SKIPPED or not any(b.media_type == "application/json" for b in op.body):
            continue
        out[key] = (
            _bodies(op, GenerationMode.POSITIVE, per_operation, len(out)),
            _bodies(op, GenerationMode.NEGATIVE, per_operation // 4, len(out)),
        )
    return out


def _bodies(op: Any, mode: Any, n: int, at: int) -> list[Any]:
    from hypothesis import HealthCheck, Phase, given, seed, settings

    found: list[Any] = []

    @seed(at)
    @settings(
        max_examples=n,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(op.as_strategy(generation_mode=mode, media_type="application/json"))
    def draw(case: Any) -> None:
        if case.media_type == "application/json":
            found.append(case.body)

    draw()
    return found


def _encode(body: Any) -> bytes:
    try:
        return orjson.dumps(body)
    except TypeError:
        return to_json(fs.pairs(body))  # what orjson will not write (NaN, bytes, big integers)


class ApiBodies:
    name = "API bodies (fleet-api over HTTP)"
    workers = WORKERS

    def __init__(self, stack: Stack, seeds: int = SEEDS) -> None:
        self.stack = stack
        self.redis = redis_lib.Redis.from_url(stack.redis_url, decode_responses=True)
        self._local = threading.local()
        self._clients: list[httpx.Client] = []
        self._lock = threading.Lock()
        openapi = self.client().get("/api/v1/openapi.json").json()
        registered = httpx.post(
            f"{stack.url}/api/v1/releases",
            files={"file": ("fw.bin", b"x" * 100)},
            data={"version": RELEASE, "hw": ["c3"]},
            headers={"Authorization": f"Bearer {stack.token}"},
            timeout=30,
        )
        if registered.status_code != 409:  # 409: this stack has that release already
            registered.raise_for_status()
        self.strategies = []
        for (method, path), (valid, invalid) in seed_bodies(openapi, seeds).items():
            bodies = fs.weighted(
                (5, st.sampled_from(valid)),
                (3, st.sampled_from(valid).flatmap(fs.mutated)),
                (1, st.sampled_from(invalid or valid)),
            )
            if path == "/api/v1/rollouts":  # half of them roll out the release that exists
                bodies = st.tuples(bodies, st.booleans()).map(
                    lambda b: {**b[0], "version": RELEASE} if b[1] and isinstance(b[0], dict) else b[0]
                )
            self.strategies.append(
                st.tuples(
                    st.just((method, path)),
                    st.sampled_from(DEVICES),
                    st.sampled_from([None, None, "n1"]),
                    fs.weighted((9, bodies), (1, fs.hostile_bytes)),
                )
            )

    def strategy(self) -> st.SearchStrategy[Any]:
        return st.one_of(self.strategies)

    def client(self) -> httpx.Client:
        """This thread's keep-alive client."""
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = httpx.Client(
                base_url=self.stack.url,
                timeout=30,
                headers={"Authorization": f"Bearer {self.stack.token}", "Content-Type": "application/json"},
            )
            with self._lock:
                self._clients.append(client)
        return client

    def close(self) -> None:
        for client in self._clients:
            client.close()
        self.redis.close()

    def check(self, case: tuple[tuple[str, str], str, str | None, Any]) -> str:
        (method, path), device, name, body = case
        w = worker()
        # Each worker owns its devices and rollouts, so what it compares no other worker writes.
        mine = [f"w{w}-{d}" for d in DEVICES]
        device_id = f"w{w}-{device}"
        content = body if isinstance(body, bytes) else _encode(body)
        try:  # reason about what is sent: the encoder writes bytes as hex text, NaN as NaN
            body = json.loads(content)
        except (ValueError, RecursionError):  # not JSON (invalid UTF-8), or nested too deep for
            # json.loads: sent as it is (fleet-api answers 400 or 422)
            body = None
        if isinstance(body, dict):
            if path == "/api/v1/shadow/bulk" and isinstance(body.get("selector"), dict):
                body["selector"] = {**body["selector"], "ids": mine}
            if isinstance(body.get("rollout_id"), str):
                body["rollout_id"] = f"w{w}-{body['rollout_id']}"
            content = json.dumps(body).encode()
        url = path.replace("{device_id}", device_id)
        params = {"name": name} if name and path.endswith("/shadow") else None
        keys = self._owned(path, device_id, mine, body)
        before = self._snapshot(keys)
        response = self.client().request(method.upper(), url, content=content, params=params)
        status = response.status_code
        if status >= 500:
            raise Finding(f"{status} answered", f"{method.upper()} {url}: {response.text[:300]}")
        after = self._snapshot(keys)
        if status >= 400:
            if after != before:
                changed = [k for k in keys if before.get(k) != after.get(k)]
                raise Finding(
                    "a rejected body stored something", f"{method.upper()} {url} {status}: {changed}"
                )
            return str(status)
        if method == "patch" and path.endswith("/shadow"):
            self._shadow(before[keys[0]], after[keys[0]], name or "", body)
        elif method == "put" and path.endswith("/tags"):
            stored = after[keys[0]].get("tags")
            if stored is None or json.loads(stored) != parse_tags(body):
                raise Finding("tags not stored as sent", f"{stored!r:.200}")
        elif method == "post" and path == "/api/v1/rollouts":
            config = json.loads(after[keys[0]].get("config", "{}"))
            if config.get("version") != body["version"]:
                raise Finding("rollout not stored as created", f"{after[keys[0]]!r:.300}")
        return "accepted"

    @staticmethod
    def _owned(path: str, device_id: str, mine: list[str], body: Any) -> list[str]:
        """The keys a request on `path` may write, all owned by the worker."""
        if path == "/api/v1/shadow/bulk":
            return [device_key("fleet", d) for d in mine]
        if path == "/api/v1/rollouts":
            rid = body.get("rollout_id") if isinstance(body, dict) else None
            return [f"ota:{{ro:{rid}}}:meta"] if isinstance(rid, str) else []
        if "{device_id}" in path:
            return [device_key("fleet", device_id)]
        return []

    def _snapshot(self, keys: list[str]) -> dict[str, dict[str, str]]:
        """Each key's hash; of a rollout's meta only what a create sets and the planner's own
        timer never changes (the planner moves stage, state and timestamps on its own)."""
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        out = dict(zip(keys, pipe.execute(), strict=True))
        for key in keys:
            if key.startswith("ota:"):
                out[key] = {k: v for k, v in out[key].items() if k in ("config", "release", "created_at")}
        return out

    @staticmethod
    def _shadow(before: dict[str, str], after: dict[str, str], name: str, body: dict[str, Any]) -> None:
        field = "sh:" + name
        previous = (
            json.loads(before[field])
            if field in before
            else {**doc.empty_document(), "version": int(before.get("ver:" + name, 0))}
        )
        expected = doc.apply_update(previous, {"desired": body["state"]["desired"]}, 0)
        stored = json.loads(after.get(field, "null"))
        if stored is None or (stored["state"], stored["version"]) != (expected["state"], expected["version"]):
            raise Finding("shadow not stored as the document rules make it", f"{stored!r:.300}")


def smoke(cases: int = 200) -> None:  # pragma: no cover - a manual check of the wiring
    from bench.fuzzing.core import run

    with tempfile.TemporaryDirectory() as tmp, running_api(Path(tmp)) as stack:
        target = ApiBodies(stack, 100)
        tally = run(target, cases, 1)
        target.close()
        print(tally)
