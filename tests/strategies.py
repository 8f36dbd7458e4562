"""Hypothesis strategies shared by the property tests and `make fuzz` (bench/fuzzing).

One place for what the fuzz targets are fed: valid templates drawn field by field (so most cases
reach deep code), the same templates with one or more fields mutated, and hostile bytes (written
by tests.shadowsync.hostile: duplicate keys, NaN, integers past 64 bits, invalid UTF-8, deep
nesting). The runtime packages never import this module; bench/ and tests/ do.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from healthwatch.validate import FIELDS as HEARTBEAT_FIELDS
from tests.shadowsync.hostile import Pairs, deep, scalars, to_json, to_msgpack, values

# -- building blocks -------------------------------------------------------------------------------

INT64 = st.integers(-(2**63), 2**63 - 1)
EDGE_INTS = st.sampled_from(
    [0, -1, 1, 2**31, 2**53, 2**53 + 1, 2**63 - 1, -(2**63), 2**63, 2**64, -(2**63) - 1]
)
texts = st.text(max_size=8) | st.sampled_from(["", "a", "x" * 65, "ü", "\x00", "a/b", "+", "#"])
json_scalars = (
    st.none() | st.booleans() | INT64 | EDGE_INTS | st.floats(allow_nan=False, allow_infinity=False) | texts
)
KEYS = st.sampled_from(["a", "b", "c", "led", "x"]) | st.text(max_size=4) | st.just("k" * 65)
json_values = st.recursive(
    json_scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(KEYS, c, max_size=3), max_leaves=8
)
# Anything a decoder may hand back, including what a JSON document cannot hold (NaN, bytes, big ints).
any_values = json_values | scalars | st.floats() | st.binary(max_size=4) | st.integers()
device_ids = st.sampled_from(["dev-1", "dev-2", "d3", "A.b:c_d-e", "x" * 64]) | st.from_regex(
    r"\A[A-Za-z0-9][A-Za-z0-9_.:-]{0,12}\Z"
)
BAD_DEVICE_IDS = ["", "x" * 65, "-lead", "sp ace", "a/b", "+", "#", "ü", ".x"]


@st.composite
def mutated(draw: Any, template: dict[str, Any], pool: st.SearchStrategy[Any] = any_values) -> Any:
    """`template` with 1-3 changes: a field replaced by a value of `pool`, removed, or added;
    sometimes one level down; one time in 20 not an object at all."""
    if draw(st.integers(0, 19)) == 0:
        return draw(any_values)
    out = dict(template)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["replace", "replace", "delete", "add", "nested"]))
        key = draw(st.sampled_from(sorted(out))) if out else "x"
        if op == "delete":
            out.pop(key, None)
        elif op == "add":
            out[draw(KEYS)] = draw(pool)
        elif op == "nested" and isinstance(out.get(key), dict):
            out[key] = draw(mutated(out[key], pool))
        else:
            out[key] = draw(pool)
    return out


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of the strategies, each `weight` times as likely as a weight of 1 (`st.one_of` would
    treat the branches alike)."""
    table = [s for weight, s in choices for _ in range(weight)]

    @st.composite
    def pick(draw: Any) -> Any:
        return draw(table[draw(st.integers(0, len(table) - 1))])

    return pick()


def valid_or_mutated(
    valid: st.SearchStrategy[dict[str, Any]], pool: st.SearchStrategy[Any] = any_values
) -> st.SearchStrategy[Any]:
    """Mostly valid (deep code runs), else the valid value mutated."""
    return weighted((2, valid), (1, valid.flatmap(lambda v: mutated(v, pool))))


@st.composite
def encoded(draw: Any, bodies: st.SearchStrategy[Any]) -> bytes:
    """A body as JSON or MessagePack bytes, sometimes truncated or with a byte flipped."""
    body = draw(bodies)
    as_pairs = pairs(body)
    raw = to_json(as_pairs) if draw(st.booleans()) else to_msgpack(as_pairs)
    damage = draw(st.integers(0, 15))
    if damage == 14 and raw:
        raw = raw[: draw(st.integers(0, len(raw) - 1))]
    elif damage == 15 and raw:
        i = draw(st.integers(0, len(raw) - 1))
        raw = raw[:i] + bytes([raw[i] ^ (1 << draw(st.integers(0, 7)))]) + raw[i + 1 :]
    return raw


def pairs(value: Any) -> Any:
    """Dicts as hostile.Pairs (so to_json / to_msgpack write them), recursively."""
    if isinstance(value, dict):
        return Pairs(tuple((k if isinstance(k, str) else str(k), pairs(v)) for k, v in value.items()))
    if isinstance(value, list):
        return [pairs(v) for v in value]
    return value


hostile_bytes = (
    st.binary(max_size=64)
    | st.builds(lambda n: b"{" * n, st.integers(1, 3000))
    | st.builds(lambda n: b'{"a":' + b"[" * n + b"]" * n + b"}", st.integers(20, 1900))
    | deep().map(lambda d: to_json(Pairs((("v", d),))))
    | deep().map(lambda d: to_msgpack(Pairs((("v", d),))))
    # Lone surrogates: valid JSON escapes that are no UTF-8 string.
    | st.sampled_from([b'{"a":"\\ud800"}', b'{"a":"\\udc00\\ud800x"}', b'{"\\ud800":1}'])
)

# -- codec -----------------------------------------------------------------------------------------

codec_payloads = weighted(
    (3, encoded(st.dictionaries(KEYS, json_values, max_size=4))),
    (1, encoded(st.dictionaries(KEYS, any_values, max_size=4))),
    (
        1,
        st.lists(st.tuples(KEYS, values), max_size=4)
        .map(lambda items: Pairs(tuple(items)))
        .flatmap(lambda p: st.sampled_from([to_json(p), to_msgpack(p)])),
    ),
    (1, hostile_bytes),
)

# -- shadow documents: merge, delta, limits ---------------------------------------------------------

SHADOW_KEYS = st.sampled_from(
    ["a", "b", "c", "led", "cfg", "a", "b", "c", "led", "cfg", "mode", "k" * 65, ""]
)
shadow_leaves = (
    st.none() | st.booleans() | st.integers(-1000, 1000) | st.floats(-1e6, 1e6) | texts | st.just("x" * 3000)
)
shadow_values = st.recursive(
    shadow_leaves,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(SHADOW_KEYS, c, max_size=3),
    max_leaves=10,
)
sections = st.dictionaries(SHADOW_KEYS, shadow_values, max_size=4)
shadow_states = st.fixed_dictionaries(
    {}, optional={"desired": sections | st.none(), "reported": sections | st.none()}
)


@st.composite
def shadow_requests(draw: Any) -> dict[str, Any]:
    """A valid-looking `S/update` body: state, maybe version / seq / clientToken."""
    body: dict[str, Any] = {"state": draw(shadow_states | st.just(None) | st.just({}))}
    if draw(st.booleans()):
        body["clientToken"] = draw(
            st.sampled_from(["t1", "t2", "t3", "tok-" + "x" * 60, "", "ü", "a b", "x" * 65])
        )
    if draw(st.integers(0, 7)) == 7:
        body["version"] = draw(st.integers(0, 40))
    if draw(st.integers(0, 7)) == 7:
        body["seq"] = draw(st.integers(0, 10**6))
    return body


shadow_topics = st.sampled_from(
    ["shadow/update"] * 6
    + [
        "shadow/name/n1/update",
        "shadow/name/cfg/update",
        "shadow/get",
        "shadow/delete",
        "shadow/name/n1/get",
        "shadow/name/n1/delete",
        "shadow/name/bad.name/update",
    ]
)
shadow_payloads = weighted(
    (8, encoded(valid_or_mutated(shadow_requests(), shadow_values | any_values))),
    (1, hostile_bytes),
    (1, st.just(b"")),
)

# -- selectors -------------------------------------------------------------------------------------

selector_valid = st.fixed_dictionaries(
    {},
    optional={
        "hw": st.sampled_from(["c3", "s3", "esp32"]),
        "fw": st.sampled_from(["1.*", "1.0.0", "*", "[12].?", "[!", "**"]) | st.text(min_size=1, max_size=6),
        "tags": st.dictionaries(
            st.sampled_from(["site", "ring", "k"]),
            st.sampled_from(["a", "b"]) | st.integers(0, 3) | st.booleans(),
            max_size=2,
        ),
        "ids": st.lists(device_ids, max_size=4),
    },
)
selectors = weighted(
    (4, selector_valid), (3, selector_valid.flatmap(lambda v: mutated(v))), (1, st.none()), (1, any_values)
)

# -- manifests and the planner's operator requests --------------------------------------------------

SHA = st.sampled_from(["ab" * 32, "0" * 64]) | st.text("0123456789abcdef", min_size=64, max_size=64)
manifest_valid = st.fixed_dictionaries(
    {
        "device_id": device_ids,
        "job_id": st.sampled_from(["r1@dev-1", "j"]),
        "version": st.sampled_from(["2.0.0", "v"]),
        "hw": st.sampled_from(["c3", "s3"]),
        "url": st.sampled_from(["https://h/fw.bin?sig=ab", "http://x/y"]),
        "sha256": SHA,
        "size": st.integers(0, 2**32),
        "secure_version": st.integers(0, 10),
        "issued_at": st.integers(0, 2**33),
    }
).flatmap(
    lambda b: st.integers(b["issued_at"] + 1, b["issued_at"] + 10**6).map(lambda e: {**b, "expires_at": e})
)


@st.composite
def manifest_bytes(draw: Any) -> bytes:
    """Manifest bytes: the compact §3 form, a mutated one, keys reordered or repeated, or hostile."""
    roll = draw(st.integers(0, 9))
    if roll < 2:
        return draw(hostile_bytes)
    body = draw(manifest_valid)
    if roll < 7:
        body = draw(mutated(body))
    if not isinstance(body, dict):
        return to_json(pairs(body))
    items = list(body.items())
    if roll == 8 and items:  # a key given twice: the last one wins in json.loads
        items.append((items[0][0], draw(any_values)))
    return to_json(Pairs(tuple((k, pairs(v)) for k, v in items)))


release_valid = st.fixed_dictionaries(
    {
        "version": st.sampled_from(["2.0.0", "2.1.0", "3.0.0"]),
        "hw": st.lists(st.sampled_from(["c3", "s3"]), min_size=1, max_size=2),
        "object": st.just("fw.bin"),
        "sha256": st.just("2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"),
        "size": st.just(100),
    },
    optional={"secure_version": st.integers(0, 3), "notes": texts, "clientToken": st.just("t1")},
)
command_valid = st.fixed_dictionaries(
    {
        "action": st.sampled_from(
            ["create"] * 3 + ["pause", "resume", "abort", "advance", "rollback", "nope"]
        ),
        "version": st.sampled_from(["2.0.0", "9.9"]),
    },
    optional={
        "selector": selector_valid,
        "stages": st.lists(st.integers(0, 100), min_size=1, max_size=4),
        "soak_s": st.integers(0, 5),
        "success_pct": st.integers(0, 100) | st.floats(0, 100),
        "max_failure_pct": st.integers(0, 100),
        "min_devices_for_gate": st.integers(0, 5),
        "timeout_s": st.integers(1, 100),
        "rate_per_min": st.integers(1, 100),
        "clientToken": st.just("t2"),
    },
)
planner_requests = weighted(
    (4, st.tuples(st.just("o/ota/releases/register"), encoded(valid_or_mutated(release_valid)))),
    (
        4,
        st.tuples(
            # Enough rollout ids that a create often finds its id free; commands find it running.
            st.builds("o/ota/rollouts/r{}/command".format, st.integers(1, 40))
            | st.just("o/ota/rollouts/bad id/command"),
            encoded(valid_or_mutated(command_valid)),
        ),
    ),
    (1, st.tuples(st.sampled_from(["o/ota/releases/register", "o/ota/rollouts/r1/command"]), hostile_bytes)),
)

# -- heartbeats ------------------------------------------------------------------------------------

_GOOD_FIELD = {
    "ts": st.integers(1_700_000_000, 1_700_100_000),
    "seq": st.integers(0, 1000),
    "uptime_s": st.integers(0, 10**6),
    "fw": st.sampled_from(["1.0.0", "2.0.0"]),
    "slot": st.sampled_from(["ota_0", 1]),
    "hw": st.sampled_from(["c3", "s3"]),
    "battery_mv": st.integers(3000, 4200),
    "battery_pct": st.floats(0, 100),
    "rssi_dbm": st.integers(-100, -30),
    "temp_c": st.floats(-20, 90),
    "heap_free": st.integers(0, 300_000),
    "heap_min_free": st.integers(0, 300_000),
    "reset_reason": st.sampled_from(["poweron", "panic", "wdt"]),
}
assert set(_GOOD_FIELD) == set(HEARTBEAT_FIELDS), "a heartbeat field without a strategy"
heartbeat_valid = st.fixed_dictionaries(
    {k: _GOOD_FIELD[k] for k in ("ts", "seq", "uptime_s")},
    optional={k: v for k, v in _GOOD_FIELD.items() if k not in ("ts", "seq", "uptime_s")},
)
heartbeat_payloads = weighted(
    (8, encoded(valid_or_mutated(heartbeat_valid))), (1, hostile_bytes), (1, st.just(b""))
)
