"""Heartbeat validation field by field (PROTOCOL §2).

A field with a wrong type or an impossible value is dropped on its own; the rest of the heartbeat is
still scored. Unknown fields are kept as they are.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

STRING_MAX = 64


def _int(lo: float, hi: float) -> Callable[[Any], bool]:
    def check(v: Any) -> bool:
        return type(v) is int and lo <= v <= hi
    return check


def _num(lo: float, hi: float) -> Callable[[Any], bool]:
    def check(v: Any) -> bool:
        t = type(v)
        return (t is int or (t is float and math.isfinite(v))) and lo <= v <= hi
    return check


def _str(v: Any) -> bool:
    return type(v) is str and 0 < len(v) <= STRING_MAX


def _slot(v: Any) -> bool:
    return _str(v) or (type(v) is int and 0 <= v <= 16)


# The known fields and what makes a value acceptable. Ranges are physical limits, not alarms.
FIELDS: dict[str, Callable[[Any], bool]] = {
    "ts": _int(1, 2**40),  # epoch seconds; milliseconds would be > 2**40
    "seq": _int(0, 2**63 - 1),
    "uptime_s": _num(0, 2**40),
    "fw": _str,
    "slot": _slot,
    "hw": _str,
    "battery_mv": _num(0, 20_000),
    "battery_pct": _num(0, 100),
    "rssi_dbm": _num(-150, 20),
    "temp_c": _num(-80, 200),
    "heap_free": _int(0, 2**40),
    "heap_min_free": _int(0, 2**40),
    "reset_reason": _str,
}


def validate(body: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Return (the heartbeat without its bad fields, the names of the dropped fields)."""
    clean: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in body.items():
        check = FIELDS.get(key)
        if check is None:
            if type(key) is str:
                clean[key] = value  # unknown: kept, not scored
            continue
        if check(value):
            clean[key] = value
        else:
            dropped.append(key)
    return clean, dropped
