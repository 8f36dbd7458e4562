"""Paging over 10,000 registered devices with filters and sorts, checked against a plain Python model.

The devices are registered with the registry's own index writes (as shadow-sync does) and
healthwatch's status sets, so the API reads exactly the layout the daemons write.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Iterator
from typing import Any

import pytest

from daemons.registry import DeviceInfo, Registry
from healthwatch.store import HealthStore
from tests.daemons.api.conftest import Stack, stack_redis, start_stack, stop_stack
from tests.support import Server

N = 10_000
HW = ("esp32c3", "esp32s3", "esp32")
FW = ("1.0.0", "1.1.0", "1.1.1", "2.0.0")
HEALTH = ("ok", "watch", "critical", "offline")


def model(i: int) -> dict[str, Any]:
    return {"id": f"d{i:05d}", "hw": HW[i % 3], "fw": FW[i % 4], "site": f"s{i % 10}",
            "connected": i % 2 == 0,
            "health": HEALTH[i % 4] if i % 7 else None, "score": (i * 37) % 101 if i % 7 else None,
            "seen": 1_700_000_000 + (i * 7919) % N}


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest, broker: Server,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_stack(stack_redis(request), broker, tmp_path_factory.mktemp("paging"), ())
    registry, health = Registry(s.redis), HealthStore(s.redis)
    try:
        pipe = s.redis.pipeline(transaction=False)
        for i in range(N):
            d = model(i)
            info = DeviceInfo(d["id"])
            registry.observe(pipe, info, d["hw"], d["fw"])
            registry.set_tags(pipe, info, {"site": d["site"]})
            registry.presence(pipe, d["id"], str(d["seen"]), "1" if d["connected"] else "0")
            pipe.hset(registry.key(d["id"]),
                      mapping={"last_seen_at": d["seen"], "connected": int(d["connected"])})
            if d["health"]:
                pipe.sadd(health.status_key(d["health"]), d["id"])
                pipe.zadd(health.scores_key, {d["id"]: d["score"]})
                pipe.hset(health.key(d["id"]), mapping={"status": d["health"], "score": d["score"]})
            if i % 1000 == 999:
                pipe.execute()
        pipe.execute()
        yield s
    finally:
        stop_stack(s)


def expected(params: dict[str, str]) -> list[str]:
    rows = [model(i) for i in range(N)]
    if "hw" in params:
        rows = [r for r in rows if r["hw"] == params["hw"]]
    if "fw" in params:
        rows = [r for r in rows if fnmatch.fnmatchcase(r["fw"], params["fw"])]
    if "tag.site" in params:
        rows = [r for r in rows if r["site"] == params["tag.site"]]
    if "connected" in params:
        rows = [r for r in rows if r["connected"] == (params["connected"] == "true")]
    if "health" in params:
        rows = [r for r in rows if r["health"] == params["health"]]
    if "q" in params:
        rows = [r for r in rows if r["id"].startswith(params["q"])]
    sort = params.get("sort", "id")
    if sort == "-last_seen_at":
        rows.sort(key=lambda r: (r["seen"], r["id"]), reverse=True)
    elif sort == "health_score":
        rows.sort(key=lambda r: (1000 if r["score"] is None else r["score"], r["id"]))
    else:
        rows.sort(key=lambda r: r["id"], reverse=sort == "-id")
    return [r["id"] for r in rows]


@pytest.mark.parametrize("params", [
    {},
    {"hw": "esp32s3", "connected": "true"},
    {"fw": "1.1.*", "tag.site": "s3", "sort": "-last_seen_at"},
    {"health": "critical", "sort": "health_score"},
    {"q": "d01", "sort": "-id"},
    {"hw": "esp32", "fw": "2.*", "connected": "false", "health": "ok"},
], ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()) or "all")
def test_pages_cover_exactly_the_filtered_fleet_in_order(stack: Stack, params: dict[str, str]) -> None:
    want = expected(params)
    got: list[str] = []
    cursor = None
    slowest = 0.0
    with stack.client("viewer") as http:
        while True:
            started = time.perf_counter()
            page = http.get("/api/v1/devices", params={**params, "limit": 1000,
                                                        **({"cursor": cursor} if cursor else {})}).json()
            slowest = max(slowest, time.perf_counter() - started)
            assert page["total"] == len(want)
            got.extend(d["id"] for d in page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
    assert got == want
    assert slowest < 3.0, f"a page of 1000 took {slowest:.2f} s"


def test_first_page_of_a_filter_is_fast_and_items_are_complete(stack: Stack) -> None:
    with stack.client("viewer") as http:
        started = time.perf_counter()
        page = http.get("/api/v1/devices", params={"hw": "esp32c3", "connected": "true", "limit": 50,
                                                   "sort": "health_score"}).json()
        took = time.perf_counter() - started
    first = page["items"][0]
    m = model(int(first["id"][1:]))
    assert first == {"id": m["id"], "hw": m["hw"], "fw": m["fw"], "connected": True,
                     "last_seen_at": m["seen"], "health": {"score": m["score"], "status": m["health"]},
                     "tags": {"site": m["site"]}}
    assert took < 1.0, took
