"""Payload codecs: JSON or MessagePack, detected from the first byte (PROTOCOL §0)."""

from __future__ import annotations

from typing import Any, Literal

import msgpack
import orjson

from daemons.protocol.errors import Rejected

Encoding = Literal["json", "msgpack"]

_JSON_FIRST = frozenset(b"{ \t\r\n")
_MSGPACK_MAP_FIRST = frozenset(range(0x80, 0x90)) | {0xDE, 0xDF}


class CodecError(Rejected):
    """The payload cannot be decoded; `code` is the §0 error code to answer with."""


def detect(payload: bytes) -> Encoding | None:
    if not payload:
        return None
    first = payload[0]
    if first in _JSON_FIRST:
        return "json"
    if first in _MSGPACK_MAP_FIRST:
        return "msgpack"
    return None


def decode(payload: bytes, empty_as: dict[str, Any] | None = None) -> tuple[dict[str, Any], Encoding]:
    """Decode a payload that must be a JSON object or a MessagePack map."""
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
            value = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, RecursionError) as exc:
        raise CodecError(400, f"malformed {encoding}: {exc}") from None
    if not isinstance(value, dict):
        raise CodecError(400, f"payload must be an object, got {type(value).__name__}")
    return value, encoding


def encode(value: Any, encoding: Encoding = "json") -> bytes:
    if encoding == "msgpack":
        packed: bytes = msgpack.packb(value, use_bin_type=True)
        return packed
    return orjson.dumps(value)


def json_size(value: Any) -> int:
    """Size in bytes of the compact JSON encoding (the unit of the shadow size limit)."""
    return len(orjson.dumps(value))
