"""Targets without storage: the codec and the selectors, each against an independent oracle.

- codec: `decode` either raises CodecError (400 / 415, with a clientToken only when it is one) or
  returns a value that the standard library reads identically (stdlib `json` for JSON, msgpack
  with its own defaults for MessagePack), that holds only what the contract allows (int64, finite
  floats, nesting <= 32, string keys) and that survives encode -> decode in both encodings.
- selectors: `parse_selector` either raises SelectorError (400) or returns a Selector whose
  `to_json()` parses back to the same selector and whose `matches` agrees with the §5 rule
  written out here again (ids, hw equality, fw glob, tags), on a few devices.
"""

from __future__ import annotations

import fnmatch
import json
import math
from typing import Any

import msgpack
from hypothesis import strategies as st

from bench.fuzzing.core import Finding
from daemons.protocol.codec import INT64_MAX, INT64_MIN, MAX_NESTING, TOKEN_MAX, CodecError, decode, encode
from daemons.protocol.selector import SelectorError, parse_selector
from tests import strategies as fs


def _walk(value: Any) -> tuple[int, list[Any], list[Any]]:
    """(depth, keys, leaves) of a decoded value, without recursion."""
    deepest, keys, leaves = 0, [], []
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            deepest = max(deepest, level)
            keys.extend(item)
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in item)
        else:
            leaves.append(item)
    return deepest, keys, leaves


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is no JSON number")


def _unique(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate key")
    return out


class Codec:
    name = "codec (JSON, MessagePack)"

    def strategy(self) -> st.SearchStrategy[Any]:
        return fs.codec_payloads

    def check(self, payload: bytes) -> str:
        try:
            value, encoding = decode(payload)
        except CodecError as exc:
            if exc.code not in (400, 415):
                raise Finding("bad rejection", f"code {exc.code}") from None
            if exc.token is not None and not (isinstance(exc.token, str) and len(exc.token) <= TOKEN_MAX):
                raise Finding("bad rejection", f"token {exc.token!r}") from None
            return str(exc.code)
        if not isinstance(value, dict):
            raise Finding("accepted a non-object", repr(value)[:200])
        depth, keys, leaves = _walk(value)
        if depth > MAX_NESTING:
            raise Finding("accepted too deep", str(depth))
        if not all(type(k) is str for k in keys):
            raise Finding("accepted a non-string key", repr(keys)[:200])
        for leaf in leaves:
            t = type(leaf)
            if t is int and not INT64_MIN <= leaf <= INT64_MAX:
                raise Finding("accepted an integer beyond int64", str(leaf))
            if t is float and not math.isfinite(leaf):
                raise Finding("accepted a non-finite float", str(leaf))
            if leaf is not None and t not in (str, int, float, bool):
                raise Finding("accepted a value JSON cannot hold", t.__name__)
        reference = (
            json.loads(payload, object_pairs_hook=_unique, parse_constant=_no_constants)
            if encoding == "json"
            else msgpack.unpackb(payload, raw=False, strict_map_key=False, object_pairs_hook=_unique)
        )
        if reference != value:
            raise Finding(
                "read differently from the reference decoder", f"{reference!r:.200} != {value!r:.200}"
            )
        for enc in ("json", "msgpack"):
            again, _ = decode(encode(value, enc))  # type: ignore[arg-type]
            if again != value:
                raise Finding("not kept exactly", f"{enc}: {again!r:.200} != {value!r:.200}")
        return "accepted"


DEVICES = [
    ("dev-1", "c3", "1.0.0", {"site": "a"}),
    ("d3", "s3", "2.0.1", {"site": "b", "ring": "1"}),
    ("x" * 64, None, None, {}),
    ("A.b:c_d-e", "esp32", "1.x", {"k": "true"}),
]


def _rule(raw: dict[str, Any], device: tuple[str, str | None, str | None, dict[str, str]]) -> bool:
    """PROTOCOL §5, spelled out again: every given field must hold (AND)."""
    device_id, hw, fw, tags = device
    if "ids" in raw and device_id not in raw["ids"]:
        return False
    if "hw" in raw and hw != raw["hw"]:
        return False
    if "fw" in raw and (fw is None or not fnmatch.fnmatchcase(fw, raw["fw"])):
        return False
    want = {
        k: ("true" if v is True else "false" if v is False else str(v))
        for k, v in raw.get("tags", {}).items()
    }
    return all(tags.get(k) == v for k, v in want.items())


class Selectors:
    name = "selectors"

    def strategy(self) -> st.SearchStrategy[Any]:
        return fs.selectors

    def check(self, raw: Any) -> str:
        try:
            selector = parse_selector(raw)
        except SelectorError as exc:
            if exc.code != 400:
                raise Finding("bad rejection", f"code {exc.code}") from None
            return "400"
        if parse_selector(selector.to_json()) != selector:
            raise Finding("to_json does not parse back", repr(selector)[:300])
        for device in DEVICES:
            got = selector.matches(device[0], device[1], device[2], device[3])
            if got is not _rule(raw or {}, device):
                raise Finding("matches disagrees with §5", f"{raw!r:.200} on {device[0]}: {got}")
        return "accepted"
