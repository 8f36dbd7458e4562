"""Payload codecs: JSON or MessagePack, detected from the first byte (PROTOCOL §0).

`decode` is the one door every request goes through, so it also refuses what no daemon can
answer or store faithfully, with a 400 the caller turns into its `rejected` answer:

- nesting deeper than `MAX_NESTING` levels (objects and arrays alike), checked without recursion,
  so a 600-deep document gives an answer rather than a `RecursionError`;
- a key given twice in one object (JSON and MessagePack decoders silently keep the last one);
- integers outside the signed 64-bit range, and NaN / ±Infinity (JSON has no such literals;
  MessagePack floats can carry them). orjson turns an integer literal beyond 2**64 into a
  float: that rounding is caught too, never stored;
- MessagePack types JSON has no word for (bin, ext, timestamps) and non-string keys;
- invalid UTF-8 anywhere (orjson and msgpack refuse it; the `clientToken` is still recovered).

The `clientToken` of a request refused here is kept on the error (`CodecError.token`) whenever
the payload could be read far enough to find it, so the answer still reaches its caller.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

import msgpack
import orjson

from daemons.protocol.errors import Rejected

Encoding = Literal["json", "msgpack"]

_JSON_FIRST = frozenset(b"{ \t\r\n")
_MSGPACK_MAP_FIRST = frozenset(range(0x80, 0x90)) | {0xDE, 0xDF}

MAX_NESTING = 32  # objects and arrays; the domain rules (e.g. shadow depth 6) are tighter
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
TOKEN_MAX = 64
# A JSON string (the payload is already known to be valid JSON when this runs).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
# An integer literal of 19 digits or more (the only ones that may leave int64), not part of a
# fraction or an exponent.
_JSON_INT = re.compile(rb"(?<![\d.eE+\-])-?\d{19,}(?![\d.eE])")


class CodecError(Rejected):
    """The payload cannot be decoded or kept exactly; `code` is the §0 error code to answer with.

    `token` is the request's `clientToken` when it could still be read, else None.
    """

    def __init__(self, code: int, message: str, token: str | None = None) -> None:
        super().__init__(code, message)
        self.token = token


def detect(payload: bytes) -> Encoding | None:
    if not payload:
        return None
    first = payload[0]
    if first in _JSON_FIRST:
        return "json"
    if first in _MSGPACK_MAP_FIRST:
        return "msgpack"
    return None


def _token(value: Any) -> str | None:
    if isinstance(value, dict):
        token = value.get("clientToken")
        if isinstance(token, str) and len(token) <= TOKEN_MAX:
            return token
    return None


class _Duplicate(ValueError):
    pass


def _unique_pairs(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _Duplicate("a key appears twice in one map")
    return out


SALVAGE_MAX = 1024 * 1024  # larger payloads are answered without their token


def salvage_token(payload: bytes) -> str | None:
    """Best effort: the clientToken of a payload refused before decoding (e.g. too large, 413)."""
    encoding = detect(payload)
    if encoding is None or len(payload) > SALVAGE_MAX:
        return None
    return _salvage_token(payload, encoding)


def _salvage_token(payload: bytes, encoding: Encoding) -> str | None:
    """Best effort: the clientToken of a payload refused for what is elsewhere in it."""
    try:
        if encoding == "json":
            value = json.loads(payload.decode("utf-8", errors="surrogateescape"))
        else:
            value = msgpack.unpackb(payload, raw=False, unicode_errors="surrogateescape")
    except (ValueError, RecursionError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        return None
    token = _token(value)
    return token if token is not None and token.isprintable() else None


def check_value(value: Any, exact_numbers: bool = True) -> int:
    """Walk a decoded value iteratively; return how many object keys it holds.

    Raises CodecError(400) for nesting beyond MAX_NESTING, non-string keys, values JSON cannot
    carry and, when `exact_numbers`, integers outside int64 and non-finite floats.
    """
    keys = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
            keys += len(item)
            for key in item:
                if type(key) is not str:
                    raise CodecError(400, "object keys must be strings")
        elif isinstance(item, list):
            children = item
        else:
            continue
        if level > MAX_NESTING:
            raise CodecError(400, f"nested deeper than {MAX_NESTING} levels")
        for child in children:
            t = type(child)
            if t is dict or t is list:
                stack.append((child, level + 1))
            elif t is int:
                if exact_numbers and not INT64_MIN <= child <= INT64_MAX:
                    raise CodecError(400, "integer outside the signed 64-bit range")
            elif t is float:
                if exact_numbers and (child != child or child in (float("inf"), float("-inf"))):
                    raise CodecError(400, "NaN and Infinity are not numbers a document can hold")
            elif child is not None and t is not str and t is not bool:
                raise CodecError(400, f"unsupported value type {t.__name__}")
    return keys


def _json_checks(payload: bytes, keys: int, exact_numbers: bool) -> None:
    """What orjson accepts silently: duplicate keys (last wins) and integers past 2**64 (rounded)."""
    bare = _JSON_STRING.sub(b"", payload)
    # In valid JSON a colon outside strings separates one key from its value.
    if bare.count(b":") != keys:
        raise CodecError(400, "a key appears twice in one object")
    if exact_numbers:
        for match in _JSON_INT.finditer(bare):
            if not INT64_MIN <= int(match.group()) <= INT64_MAX:
                raise CodecError(400, "integer outside the signed 64-bit range")


def decode(payload: bytes, empty_as: dict[str, Any] | None = None,
           exact_numbers: bool = True) -> tuple[dict[str, Any], Encoding]:
    """Decode a payload that must be a JSON object or a MessagePack map.

    `empty_as`: the value of an empty payload (None: an empty payload is refused).
    `exact_numbers=False` lets out-of-range integers and non-finite floats through, for callers
    that judge numbers field by field (healthwatch, PROTOCOL §2).
    Raises CodecError: 400 malformed or refused (see the module docstring), 415 other encodings.
    """
    if not payload:
        if empty_as is not None:
            return dict(empty_as), "json"
        raise CodecError(400, "empty payload")
    encoding = detect(payload)
    if encoding is None:
        raise CodecError(415, "unsupported encoding: expected a JSON object or a MessagePack map")
    try:
        if encoding == "json":
            value = orjson.loads(payload)
        else:
            value = msgpack.unpackb(payload, raw=False, strict_map_key=True,
                                    object_pairs_hook=_unique_pairs)
    except _Duplicate as exc:
        raise CodecError(400, f"malformed {encoding}: {exc}",
                         _salvage_token(payload, encoding)) from None
    except UnicodeDecodeError:
        raise CodecError(400, f"malformed {encoding}: invalid UTF-8",
                         _salvage_token(payload, encoding)) from None
    except (msgpack.StackError, RecursionError):
        raise CodecError(400, f"malformed {encoding}: nested too deeply") from None
    except (ValueError, msgpack.ExtraData, msgpack.FormatError) as exc:
        message = str(exc)
        if "depth limit" in message:  # orjson's own limit (1024 levels)
            raise CodecError(400, f"malformed {encoding}: nested too deeply") from None
        if "UTF-8" in message:
            raise CodecError(400, f"malformed {encoding}: invalid UTF-8",
                             _salvage_token(payload, encoding)) from None
        # E.g. a number orjson reads as infinity: the rest may still name the caller.
        raise CodecError(400, f"malformed {encoding}: {message[:200]}",
                         _salvage_token(payload, encoding)) from None
    if not isinstance(value, dict):
        raise CodecError(400, f"payload must be an object, got {type(value).__name__}")
    try:
        keys = check_value(value, exact_numbers)
        if encoding == "json":
            _json_checks(payload, keys, exact_numbers)
    except CodecError as exc:
        exc.token = _token(value)
        raise
    return value, encoding


def encode(value: Any, encoding: Encoding = "json") -> bytes:
    if encoding == "msgpack":
        packed: bytes = msgpack.packb(value, use_bin_type=True)
        return packed
    return orjson.dumps(value)


def json_size(value: Any) -> int:
    """Size in bytes of the compact JSON encoding (the unit of the shadow size limit)."""
    return len(orjson.dumps(value))
