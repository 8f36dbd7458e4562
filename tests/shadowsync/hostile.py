"""Hypothesis strategies for hostile shadow requests, written byte by byte (duplicate keys, NaN,
integers past 64 bits, invalid UTF-8, deep nesting), in JSON and in MessagePack."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import msgpack
import orjson
from hypothesis import strategies as st

TOKEN = "tok-h"


@dataclass(frozen=True)
class Pairs:
    """An object as written: keys may repeat."""

    items: tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class Deep:
    """`inner` wrapped in levels of arrays (True) and objects `{"a": ...}` (False), outermost first."""

    inner: Any
    arrays: tuple[bool, ...]


class BadUtf8:
    """A string whose bytes are not UTF-8."""


BAD = BadUtf8()


def to_json(v: Any) -> bytes:
    if isinstance(v, Deep):
        opening = b"".join(b"[" if a else b'{"a":' for a in v.arrays)
        closing = b"".join(b"]" if a else b"}" for a in reversed(v.arrays))
        return opening + to_json(v.inner) + closing
    if v is None:
        return b"null"
    if v is True or v is False:
        return b"true" if v else b"false"
    if isinstance(v, int):
        return str(v).encode()
    if isinstance(v, float):
        if math.isnan(v):
            return b"NaN"
        if math.isinf(v):
            return b"Infinity" if v > 0 else b"-Infinity"
        return orjson.dumps(v)
    if isinstance(v, str):
        return orjson.dumps(v)
    if isinstance(v, bytes):
        return orjson.dumps(v.hex())
    if v is BAD:
        return b'"\xff\xfe"'
    if isinstance(v, Pairs):
        return b"{" + b",".join(orjson.dumps(k) + b":" + to_json(x) for k, x in v.items) + b"}"
    return b"[" + b",".join(to_json(x) for x in v) + b"]"


def to_msgpack(v: Any) -> bytes:
    packer = msgpack.Packer(use_bin_type=True)
    if isinstance(v, Deep):
        return b"".join(b"\x91" if a else b"\x81\xa1a" for a in v.arrays) + to_msgpack(v.inner)
    if v is BAD:
        return b"\xa2\xff\xfe"
    if isinstance(v, Pairs):
        return packer.pack_map_header(len(v.items)) + b"".join(
            packer.pack(k) + to_msgpack(x) for k, x in v.items)
    if isinstance(v, list):
        return packer.pack_array_header(len(v)) + b"".join(to_msgpack(x) for x in v)
    if isinstance(v, int) and not isinstance(v, bool) and not -(2**63) <= v < 2**64:
        return packer.pack(float(v))  # MessagePack has no wider integers
    return packer.pack(v)


keys = st.text(max_size=4) | st.text(min_size=60, max_size=70) | st.sampled_from(["a", "b", "led"])
scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=2**62, max_value=2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8) | st.binary(max_size=3)
           | st.just(BAD))
values = st.recursive(
    scalars,
    lambda c: st.lists(c, max_size=3) | st.lists(st.tuples(keys, c), max_size=3).map(
        lambda items: Pairs(tuple(items))),
    max_leaves=12)


@st.composite
def deep(draw: Any) -> Any:
    """A value wrapped in many levels of arrays or objects (arrays of objects too)."""
    levels = draw(st.integers(0, 700))
    pattern = draw(st.sampled_from(["arrays", "objects", "mixed"]))
    if pattern == "mixed":
        arrays = tuple(i % 2 == 0 for i in range(levels))
    else:
        arrays = (pattern == "arrays",) * levels
    return Deep(draw(values), arrays)


sections = st.lists(st.tuples(st.sampled_from(["desired", "reported", "delta"]), values | deep()),
                    max_size=2).map(lambda items: Pairs(tuple(items)))


@st.composite
def update_payloads(draw: Any) -> bytes:
    """A shadow update with clientToken TOKEN whose state is anything, in JSON or MessagePack."""
    state = draw(sections | values | deep() | st.just(None))
    extra = draw(st.lists(st.tuples(st.sampled_from(["version", "seq", "x"]), scalars), max_size=2))
    body = Pairs((("clientToken", TOKEN), ("state", state), *extra))
    if draw(st.booleans()):
        return to_json(body)
    return to_msgpack(body)
