"""`make fuzz`: throw malformed and mutated messages at every daemon's handler; none may raise.

Each daemon is built exactly as its entry point builds it, on a real redis-server, and fed
batches of messages on its own topics: random bytes, broken JSON and MessagePack, deep nesting,
wrong types, oversize values, bad device ids, and valid-looking requests with one field mutated.
A handler that raises would, in production, be isolated per message by the run loop; here any
exception counts as a finding.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import tempfile
import traceback
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import msgpack
import redis as redis_lib

from daemons.cli.localstack import start_redis
from daemons.protocol.messages import Inbound
from daemons.runtime import logs
from daemons.runtime.config import Settings
from daemons.runtime.metrics import DaemonMetrics

IDS = ["dev-1", "dev-2", "a", "x" * 64, "x" * 65, "bad$id", "", "sp ace", "ü", "-lead"]
SCALARS: list[Any] = [None, True, False, 0, -1, 2**63, 1.5, float("inf"), "", "s", "x" * 5000, [], {}]
TEMPLATES: list[dict[str, Any]] = [
    {"state": {"desired": {"a": 1}, "reported": {"b": {"c": 2}}}, "version": 1, "clientToken": "t", "seq": 3},
    {"ts": 1, "seq": 1, "uptime_s": 5, "fw": "1.0", "slot": 0, "hw": "c3", "temp_c": 40.0, "battery_pct": 80,
     "rssi_dbm": -60, "heap_free": 100000, "reset_reason": "poweron"},
    {"online": True, "fw": "1.0", "ts": 1},
    {"selector": {"hw": "c3", "fw": "1.*", "tags": {"k": "v"}, "ids": ["dev-1"]},
     "state": {"desired": {"x": 1}}},
    {"action": "create", "version": "1.1", "stages": [1, 5, 20, 100], "soak_s": 1, "success_pct": 95,
     "max_failure_pct": 2, "min_devices_for_gate": 2, "timeout_s": 10, "selector": {"hw": "c3"}},
    {"version": "1.1", "hw": ["c3"], "object": "fw/a.bin", "sha256": "0" * 64, "size": 10,
     "secure_version": 1},
    {"job_id": "r@dev-1", "state": "succeeded", "progress": 100, "fw": "1.1", "ts": 1},
    {"device_id": "dev-1", "ttl_s": 60, "operator": "me"},
    {"lines": ["a", "b"], "dropped": 0, "dropped_total": 0, "ts": 1},
]


def random_value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 8 or roll < 0.5:
        return rng.choice(SCALARS)
    if roll < 0.75:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(["a", "state", "desired", "reported", "seq", "fw", "k" * 70, "version"]):
            random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def mutate(rng: random.Random, value: Any) -> Any:
    if isinstance(value, dict) and value and rng.random() < 0.8:
        out = dict(value)
        key = rng.choice(list(out))
        out[key] = mutate(rng, out[key]) if rng.random() < 0.5 else random_value(rng)
        return out
    return random_value(rng)


def payload(rng: random.Random) -> bytes:
    roll = rng.random()
    if roll < 0.1:
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 64)))
    if roll < 0.15:
        return b"{" * rng.randint(1, 3000)
    if roll < 0.2:
        return b"[" * 2000 + b"]" * 2000
    body = mutate(rng, rng.choice(TEMPLATES)) if roll < 0.8 else random_value(rng)
    try:
        if rng.random() < 0.3:
            raw = msgpack.packb(body, use_bin_type=True)
        else:
            raw = json.dumps(body, allow_nan=True).encode()
    except (ValueError, OverflowError, TypeError):
        return b"{}"
    if rng.random() < 0.1:
        cut = rng.randint(0, len(raw))
        raw = raw[:cut]
    return raw


def topic_for(rng: random.Random, pattern: str) -> str:
    parts = [p for p in pattern.split("/")]
    out = []
    for p in parts:
        if p == "+":
            out.append(rng.choice([*IDS, "rollout-1", "name_1", "bad.name"]))
        elif p == "#":
            out.append("x")
        else:
            out.append(p)
    return "/".join(out)


def build_all(settings: Settings, redis: Any, resources: ExitStack) -> dict[str, Any]:
    """Every daemon's handler; the servers they start are stopped by `resources`."""
    from healthwatch.__main__ import build as build_health
    from otaplanner.__main__ import build as build_ota
    from shadowsync.__main__ import build as build_shadow

    handlers = {
        "shadowsync": build_shadow(settings, redis, DaemonMetrics("shadowsync")),
        "healthwatch": build_health(settings, redis, DaemonMetrics("healthwatch")),
        "otaplanner": build_ota(settings, redis, DaemonMetrics("otaplanner"), resources),
    }
    return handlers


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz")
    parser.add_argument("--messages", type=int, default=20000, help="per daemon")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    logs.configure("error")  # every rejection is logged once; here that is only noise
    work = Path(tempfile.mkdtemp(prefix="fuzz-"))
    server = start_redis(work / "redis")
    rows = []
    resources = ExitStack()
    try:
        redis = redis_lib.Redis.from_url(server.url, decode_responses=True)
        settings = dataclasses.replace(
            Settings(), redis_url=server.url, ota_master_key="11" * 32,
            artifact_store=f"local:{work / 'art'}", artifact_http_port=0, metrics_port=0)
        rng = random.Random(args.seed)
        for name, handler in build_all(settings, redis, resources).items():
            topics = handler.topics()
            failures: list[str] = []
            sent = 0
            while sent < args.messages:
                batch = [Inbound(topic_for(rng, rng.choice(topics)), payload(rng))
                         for _ in range(rng.randint(1, 50))]
                sent += len(batch)
                try:
                    handler.handle(batch)
                    handler.tick(float(rng.randint(0, 2**31)))
                except Exception:
                    failures.append(traceback.format_exc(limit=3))
            rows.append((name, sent, failures))
    finally:
        resources.close()
        server.stop()
    lines = ["| daemon | messages | handler exceptions |", "|---|---:|---:|"]
    lines += [f"| {name} | {sent} | {len(failures)} |" for name, sent, failures in rows]
    for name, _, failures in rows:
        for f in failures[:3]:
            lines += ["", f"{name}:", "```", f.strip(), "```"]
    text = "\n".join(lines)
    print(text)
    return text


if __name__ == "__main__":
    main()
